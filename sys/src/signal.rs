//! Signals delivered as readiness: a self-pipe per signal number.
//!
//! [`SignalPipe::new`] installs a handler for one signal that does nothing but write one byte
//! to a non-blocking pipe (async-signal-safe: `write(2)` only, `errno` preserved). The read end
//! is an ordinary fd that any [`Poller`](crate::Poller) watches, so the user's handler runs as a
//! normal loop event, never inside the signal handler. Dropping the `SignalPipe` restores the
//! disposition that was there before.
//!
//! A self-pipe works the same on every Unix and, unlike `signalfd`, does not require the signal
//! to be blocked in every thread of the process (a signalfd misses signals delivered to a
//! thread that has them unblocked).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use nix::sys::signal::Signal;

use crate::notify::{pipe_nonblocking, read_some};

/// One slot per signal number: the write end of that signal's pipe, or -1.
#[allow(clippy::declare_interior_mutable_const)] // only used to initialise WRITE_FDS
const NO_FD: AtomicI32 = AtomicI32::new(-1);
static WRITE_FDS: [AtomicI32; 128] = [NO_FD; 128];

/// The pipes of dropped `SignalPipe`s, `(signum, read end, write end)`, kept open for the
/// next `SignalPipe` of the same signal rather than closed: a signal handler running in
/// another thread may have loaded the write end's number from [`WRITE_FDS`] just before the
/// drop cleared it, and its `write` must not reach a file that reuses the number. At most
/// one pipe per signal number ever used in the process.
static SPARE: Mutex<Vec<(i32, OwnedFd, OwnedFd)>> = Mutex::new(Vec::new());

fn spare() -> std::sync::MutexGuard<'static, Vec<(i32, OwnedFd, OwnedFd)>> {
    SPARE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A pipe for `signum`: the spare one, emptied of the deliveries its last owner did not take
/// (they were meant for a handler that is gone), or a new one (never seen by a handler: it
/// may be closed).
fn pipe_for(signum: i32) -> io::Result<(OwnedFd, OwnedFd, bool)> {
    let kept = {
        let mut spare = spare();
        let i = spare.iter().position(|(s, _, _)| *s == signum);
        i.map(|i| spare.swap_remove(i))
    };
    match kept {
        Some((_, read, write)) => {
            drain_fd(read.as_raw_fd());
            Ok((read, write, true))
        }
        None => pipe_nonblocking().map(|(read, write)| (read, write, false)),
    }
}

/// Reads `fd` (non-blocking) until it is empty; returns how many bytes it held.
fn drain_fd(fd: RawFd) -> usize {
    let mut buf = [0u8; 64];
    let mut total = 0;
    while let Ok(n @ 1..) = read_some(fd, &mut buf) {
        total += n;
    }
    total
}

/// A signal number routed to a pipe. See the [module docs](self).
///
/// # Examples
///
/// ```
/// use ioloop_sys::signal::SignalPipe;
/// let pipe = SignalPipe::new(libc::SIGUSR2)?;
/// nix::sys::signal::raise(nix::sys::signal::Signal::SIGUSR2)?;
/// assert_eq!(pipe.drain(), 1);
/// # std::io::Result::Ok(())
/// ```
pub struct SignalPipe {
    signum: i32,
    /// The read end and the write end, whose raw value is also in `WRITE_FDS[signal]` for
    /// the handler. `None` only while dropping: the pair then goes to [`SPARE`], after
    /// `WRITE_FDS[signal]` is cleared and the old action restored.
    pipe: Option<(OwnedFd, OwnedFd)>,
    /// The action before `new` (raw: nix's `Signal` has no real-time signals).
    old: libc::sigaction,
}

impl std::fmt::Debug for SignalPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalPipe")
            .field("signal", &SigName(self.signum))
            .field("read", &self.fd())
            .finish()
    }
}

/// A signal number as its name where nix knows it (`SIGUSR1`), else as `signal 40` (a
/// real-time signal).
struct SigName(i32);

