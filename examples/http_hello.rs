//! An HTTP/1.1 "plaintext" server: every request gets `Hello, World!`, with keep-alive and
//! pipelining (answers in order), partial reads and partial writes handled.
//!
//! ```text
//! cargo run --release --example http_hello -- 127.0.0.1:8080 [--tasks]
//! ```
//!
//! Prints `listening on ADDR` once it accepts connections (port 0 picks a free port).
//! By default it runs on reactor handlers, the fastest path: one level-triggered handler per
//! connection. `--tasks` runs the same server as async tasks: an `Async<TcpListener>` accept
//! loop spawning one task per connection. The HTTP side (`examples/common/http.rs`) is the
//! one `examples/http_mio.rs` uses too, lingering close included. `benches/http.sh` compares
//! the three.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use ioloop::{Async, Interest, IoLoop, TimeoutId};

#[path = "common/http.rs"]
mod http;
use http::Http;

fn main() -> io::Result<()> {
    let (addr, tasks) = http::args("http_hello", "--tasks")?;
    let lp = IoLoop::new()?;
    if tasks {
        lp.block_on(accept_tasks(addr))?
    } else {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        println!("listening on {}", listener.local_addr()?);
        lp.add_handler(
            listener.as_raw_fd(),
            Interest::READABLE,
            move |lp, _fd, _ready| accept_handlers(lp, &listener),
        )?;
        lp.run()
    }
}

// ---- Handlers -------------------------------------------------------------------------------

fn accept_handlers(lp: &IoLoop, listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = add_conn(lp, stream) {
                    eprintln!("connection setup: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of fds (EMFILE) and the like: the listener stays readable, so the
            // level-triggered handler would be called again at once, spinning and printing
            // the error without end. Report it, stop watching the listener for 100 ms (as
            // the tasks' accept loop sleeps), then watch it again.
            Err(e) => {
                eprintln!("accept: {e}");
                let fd = listener.as_raw_fd();
                if lp.update_handler(fd, Interest::empty()).is_ok() {
                    lp.call_later(Duration::from_millis(100), move |lp| {
                        if let Err(e) = lp.update_handler(fd, Interest::READABLE) {
                            eprintln!("listener: {e}");
                        }
                    });
                }
                return;
            }
        }
    }
}

/// One connection, owned by its handler.
struct Conn {
    stream: TcpStream,
    http: Http,
    /// Registered for WRITABLE (a write would block) instead of READABLE.
    writing: bool,
    /// In a lingering close: the timer that ends it.
    linger_timer: Option<TimeoutId>,
}

fn add_conn(lp: &IoLoop, stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    let mut conn = Conn {
        stream,
        http: Http::new(),
        writing: false,
        linger_timer: None,
    };
    lp.add_handler(
        conn.stream.as_raw_fd(),
        Interest::READABLE,
        move |lp, fd, _ready| {
            if !conn.on_ready(lp, fd) {
                if let Some(timer) = conn.linger_timer {
                    lp.remove_timeout(timer);
                }
                // Removing drops this closure (and closes the stream) once it returns.
                let _ = lp.remove_handler(fd);
            }
        },
    )
}

impl Conn {
    /// Writes pending answers, reads, answers, for as long as the socket allows. Returns
    /// false when the connection is done (finished, failed or closed by the peer). Errors and
    /// hang-ups need no case of their own: the next read or write reports them.
    fn on_ready(&mut self, lp: &IoLoop, fd: RawFd) -> bool {
        let mut may_read = true;
        loop {
            while !self.http.output().is_empty() {
                match self.stream.write(self.http.output()) {
                    Ok(0) => return false,
                    Ok(n) => self.http.wrote(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Stop reading until the answers are out (back-pressure).
                        if !self.writing {
                            self.writing = true;
                            return lp.update_handler(fd, Interest::WRITABLE).is_ok();
                        }
                        return true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            if self.http.done() {
                return self.linger(lp, fd);
            }
            if self.writing {
                self.writing = false;
                if lp.update_handler(fd, Interest::READABLE).is_err() {
                    return false;
                }
            }
            if !may_read {
                return true;
            }
            let buf = self.http.read_buf();
            let room = buf.len();
            match self.stream.read(buf) {
                Ok(0) => self.http.eof(),
                Ok(n) => {
                    self.http.filled(n);
                    // A short read drained the socket: once the answers are written, wait
                    // for the next (level-triggered) report instead of reading WouldBlock.
                    may_read = n == room;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// The lingering close (see `examples/common/http.rs`): once the answers are out, send
    /// the FIN, then discard what the peer still sends until it closes, so that closing
    /// never resets the connection under the client's last response. Returns false when it
    /// is time to close.
    fn linger(&mut self, lp: &IoLoop, fd: RawFd) -> bool {
        if !self.http.lingering() {
            if !self.http.begin_linger() || self.stream.shutdown(Shutdown::Write).is_err() {
                return false;
            }
            // Closes by removing the handler (which owns the connection). Closing earlier
            // cancels this timer, so the fd it removes is never another connection's.
            self.linger_timer = Some(lp.call_later(http::LINGER_TIME, move |lp| {
                let _ = lp.remove_handler(fd);
            }));
            if self.writing {
                self.writing = false;
                if lp.update_handler(fd, Interest::READABLE).is_err() {
                    return false;
                }
            }
        }
        matches!(self.http.linger(&self.stream), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

// ---- Tasks ----------------------------------------------------------------------------------

async fn accept_tasks(addr: SocketAddr) -> io::Result<()> {
    let listener = Async::<TcpListener>::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                ioloop::spawn(async move {
                    // A failed connection concerns only its client.
                    let _ = stream.get_ref().set_nodelay(true);
                    let _ = serve_task(stream).await;
                })
                .detach();
            }
            Err(e) => {
                // EMFILE and the like: report, back off, keep serving.
                eprintln!("accept: {e}");
                ioloop::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Through futures-io: a short read shows the socket drained (see [`Async`]), so the next
/// read waits for new data instead of reading just to hear `WouldBlock`.
async fn serve_task(stream: Async<TcpStream>) -> io::Result<()> {
    let mut http = Http::new();
    loop {
        while !http.output().is_empty() {
            match (&stream).write(http.output()).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => http.wrote(n),
            }
        }
        if http.done() {
            return linger_task(&stream, &mut http).await;
        }
        match (&stream).read(http.read_buf()).await? {
            0 => http.eof(),
            n => http.filled(n),
        }
    }
}

/// The lingering close, as in [`Conn::linger`]: FIN, then discard until the peer closes, for
/// at most `LINGER_TIME`.
async fn linger_task(stream: &Async<TcpStream>, http: &mut Http) -> io::Result<()> {
    if http.begin_linger() {
        stream.get_ref().shutdown(Shutdown::Write)?;
        // Timing out is closing too.
        let _ = ioloop::timeout(http::LINGER_TIME, stream.read_with(|s| http.linger(s))).await;
    }
    Ok(())
}
