//! The cross-thread notifier: coalesced wake-ups of a blocked wait.
//!
//! One flag (`pending`) makes any number of [`Notifier::notify`] calls before the waiter
//! consumes the wake-up cost one write and one readable event: 100 000 notifies to a poller
//! nobody waits on leave one wake-up and never fill the pipe. On Linux the wake-up is an
//! eventfd; elsewhere a non-blocking pipe (kqueue uses `EVFILT_USER` on Apple's systems,
//! FreeBSD and DragonFly: see `kqueue.rs` for why not on NetBSD and OpenBSD).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::syscall::{cvt, retry};

/// A cloneable, `Send + Sync` handle that wakes a [`Poller`](crate::Poller)'s wait from any
/// thread.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ioloop_sys::{Events, Poll, Poller};
///
/// let poller = Poll::new()?;
/// let notifier = poller.notifier();
/// let t = std::thread::spawn(move || notifier.notify());
/// let mut events = Events::with_capacity(8);
/// // Returns once the other thread has notified, with no event.
/// assert_eq!(poller.wait(&mut events, None)?, 0);
/// t.join().unwrap()?;
/// # std::io::Result::Ok(())
/// ```
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("pending", &self.inner.pending.load(Ordering::Relaxed))
            .finish()
    }
}

struct Inner {
    /// A wake-up was sent and the waiter has not consumed it yet.
    pending: AtomicBool,
    wake: Wake,
}

enum Wake {
    /// eventfd: the same fd is written by notify and read by the waiter.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    EventFd(OwnedFd),
    /// A pipe: notify writes one byte, the waiter drains the read end.
    #[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
    Pipe { read: OwnedFd, write: OwnedFd },
    /// kqueue's EVFILT_USER: notify triggers a user event on the (shared) kqueue. Only on the
    /// systems of the list in `kqueue.rs`; NetBSD and OpenBSD use a pipe (their kernels
    /// gained EVFILT_USER late, and the notifier is chosen at build time).
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "dragonfly"
    ))]
    User(Arc<OwnedFd>),
}

impl Notifier {
    /// Wakes the poller's current (or next) wait. Coalesced: while a wake-up is pending,
    /// further calls cost one atomic operation and do nothing else.
    ///
    /// # Errors
    ///
    /// What the OS reports when writing the wake-up (not `WouldBlock`: a full pipe already
    /// holds a wake-up).
    pub fn notify(&self) -> io::Result<()> {
        // SeqCst, paired with `Receiver::reset`: the caller's own store before this call (say,
        // "a callback is queued") and this load must not be reordered against the waiter's
        // clearing of the flag and its later check of that state (store-buffer pattern).
        if self.inner.pending.load(Ordering::SeqCst)
            || self.inner.pending.swap(true, Ordering::SeqCst)
        {
            return Ok(());
        }
        let res = match &self.inner.wake {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Wake::EventFd(fd) => write_eventfd(fd.as_raw_fd()),
            Wake::Pipe { write, .. } => write_all_or_full(write.as_raw_fd(), &[1u8]),
            #[cfg(any(
                target_vendor = "apple",
                target_os = "freebsd",
                target_os = "dragonfly"
            ))]
            Wake::User(kq) => crate::kqueue::trigger_user(kq.as_raw_fd()),
        };
        if res.is_err() {
            // Let the next notify try again.
            self.inner.pending.store(false, Ordering::Release);
        }
        res
    }

    /// Whether two handles wake the same poller.
    pub fn same_as(&self, other: &Notifier) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// The waiter's side of a [`Notifier`], owned by the poller.
pub(crate) struct Receiver {
    notifier: Notifier,
}

impl Receiver {
    /// A notifier woken through a file descriptor (eventfd on Linux, a pipe elsewhere).
    pub(crate) fn new_fd() -> io::Result<Self> {
        Ok(Self::from_wake(new_fd_wake()?))
    }

