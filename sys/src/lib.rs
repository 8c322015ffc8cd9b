//! The OS layer of [ioloop]: one [`Poller`] trait over the readiness APIs of every Unix.
//!
//! | backend | OS | type | modes |
//! |---|---|---|---|
//! | epoll | Linux, Android | `Epoll` | Level, Oneshot, Edge |
//! | kqueue | macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly | `Kqueue` | Level, Oneshot, Edge |
//! | io_uring | Linux | `Uring` | Level, Oneshot, Edge (Linux 5.13+: multishot poll) |
//! | poll | every Unix | `Poll` | Level, Oneshot |
//! | select | every Unix | `Select` | Level, Oneshot |
//!
//! Every backend offers the same operations with the same meaning, so code generic over
//! [`Poller`] (and every test of this workspace) runs unchanged on each of them.
//!
//! # Examples
//!
//! ```
//! use std::io::Write;
//! use std::os::fd::AsRawFd;
//! use std::os::unix::net::UnixStream;
//! use std::time::Duration;
//! use ioloop_sys::{Events, Interest, Mode, DefaultPoller, Poller, Ready};
//!
//! let poller = DefaultPoller::new()?;
//! let (a, mut b) = UnixStream::pair()?;
//! poller.register(a.as_raw_fd(), 7, Interest::READABLE, Mode::Level)?;
//! b.write_all(b"x")?;
//!
//! let mut events = Events::with_capacity(16);
//! let n = poller.wait(&mut events, Some(Duration::from_secs(5)))?;
//! assert_eq!(n, 1);
//! let ev = events.iter().next().unwrap();
//! assert_eq!(ev.token(), 7);
//! assert!(ev.ready().contains(Ready::READABLE));
//! poller.deregister(a.as_raw_fd())?;
//! # std::io::Result::Ok(())
//! ```
//!
//! [ioloop]: https://docs.rs/ioloop

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

mod common;
mod events;
mod fdmap;
mod flags;
mod notify;
mod registry;
mod syscall;

pub mod inline_fn;
pub mod signal;

#[cfg(ioloop_has_epoll)]
mod epoll;
#[cfg(ioloop_has_kqueue)]
mod kqueue;
mod poll;
mod select;
#[cfg(ioloop_has_uring)]
mod uring;

#[cfg(feature = "alloc-counter")]
pub mod alloc_counter;

pub use events::{Event, Events};
pub use flags::{Interest, Mode, Ready};
pub use notify::Notifier;

#[cfg(ioloop_has_epoll)]
pub use epoll::Epoll;
#[cfg(ioloop_has_kqueue)]
pub use kqueue::Kqueue;
pub use poll::Poll;
pub use select::Select;
#[cfg(ioloop_has_uring)]
pub use uring::Uring;

/// Whether `fd` is an open file descriptor of this process (`fcntl(F_GETFD)` succeeds).
///
/// The reactor uses it to tell "an error on the fd" from "the fd was closed behind the loop's
/// back" when a backend reports [`Ready::ERROR`].
///
/// # Examples
///
/// ```
/// let file = std::fs::File::open("/dev/null")?;
/// assert!(ioloop_sys::is_open(std::os::fd::AsRawFd::as_raw_fd(&file)));
/// assert!(!ioloop_sys::is_open(-1));
/// # std::io::Result::Ok(())
/// ```
pub fn is_open(fd: RawFd) -> bool {
    fd >= 0 && common::check_open(fd).is_ok()
}