impl std::fmt::Display for SigName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Signal::try_from(self.0) {
            Ok(s) => write!(f, "{s}"),
            Err(_) => write!(f, "signal {}", self.0),
        }
    }
}

impl std::fmt::Debug for SigName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Installs `handler` for `signum` with `flags` and an empty mask; returns the old action.
/// `handler` must be async-signal-safe.
fn install(
    signum: i32,
    handler: extern "C" fn(libc::c_int),
    flags: libc::c_int,
) -> io::Result<libc::sigaction> {
    // SAFETY: all zeroes is a valid `sigaction` (a plain C struct of integers and a
    // sigset_t: SIG_DFL, no flags), filled in below before use.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as libc::sighandler_t;
    action.sa_flags = flags;
    // SAFETY: `sa_mask` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    sigaction_raw(signum, &action)
}

/// `sigaction(signum, new)`, returning the old action.
fn sigaction_raw(signum: i32, new: &libc::sigaction) -> io::Result<libc::sigaction> {
    let mut old = MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: `new` is a valid action and `old` points to writable memory for one action;
    // both live across the call. The kernel (or libc) checks `signum`.
    crate::syscall::cvt(unsafe { libc::sigaction(signum, new, old.as_mut_ptr()) })?;
    // SAFETY: a successful sigaction(2) filled `old` in.
    Ok(unsafe { old.assume_init() })
}

extern "C" fn on_signal(signum: libc::c_int) {
    let slot = usize::try_from(signum).ok().and_then(|i| WRITE_FDS.get(i));
    if let Some(fd) = slot
        .map(|s| s.load(Ordering::Relaxed))
        .filter(|fd| *fd >= 0)
    {
        let saved = nix::errno::Errno::last_raw();
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; `byte` lives across the call. A full pipe
        // (EAGAIN) already holds a wake-up, so the result is deliberately ignored.
        let _ = unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        nix::errno::Errno::set_raw(saved);
    }
}

impl SignalPipe {
    /// Routes `signum` to a new pipe.
    ///
    /// # Errors
    ///
    /// * `InvalidInput`: not a signal number this OS lets a program catch (`SIGKILL`,
    ///   `SIGSTOP`, the real-time signals libc keeps for itself, numbers out of range), or one
    ///   that must not be (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`: the faulting instruction
    ///   would run again as soon as the handler returns). Real-time signals
    ///   (`SIGRTMIN()..=SIGRTMAX()`) are fine.
    /// * `AlreadyExists`: another `SignalPipe` for this signal is alive.
    /// * what `pipe(2)` or `sigaction(2)` report.
    pub fn new(signum: i32) -> io::Result<Self> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {why}", SigName(signum)),
            )
        };
        let slot = usize::try_from(signum)
            .ok()
            .filter(|&i| i > 0)
            .and_then(|i| WRITE_FDS.get(i))
            .ok_or_else(|| invalid("not a signal number"))?;
        if [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
        ]
        .contains(&signum)
        {
            return Err(invalid("cannot be handled on an event loop"));
        }
        let (read, write, kept) = pipe_for(signum)?;
        if slot
            .compare_exchange(-1, write.as_raw_fd(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            if kept {
                // A pipe a handler may still write to: kept, not closed.
                spare().push((signum, read, write));
            }
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is already routed to an event loop", SigName(signum)),
            ));
        }
        // `on_signal` is async-signal-safe: it loads an atomic, calls write(2) and
        // saves/restores errno, nothing else.
        match install(signum, on_signal, libc::SA_RESTART) {
            Ok(old) => Ok(Self {
                signum,
                pipe: Some((read, write)),
                old,
            }),
            Err(e) => {
                slot.store(-1, Ordering::Release);
                spare().push((signum, read, write));
                Err(if e.raw_os_error() == Some(libc::EINVAL) {
                    invalid("not a signal number this program may catch")
                } else {
                    e
                })
            }
        }
    }

    /// The signal number.
    pub fn signum(&self) -> i32 {
        self.signum
    }

    /// The read end: readable when the signal has arrived since the last [`drain`](Self::drain).
    pub fn fd(&self) -> RawFd {
        self.pipe.as_ref().map_or(-1, |(read, _)| read.as_raw_fd())
    }

    /// Empties the pipe and returns how many deliveries it held (several deliveries of one
    /// signal may also have been merged by the kernel before the handler ran).
    pub fn drain(&self) -> usize {
        drain_fd(self.fd())
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        // Restores exactly the action that was in place before `new`.
        let _ = sigaction_raw(self.signum, &self.old);
        WRITE_FDS[self.signum as usize].store(-1, Ordering::Release);
        if let Some((read, write)) = self.pipe.take() {
            spare().push((self.signum, read, write));
        }
    }
}