    /// A notifier that triggers EVFILT_USER on the kqueue `kq`.
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "dragonfly"
    ))]
    pub(crate) fn new_user(kq: Arc<OwnedFd>) -> Self {
        Self::from_wake(Wake::User(kq))
    }

    fn from_wake(wake: Wake) -> Self {
        Self {
            notifier: Notifier {
                inner: Arc::new(Inner {
                    pending: AtomicBool::new(false),
                    wake,
                }),
            },
        }
    }

    /// The fd to watch for readability (`None` for EVFILT_USER).
    pub(crate) fn fd(&self) -> Option<RawFd> {
        match &self.notifier.inner.wake {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Wake::EventFd(fd) => Some(fd.as_raw_fd()),
            Wake::Pipe { read, .. } => Some(read.as_raw_fd()),
            #[cfg(any(
                target_vendor = "apple",
                target_os = "freebsd",
                target_os = "dragonfly"
            ))]
            Wake::User(_) => None,
        }
    }

    /// A handle for notifying.
    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Consumes the pending wake-up of a notifier fd that the poller watches edge-triggered
    /// (epoll's `EPOLLET`, io_uring's multishot poll, which completes once per write): only
    /// re-opens the flag. Every write of an eventfd is a new edge,
    /// so the waiter need not read it (one system call less per wake-up, as mio's waker);
    /// the counter is drained by [`Notifier::notify`] itself in the one case that needs it
    /// (a full counter, after 2^64 - 2 wake-ups). A notify that races with this either finds
    /// the flag still set (and this wait returns anyway) or writes a new edge for the next
    /// wait. Only for an eventfd (Linux, Android).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn reset_edge(&self) {
        debug_assert!(matches!(self.notifier.inner.wake, Wake::EventFd(_)));
        self.notifier.inner.pending.store(false, Ordering::SeqCst);
    }

    /// Consumes the pending wake-up: drains first, then re-opens the flag. A notify that
    /// races with this either wrote before the drain (drained now; this wait returns anyway)
    /// or saw the flag still set and wrote nothing (this wait returns anyway, and the caller
    /// sees what that notifier stored before notifying: both sides are SeqCst), or comes after
    /// the flag is re-opened and writes a fresh wake-up. Never a lost wake-up.
    ///
    /// The other order (re-open, then drain) loses wake-ups for good: a notify between the
    /// two sets the flag and writes, the drain eats the write, and the flag stays set with
    /// nothing readable, so every later notify is coalesced into a wake-up that never comes.
    // Used by io_uring's single-shot notifier and kqueue's pipe: poll and select, all that
    // illumos has, use `reset_shared`.
    #[cfg_attr(not(any(ioloop_has_uring, ioloop_has_kqueue)), allow(dead_code))]
    pub(crate) fn reset(&self) {
        self.drain();
        self.notifier.inner.pending.store(false, Ordering::SeqCst);
    }

    /// A second notifier that wakes through the same file (a duplicate of this receiver's
    /// fd) with a flag of its own, so that a poller watching one fd serves both;
    /// [`reset_shared`](Self::reset_shared) consumes their wake-ups and tells them apart.
    pub(crate) fn sharing(&self) -> io::Result<Self> {
        let wake = match &self.notifier.inner.wake {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Wake::EventFd(fd) => Wake::EventFd(fd.try_clone()?),
            Wake::Pipe { read, write } => Wake::Pipe {
                read: read.try_clone()?,
                write: write.try_clone()?,
            },
            #[cfg(any(
                target_vendor = "apple",
                target_os = "freebsd",
                target_os = "dragonfly"
            ))]
            Wake::User(kq) => Wake::User(kq.clone()),
        };
        Ok(Self::from_wake(wake))
    }

    /// Consumes the wake-up of the fd this receiver shares with `other` (made by
    /// [`sharing`](Self::sharing)): drains it once, then re-opens both flags (the order of
    /// [`reset`](Self::reset), for both); returns whether this receiver's notifier had fired
    /// (`other`'s wake-ups are the poller's own). A notify of this one that set its flag but
    /// has not written yet is reported now, and its write makes one spurious round later.
    pub(crate) fn reset_shared(&self, other: &Receiver) -> bool {
        self.drain();
        other.notifier.inner.pending.store(false, Ordering::SeqCst);
        self.notifier.inner.pending.swap(false, Ordering::SeqCst)
    }

    /// Reads the pending wake-up out of the fd (all of a pipe's bytes).
    fn drain(&self) {
        let mut buf = [0u8; 64];
        match &self.notifier.inner.wake {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Wake::EventFd(fd) => {
                let _ = read_some(fd.as_raw_fd(), &mut buf[..8]);
            }
            Wake::Pipe { read, .. } => while let Ok(64) = read_some(read.as_raw_fd(), &mut buf) {},
            #[cfg(any(
                target_vendor = "apple",
                target_os = "freebsd",
                target_os = "dragonfly"
            ))]
            Wake::User(_) => {}
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn new_fd_wake() -> io::Result<Wake> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd takes no pointers; a non-negative return is a new fd we now own.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
    Ok(Wake::EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn new_fd_wake() -> io::Result<Wake> {
    let (read, write) = pipe_nonblocking()?;
    Ok(Wake::Pipe { read, write })
}

/// A close-on-exec, non-blocking pipe: `(read end, write end)`. With `pipe2(2)` where the OS
/// has it, so the flags are set as the pipe is made: a `fork` + `exec` on another thread
/// between the two steps would otherwise leak the fds into the new program.
#[cfg(ioloop_pipe2)]
pub(crate) fn pipe_nonblocking() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?)
}