/// Puts `fd` in non-blocking mode (sets `O_NONBLOCK`) in one system call where that is
/// reliable: `ioctl(FIONBIO)` on Linux and Android (as std's sockets and async-io do there);
/// elsewhere `fcntl(F_GETFL)` then, if the flag is missing, `fcntl(F_SETFL)`, since
/// `FIONBIO` is handled per file type on the BSDs and macOS.
///
/// # Errors
///
/// What the OS reports (`EBADF` is impossible for a live `BorrowedFd`).
///
/// # Examples
///
/// ```
/// use std::os::fd::AsFd;
/// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
/// ioloop_sys::set_nonblocking(a.as_fd())?;
/// let mut buf = [0u8; 1];
/// let err = std::io::Read::read(&mut &a, &mut buf).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
/// # std::io::Result::Ok(())
/// ```
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::AsRawFd;
        let mut on: libc::c_int = 1;
        // SAFETY: `fd` is open for the borrow's lifetime; FIONBIO reads one `c_int` through
        // the pointer, which points at `on`, live for the call.
        syscall::cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &mut on) })?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
        if !flags.contains(OFlag::O_NONBLOCK) {
            fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        }
    }
    Ok(())
}

/// Accepts a connection on the listening IPv4 or IPv6 socket `listener` (a TCP listener):
/// the new socket is non-blocking and close-on-exec from the start. One `accept4` with
/// `SOCK_NONBLOCK | SOCK_CLOEXEC` where the OS has it (Linux, Android, the BSDs, illumos,
/// as mio does), so an accepted connection costs no `ioctl`/`fcntl` more; elsewhere
/// (Apple's systems) `accept`, then `FD_CLOEXEC` and [`set_nonblocking`]. Retries `EINTR`.
///
/// # Errors
///
/// What `accept` reports: `WouldBlock` when no connection is queued on a non-blocking
/// listener, `ConnectionAborted`, `EMFILE`...; `InvalidInput` if the peer's address is not
/// an IPv4 or IPv6 one (`listener` is not an Internet socket).
///
/// # Examples
///
/// ```
/// use std::os::fd::AsFd;
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let client = std::net::TcpStream::connect(listener.local_addr()?)?;
/// let (fd, peer) = ioloop_sys::accept_nonblocking(listener.as_fd())?;
/// assert_eq!(peer, client.local_addr()?);
/// let stream = std::net::TcpStream::from(fd);
/// let err = std::io::Read::read(&mut &stream, &mut [0; 1]).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
/// # std::io::Result::Ok(())
/// ```
pub fn accept_nonblocking(
    listener: BorrowedFd<'_>,
) -> io::Result<(std::os::fd::OwnedFd, std::net::SocketAddr)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: all-zero bytes are a valid `sockaddr_storage` (plain integers and arrays).
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let addr = (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
    #[cfg(ioloop_sock_flags)]
    let fd = {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: `listener` is open for the borrow's lifetime; the kernel writes at most
        // `len` bytes (the size of `storage`) to `addr`, and the size to `len`, both live
        // for the call.
        let fd = syscall::cvt_retry(|| unsafe {
            libc::accept4(listener.as_raw_fd(), addr, &mut len, flags)
        })?;
        // SAFETY: `accept4` returned a new fd that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    #[cfg(not(ioloop_sock_flags))]
    let fd = {
        use std::os::fd::AsFd;
        // SAFETY: `listener` is open for the borrow's lifetime; the kernel writes at most
        // `len` bytes (the size of `storage`) to `addr`, and the size to `len`, both live
        // for the call.
        let fd =
            syscall::cvt_retry(|| unsafe { libc::accept(listener.as_raw_fd(), addr, &mut len) })?;
        // SAFETY: `accept` returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_SETFD takes an integer argument; `fd` is open.
        syscall::cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
        set_nonblocking(fd.as_fd())?;
        fd
    };
    let peer = common::socket_addr(&storage, len)?;
    Ok((fd, peer))
}

/// A connected pair of Unix sockets, stream sockets or (`datagram`) datagram sockets, both
/// non-blocking and close-on-exec from the start: one `socketpair` with `SOCK_NONBLOCK |
/// SOCK_CLOEXEC` where the OS has it (as for [`accept_nonblocking`]); elsewhere std's
/// `pair` (close-on-exec), then [`set_nonblocking`] on each end.
///
/// # Errors
///
/// What `socketpair` reports (`EMFILE`, `ENFILE`...).
///
/// # Examples
///
/// ```
/// let (a, b) = ioloop_sys::socketpair_nonblocking(false)?;
/// let (a, b) = (std::os::unix::net::UnixStream::from(a), std::os::unix::net::UnixStream::from(b));
/// let err = std::io::Read::read(&mut &a, &mut [0; 1]).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
/// std::io::Write::write_all(&mut &b, b"x")?;
/// assert_eq!(std::io::Read::read(&mut &a, &mut [0; 4])?, 1);
/// # std::io::Result::Ok(())
/// ```
pub fn socketpair_nonblocking(
    datagram: bool,
) -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::OwnedFd;
    #[cfg(ioloop_sock_flags)]
    {
        use std::os::fd::FromRawFd;
        let kind = if datagram {
            libc::SOCK_DGRAM
        } else {
            libc::SOCK_STREAM
        };
        let mut fds: [libc::c_int; 2] = [-1, -1];
        let ty = kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: `fds` is a live, writable array of two ints for the call, where the kernel
        // writes the two new fds.
        syscall::cvt(unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) })?;
        // SAFETY: `socketpair` succeeded: both are new fds that nothing else owns.
        let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(pair)
    }
    #[cfg(not(ioloop_sock_flags))]
    {
        use std::os::fd::AsFd;
        use std::os::unix::net::{UnixDatagram, UnixStream};
        let (a, b): (OwnedFd, OwnedFd) = if datagram {
            let (a, b) = UnixDatagram::pair()?;
            (a.into(), b.into())
        } else {
            let (a, b) = UnixStream::pair()?;
            (a.into(), b.into())
        };
        set_nonblocking(a.as_fd())?;
        set_nonblocking(b.as_fd())?;
        Ok((a, b))
    }
}

