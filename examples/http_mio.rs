//! The reference for `http_hello`: the same HTTP "plaintext" server written directly on
//! mio 1.x, the way mio is meant to be used — edge-triggered registrations for reading and
//! writing, every operation repeated until `WouldBlock`, one `Token` per connection indexing
//! a slab of connections.
//!
//! ```text
//! cargo run --release --example http_mio -- 127.0.0.1:8080
//! ```
//!
//! Prints `listening on ADDR` once it accepts connections (port 0 picks a free port).
//! `--short-read` applies tokio's shortcut to the drain rule: a read that does not fill the
//! buffer shows the socket is empty (on epoll and kqueue), so wait for the next event instead of
//! reading again for the `WouldBlock`. The HTTP side (`examples/common/http.rs`), lingering
//! close included, is shared with `http_hello`, so `benches/http.sh` compares event loops only.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

#[path = "common/http.rs"]
mod http;
use http::Http;

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    http: Http,
    /// In a lingering close: when it ends.
    linger_deadline: Option<Instant>,
}

/// The connections in a lingering close, by token, with their deadlines. They all linger for
/// the same `LINGER_TIME`, so this FIFO is in deadline order: a timer queue needs no more.
/// An entry whose connection closed earlier stays until its deadline, and is then skipped.
type Lingering = VecDeque<(Instant, usize)>;

impl Conn {
    /// Does all the work readiness allows. mio's registrations are edge-triggered: return
    /// only once a read or write has said `WouldBlock` (so another event will come), or
    /// false when the connection is done. `lingering` and `token` are for the lingering close.
    fn drive(&mut self, short_read: bool, lingering: &mut Lingering, token: usize) -> bool {
        let mut may_read = true;
        loop {
            while !self.http.output().is_empty() {
                match self.stream.write(self.http.output()) {
                    Ok(0) => return false,
                    Ok(n) => self.http.wrote(n),
                    // Stop reading until the answers are out (back-pressure); the writable
                    // event resumes us.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            if self.http.done() {
                return self.linger(lingering, token);
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
                    may_read = !short_read || n == room;
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
    fn linger(&mut self, lingering: &mut Lingering, token: usize) -> bool {
        if !self.http.lingering() {
            if !self.http.begin_linger() || self.stream.shutdown(Shutdown::Write).is_err() {
                return false;
            }
            let deadline = Instant::now() + http::LINGER_TIME;
            self.linger_deadline = Some(deadline);
            lingering.push_back((deadline, token));
        }
        matches!(self.http.linger(&self.stream), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Connections indexed by token; freed slots are reused (a minimal slab).
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Slab {
    fn insert(&mut self, conn: Conn) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(conn);
                i
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        Some(conn)
    }
}

fn main() -> io::Result<()> {
    let (addr, short_read) = http::args("http_mio", "--short-read")?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    let mut conns = Slab::default();
    let mut lingering = Lingering::new();
    loop {
        // Wake up for the first lingering close to end, if any (mio rounds up to the ms).
        let timeout = lingering
            .front()
            .map(|&(deadline, _)| deadline.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&poll, &listener, &mut conns);
                continue;
            }
            let i = event.token().0;
            let Some(conn) = conns.slots.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            // As tokio does: a peer's FIN that came with the data gets no later event, so
            // once the event says the read side closed, read on to the 0.
            if !conn.drive(short_read && !event.is_read_closed(), &mut lingering, i) {
                close(&poll, &mut conns, i);
            }
        }
        if !lingering.is_empty() {
            let now = Instant::now();
            while let Some(&(deadline, i)) = lingering.front() {
                if deadline > now {
                    break;
                }
                lingering.pop_front();
                // Unless the slot closed since (and maybe holds a newer connection).
                let conn = conns.slots[i].as_ref();
                if conn.is_some_and(|c| c.linger_deadline == Some(deadline)) {
                    close(&poll, &mut conns, i);
                }
            }
        }
    }
}

fn close(poll: &Poll, conns: &mut Slab, i: usize) {
    if let Some(mut conn) = conns.remove(i) {
        let _ = poll.registry().deregister(&mut conn.stream);
    }
}

fn accept_all(poll: &Poll, listener: &TcpListener, conns: &mut Slab) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    eprintln!("connection setup: {e}");
                    continue;
                }
                let i = conns.insert(Conn {
                    stream,
                    http: Http::new(),
                    linger_deadline: None,
                });
                let conn = conns.slots[i].as_mut().expect("just inserted");
                // Data that arrived before registering is reported by the first poll.
                if let Err(e) = poll.registry().register(
                    &mut conn.stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    eprintln!("register: {e}");
                    conns.remove(i);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Edge-triggered: stopping before WouldBlock would lose the listener's events,
            // but out of fds there is nothing better to do than to report and go on.
            Err(e) => {
                eprintln!("accept: {e}");
                return;
            }
        }
    }
}
