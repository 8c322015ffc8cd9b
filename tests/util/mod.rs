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
