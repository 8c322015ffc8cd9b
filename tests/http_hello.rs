//! The example servers, driven over loopback as a client would: the HTTP "hello" servers,
//! `examples/http_hello.rs` in both its modes (reactor handlers, `--tasks`) and the mio
//! reference `examples/http_mio.rs` (both its modes), which `benches/http.sh` compares them
//! with; and the echo server, `examples/echo.rs`.
//!
//! Each test starts its own server process on 127.0.0.1:0, learns the port from the
//! `listening on ADDR` line (no sleeping until it is up) and kills it when done. The first
//! test builds the examples if needed (`util::examples_dir`).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ioloop\r\nContent-Type: text/plain\r\n\
Content-Length: 13\r\n\r\nHello, World!";
const RESPONSE_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ioloop\r\nContent-Type: text/plain\r\n\
Content-Length: 13\r\nConnection: close\r\n\r\nHello, World!";

/// A failing server makes a test fail, not hang.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server process, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    name: String,
}

impl Server {
    fn start(example: &str, args: &[&str]) -> Self {
        let mut child = Command::new(util::examples_dir().join(example))
            .arg("127.0.0.1:0")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {example}: {e}"));
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let mut server = Server {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            name: format!("{example} {}", args.join(" ")),
        };
        // Parsed after the guard exists, so a bad line still kills the process.
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{}: unexpected first line {line:?}", server.name))
            .parse()
            .unwrap();
        server
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads exactly `expected.len()` bytes and checks they are `expected`.
#[track_caller]
fn expect(s: &mut TcpStream, expected: &[u8], what: &str) {
    let mut got = vec![0; expected.len()];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{what}: reading {} bytes: {e}", expected.len()));
    assert!(
        got == expected,
        "{what}: got {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// Reads until the server closes and checks that is `expected`.
#[track_caller]
fn expect_then_eof(s: &mut TcpStream, expected: &[u8], what: &str) {
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("{what}: reading to EOF: {e}"));
    assert!(
        got == expected,
        "{what}: got {:?}",
        String::from_utf8_lossy(&got)
    );
}

fn single_request(server: &Server) {
    let mut s = server.connect();
    s.write_all(REQUEST).unwrap();
    expect(&mut s, RESPONSE, &server.name);
    // Keep-alive: the same connection answers again.
    s.write_all(REQUEST).unwrap();
    expect(&mut s, RESPONSE, &server.name);
}

fn pipelined_in_one_write(server: &Server) {
    let mut s = server.connect();
    s.write_all(&REQUEST.repeat(100)).unwrap();
    expect(&mut s, &RESPONSE.repeat(100), &server.name);
}

fn split_byte_by_byte(server: &Server) {
    let mut s = server.connect();
    // Two requests, so the second one also starts from a partial read.
    for b in REQUEST.repeat(2) {
        s.write_all(&[b]).unwrap();
    }
    expect(&mut s, &RESPONSE.repeat(2), &server.name);
}

fn body_is_skipped(server: &Server) {
    let mut s = server.connect();
    let post = b"POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello\r\n\r\n!!";
    // The body (which looks like a head end) arrives in pieces, between two GETs.
    s.write_all(REQUEST).unwrap();
    s.write_all(&post[..45]).unwrap();
    expect(&mut s, RESPONSE, &server.name);
    s.write_all(&post[45..]).unwrap();
    s.write_all(REQUEST).unwrap();
    expect(&mut s, &RESPONSE.repeat(2), &server.name);
}

fn concurrent_clients(server: &Server) {
    let addr = server.addr;
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let mut s = server.connect();
            let name = server.name.clone();
            thread::spawn(move || {
                for i in 0..20 {
                    s.write_all(REQUEST).unwrap();
                    expect(&mut s, RESPONSE, &format!("{name} {addr} request {i}"));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

fn connection_close_closes(server: &Server) {
    // Requests pipelined after the closing one are not answered.
    let mut s = server.connect();
    s.write_all(REQUEST).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    s.write_all(REQUEST).unwrap();
    expect_then_eof(&mut s, &[RESPONSE, RESPONSE_CLOSE].concat(), &server.name);

    let mut s = server.connect();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    expect_then_eof(&mut s, RESPONSE_CLOSE, &format!("{} HTTP/1.0", server.name));

    let mut s = server.connect();
    s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    expect(
        &mut s,
        RESPONSE,
        &format!("{} HTTP/1.0 keep-alive", server.name),
    );
}

/// The servers close lingering: the FIN follows the last response and what the client
/// pipelined after the closing request is read and discarded, so closing does not reset the
/// connection (a reset can make the client's read fail before it got the responses).
fn close_discards_pipelined_tail(server: &Server) {
    // 24 KiB of requests after the closing one, and as much after the FIN: more than one
    // read of the server's (16 KiB), less in all than it discards before closing anyway
    // (64 KiB).
    let tail = REQUEST.repeat(24 * 1024 / REQUEST.len());
    for (close, what) in [
        (
            &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            "Connection: close",
        ),
        (b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0"),
    ] {
        let mut s = server.connect();
        // One write: the whole tail is in the server's receive buffer when it answers.
        s.write_all(&[REQUEST, close, &tail].concat()).unwrap();
        let what = format!("{} {what}", server.name);
        expect_then_eof(&mut s, &[RESPONSE, RESPONSE_CLOSE].concat(), &what);
        // And more after the FIN: discarded too, no reset.
        s.write_all(&tail).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let n = s
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{what}: after the FIN: {e}"));
        assert_eq!(n, 0, "{what}: data after the FIN");
    }
}

/// The lingering close is bounded: a client that sends without end after the closing
/// request gets the connection closed (a reset), instead of being read forever.
fn lingering_is_bounded(server: &Server) {
    let mut s = server.connect();
    s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    expect(&mut s, RESPONSE_CLOSE, &server.name);
    let chunk = REQUEST.repeat(64 * 1024 / REQUEST.len());
    // Far more than the 64 KiB the server discards, and than socket buffers hold (a few MB).
    let mut sent = 0;
    let err = loop {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
        assert!(
            sent < 256 << 20,
            "{}: still reading after {sent} bytes",
            server.name
        );
    };
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{}: after {sent} bytes: {err}",
        server.name
    );
}

fn peer_eof_after_requests(server: &Server) {
    // A client that sends its requests and shuts down its side still gets every answer.
    let mut s = server.connect();
    s.write_all(&REQUEST.repeat(3)).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_then_eof(&mut s, &RESPONSE.repeat(3), &server.name);
}

fn oversized_head_is_refused(server: &Server) {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    head.extend_from_slice(&b"X-Filler: 0123456789012345678901234567890123456789\r\n".repeat(400));
    let complete = [&head[..], b"\r\n"].concat();
    // 21 KB, without its end and with it (a complete head past the limit is refused too,
    // however the reads split it): the server refuses past 16 KiB, and discards the rest as
    // it closes (lingering), so neither the write nor the read fails.
    for (head, what) in [(head, "incomplete"), (complete, "complete")] {
        let mut s = server.connect();
        s.write_all(&head).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .unwrap_or_else(|e| panic!("{} {what}: reading to EOF: {e}", server.name));
        assert!(
            got.starts_with(b"HTTP/1.1 431 "),
            "{} {what}: got {:?}",
            server.name,
            String::from_utf8_lossy(&got)
        );
    }
}

/// A client with a small receive buffer that reads slowly: the server's writes are partial
/// and it has to stop reading (back-pressure), yet every response arrives, in order.
///
/// 100 000 requests (4.9 MB), because 9.4 MB of responses overflow the server's send buffer
/// (Linux grows it up to `tcp_wmem`'s 4 MB): with 10 000 every write was whole (strace).
fn slow_reader_gets_everything(server: &Server) {
    use nix::sys::socket::{connect, setsockopt, socket, sockopt, AddressFamily};
    use nix::sys::socket::{SockFlag, SockType, SockaddrIn};

    const N: usize = 100_000;
    let SocketAddr::V4(v4) = server.addr else {
        unreachable!("bound to 127.0.0.1")
    };
    // No flags: SOCK_CLOEXEC does not exist on macOS, and this test spawns no process.
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    // Before connect, so the window the server sees is small from the start.
    setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).unwrap();
    let mut reader = TcpStream::from(fd);
    reader.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut writer = reader.try_clone().unwrap();
    writer.set_write_timeout(Some(IO_TIMEOUT)).unwrap();

    let (done_tx, done_rx) = mpsc::channel();
    let sender = thread::spawn(move || {
        // In chunks of 100 requests, as one big pipelined stream.
        let chunk = REQUEST.repeat(100);
        for _ in 0..N / 100 {
            writer.write_all(&chunk).unwrap();
        }
        done_tx.send(()).unwrap();
    });
    let mut got = Vec::with_capacity(N * RESPONSE.len());
    let mut buf = [0u8; 512];
    let mut reads = 0u32;
    while got.len() < N * RESPONSE.len() {
        let n = reader
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{}: after {} bytes: {e}", server.name, got.len()));
        assert!(n > 0, "{}: EOF after {} bytes", server.name, got.len());
        got.extend_from_slice(&buf[..n]);
        reads += 1;
        if reads % 64 == 0 {
            // Slow: let the server run into a full socket buffer.
            thread::sleep(Duration::from_millis(1));
        }
    }
    done_rx.recv().unwrap();
    sender.join().unwrap();
    assert!(
        got == RESPONSE.repeat(N),
        "{}: responses out of order",
        server.name
    );
}

macro_rules! server_tests {
    ($($name:ident),* $(,)?) => {
        mod handlers {
            $( #[test] fn $name() { super::$name(&super::Server::start("http_hello", &[])) } )*
        }
        mod tasks {
            $( #[test] fn $name() {
                super::$name(&super::Server::start("http_hello", &["--tasks"]))
            } )*
        }
        mod mio {
            $( #[test] fn $name() { super::$name(&super::Server::start("http_mio", &[])) } )*
        }
        mod mio_short_read {
            $( #[test] fn $name() {
                super::$name(&super::Server::start("http_mio", &["--short-read"]))
            } )*
        }
    };
}

server_tests!(
    single_request,
    pipelined_in_one_write,
    split_byte_by_byte,
    body_is_skipped,
    concurrent_clients,
    connection_close_closes,
    close_discards_pipelined_tail,
    lingering_is_bounded,
    peer_eof_after_requests,
    oversized_head_is_refused,
    slow_reader_gets_everything,
);

#[test]
fn addr_after_tasks_flag() {
    let mut child = Command::new(util::examples_dir().join("http_hello"))
        .args(["--tasks", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on 127.0.0.1:"), "{line:?}");
}

/// `examples/echo.rs`: several clients at once, each sending 1 MiB (more than the socket
/// buffers hold, so the server's writes wait for the client to read) and reading back the
/// same bytes; a client's half-close ends its connection (the server closes too), and the
/// others go on.
#[test]
fn echo_server_echoes() {
    const CLIENTS: usize = 4;
    const LEN: usize = 1 << 20;
    let server = Server::start("echo", &[]);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut s = server.connect();
            thread::spawn(move || {
                let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + c) as u8).collect();
                let mut writer = s.try_clone().unwrap();
                let sent = data.clone();
                let sender = thread::spawn(move || {
                    writer.write_all(&sent).unwrap();
                    writer.shutdown(std::net::Shutdown::Write).unwrap();
                });
                let mut back = Vec::with_capacity(LEN);
                s.read_to_end(&mut back)
                    .unwrap_or_else(|e| panic!("client {c}: after {} bytes: {e}", back.len()));
                sender.join().unwrap();
                assert!(
                    back == data,
                    "client {c}: {} bytes back, not the same",
                    back.len()
                );
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // The server is still there for the next client.
    let mut s = server.connect();
    s.write_all(b"still here").unwrap();
    expect(&mut s, b"still here", "echo after the others left");
}