/// Whether the socket `fd` is a TCP socket, where the OS can tell (`SO_PROTOCOL`: Linux,
/// Android, FreeBSD, OpenBSD); `None` elsewhere, or if `fd` is not a socket. An SCTP stream
/// socket is `SOCK_STREAM` too, but reads one message per call.
///
/// # Examples
///
/// ```
/// use std::os::fd::AsFd;
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
/// if cfg!(target_os = "linux") {
///     assert_eq!(ioloop_sys::is_tcp(listener.as_fd()), Some(true));
///     assert_eq!(ioloop_sys::is_tcp(a.as_fd()), Some(false));
/// }
/// # std::io::Result::Ok(())
/// ```
pub fn is_tcp(fd: BorrowedFd<'_>) -> Option<bool> {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "openbsd"
    ))]
    {
        use std::os::fd::AsRawFd;
        let mut proto: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is open for the borrow's lifetime; the kernel writes at most `len`
        // bytes (one `c_int`) to `proto` and the size to `len`, both live for the call.
        let res = syscall::cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PROTOCOL,
                (&mut proto as *mut libc::c_int).cast(),
                &mut len,
            )
        });
        res.ok().map(|_| proto == libc::IPPROTO_TCP)
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "openbsd"
    )))]
    {
        let _ = fd;
        None
    }
}

/// The token value a [`Poller`] keeps for its own notifier; registering it is
/// [`InvalidInput`](io::ErrorKind::InvalidInput).
pub const RESERVED_TOKEN: u64 = u64::MAX;

