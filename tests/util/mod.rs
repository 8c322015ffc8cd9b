//! Helpers shared by the integration tests: the per-backend test macro and small utilities.
#![allow(dead_code, unused_macros, unused_imports)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// Runs each generic test `fn name<P: Poller>()` once per backend this OS has:
/// generates `mod epoll { #[test] fn name() }`, `mod poll { .. }`, and so on.
///
/// ```ignore
/// fn reads<P: Poller>() { let p = util::poller::<P>(); ... }
/// backend_tests!(reads, writes);
/// ```
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        #[cfg(ioloop_has_epoll)]
        mod epoll { $( #[test] fn $name() { super::$name::<::ioloop_sys::Epoll>() } )* }
        #[cfg(ioloop_has_kqueue)]
        mod kqueue { $( #[test] fn $name() { super::$name::<::ioloop_sys::Kqueue>() } )* }
        #[cfg(ioloop_has_uring)]
        mod uring { $( #[test] fn $name() { super::$name::<::ioloop_sys::Uring>() } )* }
        mod poll { $( #[test] fn $name() { super::$name::<::ioloop_sys::Poll>() } )* }
        mod select { $( #[test] fn $name() { super::$name::<::ioloop_sys::Select>() } )* }
    };
}
pub(crate) use backend_tests;

/// A new poller of type `P`, or a panic that names the backend.
#[track_caller]
pub fn poller<P: ioloop_sys::Poller>() -> P {
    match P::new() {
        Ok(p) => p,
        Err(e) => panic!("{}::new() failed: {e}", P::NAME),
    }
}

/// A connected, non-blocking Unix socket pair.
#[track_caller]
pub fn socketpair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// A connected, non-blocking TCP pair over loopback: (client, server side).
#[track_caller]
pub fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_nonblocking(true).unwrap();
    server.set_nonblocking(true).unwrap();
    (client, server)
}

/// How many fds this process has open (entries of /proc/self/fd, or /dev/fd).
pub fn open_fds() -> usize {
    let dir = if std::path::Path::new("/proc/self/fd").exists() {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (or `want`, whichever is lower); returns it.
pub fn raise_nofile(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let target = want.min(hard).max(soft);
    if target > soft {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard).unwrap();
    }
    target
}

// ===== Reactor test helpers (tests/reactor.rs, timers.rs, signals.rs, reactor_alloc.rs) =====

/// A new [`ioloop::IoLoop`] on backend `P`, or a panic that names the backend.
#[track_caller]
pub fn backend_loop<P: ioloop_sys::Poller>() -> ioloop::IoLoop<P> {
    match ioloop::IoLoop::<P>::with_backend() {
        Ok(lp) => lp,
        Err(e) => panic!("IoLoop::<{}>::with_backend() failed: {e}", P::NAME),
    }
}

/// Runs one iteration that does not block: a timer due now makes the wait's timeout zero.
/// Use it to check that *nothing* is delivered; use `run_once` when an event is expected.
#[track_caller]
pub fn turn<P: ioloop_sys::Poller>(lp: &ioloop::IoLoop<P>) {
    lp.call_later(std::time::Duration::ZERO, |_| {});
    lp.run_once().expect("run_once");
}

/// Writes all of `bytes` to a non-blocking stream (small writes to an empty socket buffer).
#[track_caller]
pub fn send(s: &UnixStream, bytes: &[u8]) {
    use std::io::Write;
    (&*s).write_all(bytes).expect("write to socket");
}

/// Reads whatever a non-blocking stream holds; returns how many bytes.
#[track_caller]
pub fn drain(s: &UnixStream) -> usize {
    use std::io::Read;
    let mut buf = [0u8; 256];
    let mut total = 0;
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("read from socket: {e}"),
        }
    }
}

/// A counter shared between a test and the closures it registers.
pub fn counter() -> std::rc::Rc<std::cell::Cell<usize>> {
    std::rc::Rc::new(std::cell::Cell::new(0))
}

/// Increments a [`counter`].
pub fn bump(c: &std::cell::Cell<usize>) {
    c.set(c.get() + 1);
}

/// The error kind of a result that must be an error.
#[track_caller]
pub fn err_kind<T: std::fmt::Debug>(r: io::Result<T>) -> io::ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.kind(),
    }
}
