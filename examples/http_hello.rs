//! An HTTP/1.1 "plaintext" server: every request gets `Hello, World!`, with keep-alive and
//! pipelining (answers in order), partial reads and partial writes handled.
//!
//! `cargo run --release --example http_hello -- 127.0.0.1:8080` prints `listening on ADDR`
//! once it accepts connections. This is the reactor's handler version, the fastest path.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use ioloop::{Interest, IoLoop, Ready};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ioloop\r\nContent-Type: text/plain\r\n\
Content-Length: 13\r\n\r\nHello, World!";

/// Largest request head we accept before answering 431 and closing.
const MAX_HEAD: usize = 16 * 1024;

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .filter(|a| a != "--tasks")
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad ADDR: {e}")))?;
    let lp = IoLoop::new()?;
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    println!("listening on {}", listener.local_addr()?);
    let listen_fd = listener.as_raw_fd();
    lp.add_handler(listen_fd, Interest::READABLE, move |lp, _fd, _ready| {
        accept_all(lp, &listener)
    })?;
    lp.run()
}

fn accept_all(lp: &IoLoop, listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = serve(lp, stream) {
                    eprintln!("connection setup: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of fds or a connection reset before accept: keep serving the others.
            Err(e) => {
                eprintln!("accept: {e}");
                return;
            }
        }
    }
}

/// One connection's state, owned by its handler.
struct Conn {
    stream: TcpStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// How much of `outbuf` has been written.
    sent: usize,
    /// Close once `outbuf` is flushed (`Connection: close`, HTTP/1.0, or a bad request).
    close_after: bool,
    writing: bool,
}

fn serve(lp: &IoLoop, stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    let mut conn = Conn {
        stream,
        inbuf: Vec::with_capacity(4096),
        outbuf: Vec::with_capacity(4096),
        sent: 0,
        close_after: false,
        writing: false,
    };
    let fd = conn.stream.as_raw_fd();
    lp.add_handler(fd, Interest::READABLE, move |lp, fd, ready| {
        if !conn.on_ready(lp, fd, ready) {
            // Removing drops this closure (and closes the stream) once it returns.
            let _ = lp.remove_handler(fd);
        }
    })
}

impl Conn {
    /// Returns false when the connection is done.
    fn on_ready(&mut self, lp: &IoLoop, fd: RawFd, ready: Ready) -> bool {
        if ready.contains(Ready::READABLE) || ready.contains(Ready::HUP) {
            match self.read_requests() {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    // Peer closed or failed: flush what we owe if we can, then go.
                    let _ = self.flush();
                    return false;
                }
            }
        }
        match self.flush() {
            Ok(true) => {
                if self.close_after {
                    return false;
                }
                if self.writing {
                    self.writing = false;
                    return lp.update_handler(fd, Interest::READABLE).is_ok();
                }
                true
            }
            Ok(false) => {
                if !self.writing {
                    self.writing = true;
                    return lp
                        .update_handler(fd, Interest::READABLE | Interest::WRITABLE)
                        .is_ok();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Reads what is there and queues a response per complete request. `Ok(false)` on EOF.
    fn read_requests(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.parse();
                    if n < chunk.len() {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Answers every complete request in `inbuf`, in order.
    fn parse(&mut self) {
        let mut start = 0;
        while !self.close_after {
            let Some(end) = find_head_end(&self.inbuf[start..]) else {
                if self.inbuf.len() - start > MAX_HEAD {
                    self.outbuf.extend_from_slice(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    self.close_after = true;
                }
                break;
            };
            let head = &self.inbuf[start..start + end];
            let body = content_length(head);
            if self.inbuf.len() < start + end + body {
                break; // the body is not all here yet
            }
            if wants_close(head) {
                self.close_after = true;
            }
            self.outbuf.extend_from_slice(RESPONSE);
            start += end + body;
        }
        self.inbuf.drain(..start);
    }

    /// Writes as much of `outbuf` as the socket takes. `Ok(true)` when all is written.
    fn flush(&mut self) -> io::Result<bool> {
        while self.sent < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.outbuf.clear();
        self.sent = 0;
        Ok(true)
    }
}

/// Length of the request head including the blank line, if it is complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn header_value<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|b| *b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| trim(&line[colon + 1..]))
    })
}

fn content_length(head: &[u8]) -> usize {
    header_value(head, "content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

fn wants_close(head: &[u8]) -> bool {
    let http10 = head
        .split(|b| *b == b'\n')
        .next()
        .is_some_and(|l| trim(l).ends_with(b"HTTP/1.0"));
    match header_value(head, "connection") {
        Some(v) if v.eq_ignore_ascii_case(b"close") => true,
        Some(v) if v.eq_ignore_ascii_case(b"keep-alive") => false,
        _ => http10,
    }
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