/// Sends `signum` to the calling thread (`raise(3)`), real-time signals included (nix's
/// `raise` takes its `Signal` enum, which has none).
///
/// # Examples
///
/// ```
/// use ioloop_sys::signal::{raise, SignalPipe};
/// let pipe = SignalPipe::new(libc::SIGUSR2)?;
/// raise(libc::SIGUSR2)?;
/// assert_eq!(pipe.drain(), 1);
/// # std::io::Result::Ok(())
/// ```
///
/// # Errors
///
/// `InvalidInput` (`EINVAL`) for a number that is not a signal.
pub fn raise(signum: i32) -> io::Result<()> {
    // SAFETY: raise(3) takes no pointers; what the signal then does is the caller's intent.
    crate::syscall::cvt(unsafe { libc::raise(signum) }).map(drop)
}

/// Installs, process-wide, a handler for `sig` that does nothing, without `SA_RESTART`: a
/// system call blocked in a thread that receives `sig` then fails with `EINTR` instead of being
/// restarted, and the process survives the signal. Tests use it to prove that
/// [`Poller::wait`](crate::Poller::wait) treats `EINTR` as "go on waiting for the time left".
///
/// Calling it again for the same signal is harmless. See
/// [`sigaction(2)`](https://man7.org/linux/man-pages/man2/sigaction.2.html).
///
/// # Examples
///
/// ```
/// ioloop_sys::signal::install_noop_handler(libc::SIGUSR1)?;
/// # std::io::Result::Ok(())
/// ```
///
/// # Errors
///
/// `InvalidInput` when `sig` is not a signal number or cannot be caught (`SIGKILL`,
/// `SIGSTOP`).
pub fn install_noop_handler(sig: i32) -> io::Result<()> {
    /// Does nothing, which is trivially async-signal-safe; being called is the point.
    extern "C" fn noop(_sig: libc::c_int) {}

    // `noop` does nothing, so it is async-signal-safe. A number that is not a signal, or
    // one that cannot be caught, is EINVAL (`InvalidInput`).
    install(sig, noop, 0).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dropped `SignalPipe`'s write end stays open and goes to the next `SignalPipe` of the
    /// signal (a signal handler in another thread may still write to it: the number must not
    /// name another file), and a delivery its last owner did not take is not passed on.
    #[test]
    fn a_dropped_pipe_is_kept_for_the_next_one() {
        // The only test of this binary that touches signals (SIGURG is ignored by default).
        let sig = libc::SIGURG;
        let first = SignalPipe::new(sig).unwrap();
        let write = WRITE_FDS[sig as usize].load(Ordering::Acquire);
        raise(sig).unwrap();
        drop(first);
        assert_eq!(WRITE_FDS[sig as usize].load(Ordering::Acquire), -1);
        assert!(crate::is_open(write), "the write end was closed");
        let second = SignalPipe::new(sig).unwrap();
        assert_eq!(WRITE_FDS[sig as usize].load(Ordering::Acquire), write);
        assert_eq!(second.drain(), 0, "the old delivery was passed on");
        raise(sig).unwrap();
        assert_eq!(second.drain(), 1);
        // A second `SignalPipe` for the signal is refused and takes nothing away.
        let err = SignalPipe::new(sig).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(WRITE_FDS[sig as usize].load(Ordering::Acquire), write);
        raise(sig).unwrap();
        assert_eq!(second.drain(), 1);
    }
}
