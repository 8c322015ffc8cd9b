//! Signal helpers: catching a signal so that it interrupts blocking system calls.
//!
//! The tests use this to check that [`Poller::wait`](crate::Poller::wait) treats `EINTR` as
//! "go on waiting for the time that is left": `SIG_IGN` would not interrupt anything, and the
//! default action of most signals ends the process.

use std::io;

use crate::syscall::cvt;

/// Installs, process-wide, a handler for signal `sig` that does nothing, without
/// `SA_RESTART`: a system call blocked in a thread that receives `sig` then fails with
/// `EINTR` instead of being restarted by the kernel, and the process survives the signal.
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
/// `InvalidInput` (`EINVAL`) when `sig` is not a signal number or cannot be caught
/// (`SIGKILL`, `SIGSTOP`).
pub fn install_noop_handler(sig: i32) -> io::Result<()> {
    /// Does nothing, which is trivially async-signal-safe; being called is the point.
    extern "C" fn noop(_sig: libc::c_int) {}

    // SAFETY: `sigaction` is plain data; all-zero is a valid value (no flags, empty mask on
    // every libc we target, and a null handler that we overwrite below). It also zeroes any
    // private padding fields.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    let handler: extern "C" fn(libc::c_int) = noop;
    action.sa_sigaction = handler as libc::sighandler_t;
    // No SA_RESTART (the point of this helper) and no SA_SIGINFO (`noop` takes one argument).
    action.sa_flags = 0;
    // SAFETY: `action.sa_mask` is a valid, writable sigset_t owned by this frame.
    cvt(unsafe { libc::sigemptyset(&mut action.sa_mask) })?;
    // SAFETY: `action` is fully initialised and outlives the call; its handler is an
    // `extern "C" fn(c_int)` that lives for the whole program; a null old-action pointer
    // means "do not report it".
    cvt(unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) })?;
    Ok(())
}
