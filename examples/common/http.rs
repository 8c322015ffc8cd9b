//! The HTTP side of the "hello" servers, without readiness or event loop: bytes in,
//! responses out (only [`Http::linger`] reads, through any `Read`).
//!
//! Shared by `examples/http_hello.rs` (ioloop handlers and tasks) and `examples/http_mio.rs`
//! (the mio reference), so the benchmark compares event loops, not parsers or buffers.
//!
//! Every request gets `Hello, World!`. Pipelined requests are answered in order; a request
//! body (`Content-Length`) is read and discarded; HTTP/1.0 (unless `Connection: keep-alive`)
//! and `Connection: close` close once the response is sent. A head larger than
//! [`MAX_HEAD`], a bad `Content-Length` or a `Transfer-Encoding` get an error and a close.
//!
//! Closing is a *lingering close*, as nginx and Apache do it. Closing a socket whose receive
//! buffer holds unread bytes (requests pipelined after the closing one), or that receives
//! more afterwards, makes the kernel send a reset instead of a FIN, and the client's read can
//! then fail with `ECONNRESET`, possibly before it got the responses. So once the last
//! response is written the server shuts down its write side (the FIN follows the data), then
//! reads and discards until the peer closes, and only then closes: see [`Http::begin_linger`].
//! Bounded by [`LINGER_MAX`] bytes and [`LINGER_TIME`], after which the server closes anyway.
#![allow(dead_code)]

use std::io::{self, Read};
use std::time::Duration;

/// The response to every request on a connection that stays open.
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ioloop\r\nContent-Type: text/plain\r\n\
Content-Length: 13\r\n\r\nHello, World!";

/// The response to a request that closes the connection.
pub const RESPONSE_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: ioloop\r\nContent-Type: text/plain\r\n\
Content-Length: 13\r\nConnection: close\r\n\r\nHello, World!";

const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
Content-Length: 0\r\nConnection: close\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const NOT_IMPLEMENTED: &[u8] =
    b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Largest request head accepted before answering 431 and closing.
pub const MAX_HEAD: usize = 16 * 1024;

/// Most bytes a lingering close reads and discards before closing anyway.
pub const LINGER_MAX: usize = 64 * 1024;

/// Longest a lingering close waits for the peer to close before closing anyway. (nginx
/// waits up to 5 s for each read, `lingering_timeout`, and 30 s in all, `lingering_time`.)
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// Initial size of the read buffer (it grows to hold a head of up to [`MAX_HEAD`] bytes).
const READ_BUF: usize = 16 * 1024;

/// One connection's protocol state: the bytes read and not yet parsed, the responses not yet
/// written.
///
/// The I/O loop around it: write [`output`](Self::output) (then [`wrote`](Self::wrote));
/// once it is all written, stop if [`done`](Self::done), else read into
/// [`read_buf`](Self::read_buf) (then [`filled`](Self::filled), or [`eof`](Self::eof) on a
/// zero read). Reading only when the output is flushed is the back-pressure: a client that
/// pipelines without reading stops being read, instead of growing our buffers.
///
/// Once [`done`](Self::done), close through [`begin_linger`](Self::begin_linger).
pub struct Http {
    /// Read buffer; `inbuf[start..end]` is read and not yet parsed.
    inbuf: Vec<u8>,
    start: usize,
    end: usize,
    /// Body bytes of the current request still to be read and discarded.
    skip: usize,
    /// Whether the request whose body is being skipped closes the connection.
    skip_close: bool,
    /// Responses; `out[sent..]` is not yet written.
    out: Vec<u8>,
    sent: usize,
    /// No more requests will be answered: close once `out` is written.
    close_after: bool,
    /// The peer closed its side (a zero read).
    peer_closed: bool,
    /// In a lingering close, and how many bytes it has discarded.
    lingering: bool,
    discarded: usize,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A fresh connection.
    pub fn new() -> Self {
        Self {
            inbuf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            skip: 0,
            skip_close: false,
            out: Vec::with_capacity(4096),
            sent: 0,
            close_after: false,
            peer_closed: false,
            lingering: false,
            discarded: 0,
        }
    }