/// A close-on-exec, non-blocking pipe: `(read end, write end)`. No `pipe2(2)` here (macOS,
/// ...): `pipe(2)`, then `fcntl`.
#[cfg(not(ioloop_pipe2))]
pub(crate) fn pipe_nonblocking() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe()?;
    for fd in [&read, &write] {
        set_cloexec_nonblock(fd.as_raw_fd())?;
    }
    Ok((read, write))
}

/// Sets `FD_CLOEXEC` and `O_NONBLOCK` on `fd`.
#[cfg(not(ioloop_pipe2))]
fn set_cloexec_nonblock(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFD/F_SETFD/F_GETFL/F_SETFL takes only integer arguments; a bad
    // fd is reported as EBADF.
    unsafe {
        let fdf = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        cvt(libc::fcntl(fd, libc::F_SETFD, fdf | libc::FD_CLOEXEC))?;
        let fl = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// Adds 1 to an eventfd's counter. A full counter (`EAGAIN`) is drained and written again, so
/// the write happens and a waiter watching the fd edge-triggered gets its edge.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn write_eventfd(fd: RawFd) -> io::Result<()> {
    let one = 1u64.to_ne_bytes();
    match retry(|| raw_write(fd, &one)) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let _ = read_some(fd, &mut [0u8; 8]);
            write_all_or_full(fd, &one)
        }
        other => other.map(drop),
    }
}

/// Writes `buf` (one short message) to a non-blocking fd; a full pipe or eventfd counter
/// already holds a wake-up, so `WouldBlock` is success.
fn write_all_or_full(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    match retry(|| raw_write(fd, buf)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// One non-blocking read into `buf` (`EINTR` retried).
pub(crate) fn read_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| raw_read(fd, buf))
}

// On Linux the notifier's `read`/`write` are raw system calls (`syscall6`): glibc's `read`
// and `write` are pthread cancellation points, and in a process with more than one thread
// (where a notifier is used) each call pays for switching asynchronous cancellation on and
// off, about 60 instructions, for a feature Rust code cannot use. Elsewhere: the libc
// functions.

/// `write(2)` of `buf` to `fd`; the count written.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn raw_write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let args = [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0, 0];
    // SAFETY: `buf` is valid for `buf.len()` bytes for the duration of the call; `write`
    // takes (int, const void *, size_t).
    unsafe { crate::syscall::syscall6(libc::SYS_write, args) }
}

/// `read(2)` from `fd` into `buf`; the count read.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn raw_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let args = [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0];
    // SAFETY: `buf` is valid and writable for `buf.len()` bytes for the duration of the
    // call; `read` takes (int, void *, size_t).
    unsafe { crate::syscall::syscall6(libc::SYS_read, args) }
}

/// `write(2)` of `buf` to `fd`; the count written.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn raw_write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the duration of the call.
    let n = cvt(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })?;
    Ok(n.unsigned_abs())
}

/// `read(2)` from `fd` into `buf`; the count read.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn raw_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid and writable for `buf.len()` bytes for the duration of the call.
    let n = cvt(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(n.unsigned_abs())
}