/// A readiness poller: the one interface every backend implements with the same meaning.
///
/// A poller is `Send + Sync`, and [`register`](Poller::register), [`modify`](Poller::modify) and
/// [`deregister`](Poller::deregister) take `&self`: a registration made from another thread
/// while a [`wait`](Poller::wait) is blocked takes effect in that wait (epoll and kqueue do this
/// natively; poll, select and io_uring apply the change under a lock and interrupt the wait
/// through the notifier). Each `wait` needs its own [`Events`]; poll, select, io_uring and
/// kqueue serialise concurrent waits (a second one, even with a zero timeout, blocks until the
/// first returns), epoll lets them run side by side as the kernel does.
///
/// The poller does not own the file descriptors it watches. Deregister an fd before closing it:
/// what an fd closed while registered does depends on the backend (poll reports it as
/// [`Ready::ERROR`] on every wait, select too unless its interest is empty; epoll drops it
/// silently when the last reference to the open file goes, kqueue when it is closed; io_uring's
/// armed poll holds a reference to the file, which stays open until the fd is deregistered).
///
/// # Errors
///
/// Every backend reports bad input the same way:
///
/// | input | [`io::ErrorKind`] |
/// |---|---|
/// | `fd < 0`, or `token == `[`RESERVED_TOKEN`] | `InvalidInput` |
/// | `register` of an fd already registered | `AlreadyExists` |
/// | `modify` / `deregister` of an fd not registered | `NotFound` |
/// | a [`Mode`] the backend lacks (see [`supports`](Poller::supports)) | `Unsupported` |
/// | [`Select`] with `fd >= FD_SETSIZE` | `InvalidInput` |
pub trait Poller: Send + Sync + Sized + 'static {
    /// The backend's short name: `"epoll"`, `"kqueue"`, `"uring"`, `"poll"` or `"select"`.
    const NAME: &'static str;

    /// Creates a poller, with its notifier.
    ///
    /// # Errors
    ///
    /// Whatever the OS says when it cannot create the kernel object (fd limit, memory, an
    /// io_uring that a kernel or seccomp policy refuses).
    fn new() -> io::Result<Self>;

    /// Creates a poller for use from one thread only: the calling code promises that every
    /// [`register`](Poller::register), [`modify`](Poller::modify),
    /// [`deregister`](Poller::deregister), [`is_stale`](Poller::is_stale) and
    /// [`wait`](Poller::wait) happens on one thread (the first that makes one of these
    /// calls, which need not be the creating thread). [`notify`](Poller::notify) and the
    /// [`notifier`](Poller::notifier) still work from any thread. A single-threaded event
    /// loop wants this.
    ///
    /// A backend may use the promise to run faster (io_uring's `Uring` does: the kernel then
    /// finishes its requests in the owner's `wait`, in batches) and may refuse the calls
    /// above from another thread with an error; the others just call [`new`](Poller::new),
    /// the default.
    ///
    /// # Errors
    ///
    /// As [`new`](Poller::new).
    fn new_owned() -> io::Result<Self> {
        Self::new()
    }

    /// Whether this poller can register in `mode`.
    fn supports(&self, mode: Mode) -> bool;

    /// Whether [`Ready::PRIORITY`] is exact here: reported only while priority data is
    /// pending (as of the wait), so that an event without it shows none was. True for epoll,
    /// poll and select. False for io_uring, whose poll completions carry the wake-up's own
    /// mask, and a socket's wake-up for any new data says `POLLPRI` (priority can be
    /// spurious there), and for kqueue and poll on Apple's systems, which refuse
    /// [`Interest::PRIORITY`]. The default is false.
    fn priority_exact(&self) -> bool {
        false
    }

    /// Whether [`modify`](Poller::modify) only queues its change for the next
    /// [`wait`](Poller::wait), with no system call of its own (while no wait is blocked in
    /// another thread): true for io_uring (the change is a submission queue entry, which the
    /// next wait submits), poll and select (a table entry). False for epoll and kqueue (an
    /// `epoll_ctl`, a `kevent` per change), the default. Where it is true, re-arming a
    /// [`Mode::Oneshot`] registration after each report adds no system call: the task layer
    /// of the `ioloop` crate uses Oneshot rather than Edge on such a poller when its
    /// [`Ready::PRIORITY`] is not exact (io_uring).
    fn modify_deferred(&self) -> bool {
        false
    }

    /// Starts watching `fd` for `interest`; events carry `token`.
    ///
    /// An empty `interest` is allowed: the fd then only reports [`Ready::ERROR`] and
    /// [`Ready::HUP`] where the OS reports those unasked.
    ///
    /// # Errors
    ///
    /// See the [trait docs](Poller#errors); otherwise what the OS reports (`EBADF` for an fd
    /// that is not open, `EPERM` for a regular file on epoll).
    fn register(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()>;

    /// Changes the token, interest and mode of a registered `fd`; also re-arms a
    /// [`Mode::Oneshot`] registration that has reported.
    ///
    /// # Errors
    ///
    /// `NotFound` if `fd` is not registered; see the [trait docs](Poller#errors).
    fn modify(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()>;

    /// Stops watching `fd`.
    ///
    /// # Errors
    ///
    /// `NotFound` if `fd` is not registered; `InvalidInput` if `fd < 0`.
    fn deregister(&self, fd: RawFd) -> io::Result<()>;

    /// Whether the registration of `fd` watches a file that is no longer open at that number:
    /// the fd was closed without [`deregister`](Poller::deregister), and the number is now
    /// free or names another open file.
    ///
    /// A reactor asks this before reusing a registered number; unlike a probing
    /// [`modify`](Poller::modify) it changes no registration (re-arms no [`Mode::Oneshot`]
    /// one). epoll answers it from its interest set (which forgets a closed file silently;
    /// epoll keeps no table, so it also says `true` for an fd never registered), io_uring by
    /// asking its armed poll, which holds the closed file. It may cost system calls: not for
    /// hot paths. The default, for the other backends, is `Ok(false)` (poll and select report
    /// the closed fd at the next wait); so is the answer for an fd that is not registered
    /// (except on epoll), or when the backend cannot tell.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `fd < 0`; what the OS reports.
    fn is_stale(&self, fd: RawFd) -> io::Result<bool> {
        common::check_fd(fd)?;
        Ok(false)
    }

    /// Waits for events, clears `events` and fills it with at most
    /// [`events.capacity()`](Events::capacity) of them, and returns how many it stored.
    ///
    /// `None` waits without a time limit, `Some(Duration::ZERO)` does not block. It returns
    /// before `timeout` only when an event is ready or the [`Notifier`] was notified (then
    /// possibly with `Ok(0)`). A signal that interrupts the system call is not an error: the
    /// wait goes on for the time that is left. Timeouts keep the precision the system call
    /// has (nanoseconds with `epoll_pwait2`, `ppoll`, `kevent` and io_uring, milliseconds
    /// rounded up with `epoll_wait`, microseconds with `select`) and never end early.
    ///
    /// # Errors
    ///
    /// What the OS reports; `EINTR` is never returned.
    fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize>;

    /// Wakes a blocked (or the next) [`wait`](Poller::wait); same as `self.notifier().notify()`.
    ///
    /// # Errors
    ///
    /// What the OS reports when writing the wake-up; with the coalescing, rare.
    fn notify(&self) -> io::Result<()>;

    /// A cloneable, `Send + Sync` handle whose [`notify`](Notifier::notify) wakes this poller's
    /// wait from any thread.
    fn notifier(&self) -> Notifier;
}

/// The backend chosen at build time: epoll on Linux/Android, kqueue on macOS and the BSDs,
/// poll elsewhere; `IOLOOP_POLLER=<name>` at build time overrides it.
#[cfg(ioloop_default = "epoll")]
pub type DefaultPoller = Epoll;
/// The backend chosen at build time: epoll on Linux/Android, kqueue on macOS and the BSDs,
/// poll elsewhere; `IOLOOP_POLLER=<name>` at build time overrides it.
#[cfg(ioloop_default = "kqueue")]
pub type DefaultPoller = Kqueue;
/// The backend chosen at build time: epoll on Linux/Android, kqueue on macOS and the BSDs,
/// poll elsewhere; `IOLOOP_POLLER=<name>` at build time overrides it.
#[cfg(ioloop_default = "uring")]
pub type DefaultPoller = Uring;
/// The backend chosen at build time: epoll on Linux/Android, kqueue on macOS and the BSDs,
/// poll elsewhere; `IOLOOP_POLLER=<name>` at build time overrides it.
#[cfg(ioloop_default = "poll")]
pub type DefaultPoller = Poll;
/// The backend chosen at build time: epoll on Linux/Android, kqueue on macOS and the BSDs,
/// poll elsewhere; `IOLOOP_POLLER=<name>` at build time overrides it.
#[cfg(ioloop_default = "select")]
pub type DefaultPoller = Select;