    /// Where the next read goes; never empty.
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.inbuf.len() {
            if self.start > 0 {
                self.inbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // A head longer than the buffer: bounded, parse answers 431 past MAX_HEAD.
                self.inbuf.resize(self.inbuf.len() * 2, 0);
            }
        }
        &mut self.inbuf[self.end..]
    }

    /// Records that a read put `n` bytes into [`read_buf`](Self::read_buf), and queues a
    /// response for every request now complete.
    pub fn filled(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.inbuf.len());
        self.parse();
    }

    /// Records end of file from the peer: answer what was complete, then close.
    pub fn eof(&mut self) {
        self.close_after = true;
        self.peer_closed = true;
    }

    /// Responses not yet written.
    pub fn output(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// Records that `n` bytes of [`output`](Self::output) were written.
    pub fn wrote(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
    }

    /// Whether the connection is finished: no more requests will be answered and every
    /// response is written. Then close, lingering ([`begin_linger`](Self::begin_linger)).
    pub fn done(&self) -> bool {
        self.close_after && self.out.is_empty()
    }

    /// Whether a lingering close has begun ([`begin_linger`](Self::begin_linger) said so).
    pub fn lingering(&self) -> bool {
        self.lingering
    }

    /// Called once [`done`](Self::done) (and not yet [`lingering`](Self::lingering)): whether
    /// to close by lingering. If so, the caller shuts down its write side, arms a
    /// [`LINGER_TIME`] timer that closes the connection, and calls [`linger`](Self::linger)
    /// whenever the socket is readable. If not (the peer closed first, so nothing of it is
    /// left unread), it closes at once.
    pub fn begin_linger(&mut self) -> bool {
        debug_assert!(self.done() && !self.lingering);
        self.lingering = !self.peer_closed;
        self.lingering
    }

    /// The reading half of a lingering close: reads and discards what the peer still sends,
    /// until it has closed (a zero read) or [`LINGER_MAX`] bytes have been discarded, which
    /// return `Ok`: close now. `WouldBlock`: wait until `stream` is readable and call again.
    /// Any other error: close now (the peer is gone).
    pub fn linger(&mut self, mut stream: impl Read) -> io::Result<()> {
        debug_assert!(self.lingering);
        loop {
            match stream.read(&mut self.inbuf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.discarded += n;
                    if self.discarded >= LINGER_MAX {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn respond(&mut self, close: bool) {
        if close {
            self.out.extend_from_slice(RESPONSE_CLOSE);
            self.close_after = true;
        } else {
            self.out.extend_from_slice(RESPONSE);
        }
    }

    fn fail(&mut self, response: &[u8]) {
        self.out.extend_from_slice(response);
        self.close_after = true;
    }

    /// Answers every complete request in `inbuf`, in order.
    fn parse(&mut self) {
        while !self.close_after {
            if self.skip > 0 {
                let k = self.skip.min(self.end - self.start);
                self.start += k;
                self.skip -= k;
                if self.skip > 0 {
                    break;
                }
                self.respond(self.skip_close);
                continue;
            }
            let buf = &self.inbuf[self.start..self.end];
            match parse_head(buf) {
                None if buf.len() > MAX_HEAD => self.fail(TOO_LARGE),
                None => break,
                Some(Err(response)) => self.fail(response),
                // The limit holds for a head that arrived whole too, not only for one still
                // incomplete: the same head must not get 200 or 431 depending on its reads.
                Some(Ok(head)) if head.len > MAX_HEAD => self.fail(TOO_LARGE),
                Some(Ok(head)) => {
                    self.start += head.len;
                    if head.body == 0 {
                        self.respond(head.close);
                    } else {
                        self.skip = head.body;
                        self.skip_close = head.close;
                    }
                }
            }
        }
        if self.close_after {
            // Nothing after the last answered request will be read.
            self.start = self.end;
        }
    }
}

/// What a complete request head says.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// Length of the head, blank line included.
    pub len: usize,
    /// `Content-Length` (0 if absent).
    pub body: usize,
    /// Whether the connection closes after the response.
    pub close: bool,
}

/// Parses the request head at the start of `buf` in one pass: `None` if it is not complete
/// yet, `Err(response)` for a request we refuse. Lines end in CRLF or a bare LF; empty lines
/// before the request line are skipped (RFC 9112, section 2.2).
pub fn parse_head(buf: &[u8]) -> Option<Result<Head, &'static [u8]>> {
    let mut pos = 0;
    let mut request_line = true;
    let mut http10 = false;
    let mut connection: Option<bool> = None;
    let mut body = 0;
    loop {
        let nl = buf[pos..].iter().position(|&b| b == b'\n')?;
        let line = &buf[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if request_line {
            if !line.is_empty() {
                request_line = false;
                http10 = line.ends_with(b"HTTP/1.0");
            }
            continue;
        }
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Some(Err(BAD_REQUEST));
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            match parse_usize(value) {
                Some(n) => body = n,
                None => return Some(Err(BAD_REQUEST)),
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    connection = Some(true);
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    connection = connection.or(Some(false));
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Some(Err(NOT_IMPLEMENTED));
        }
    }
    Some(Ok(Head {
        len: pos,
        body,
        close: connection.unwrap_or(http10),
    }))
}

fn parse_usize(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        } else {
            None
        }
    })
}

/// ASCII whitespace trimmed from both ends (`<[u8]>::trim_ascii` needs Rust 1.80).
fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}

/// The servers' command line: `[ADDR] [FLAG]` in either order. Returns the address
/// (default 127.0.0.1:8080) and whether `flag` was given.
pub fn args(program: &str, flag: &str) -> std::io::Result<(std::net::SocketAddr, bool)> {
    let usage = |msg: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{msg}\nusage: {program} [ADDR] [{flag}]"),
        )
    };
    let mut set = false;
    let mut addr = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            a if a == flag => set = true,
            a if a.starts_with('-') => return Err(usage(format!("unknown option {a}"))),
            a => addr = Some(a.parse().map_err(|e| usage(format!("bad ADDR {a}: {e}")))?),
        }
    }
    Ok((addr.unwrap_or_else(|| ([127, 0, 0, 1], 8080).into()), set))
}
