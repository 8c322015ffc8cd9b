//! Helpers shared by the stress and fault tests (`tests/faults*.rs`, `tests/model.rs`).
#![allow(dead_code)]

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use ioloop::{IoLoop, Poller};

/// How much stress to apply: the `IOLOOP_STRESS` environment variable.
///
/// * unset or empty: the small default counts, so `cargo test` stays fast;
/// * `full`: the counts of the issue (100 000 fd cycles, 8 x 100 000 callbacks, 15 000 fds...);
/// * a number `k`: the small counts times `k` (capped where a system limit caps them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stress {
    Small,
    Times(usize),
    Full,
}

pub fn stress() -> Stress {
    match std::env::var("IOLOOP_STRESS").as_deref() {
        Err(_) | Ok("") => Stress::Small,
        Ok(s) if s.eq_ignore_ascii_case("full") => Stress::Full,
        Ok(s) => match s.parse::<usize>() {
            Ok(k) if k > 0 => Stress::Times(k),
            _ => panic!("IOLOOP_STRESS={s:?}: expected `full` or a positive multiplier"),
        },
    }
}

/// `small` scaled by [`stress`], or `full` under `IOLOOP_STRESS=full`.
pub fn scaled(small: usize, full: usize) -> usize {
    match stress() {
        Stress::Small => small,
        Stress::Times(k) => small.saturating_mul(k),
        Stress::Full => full,
    }
}

/// Serialises the tests of one binary that count process-wide resources (open fds, the fd
/// limit) or send signals; a panicking holder does not poison it for the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A loop on backend `P`, or a panic naming it.
#[track_caller]
pub fn new_loop<P: Poller>() -> IoLoop<P> {
    match IoLoop::<P>::with_backend() {
        Ok(lp) => lp,
        Err(e) => panic!("{}: IoLoop::with_backend: {e}", P::NAME),
    }
}

/// The inode behind fd `fd` right now (`None` if it is not open), read through
/// `/proc/self/fd`: tells two sockets apart even when they got the same fd number.
pub fn inode_of(fd: RawFd) -> Option<u64> {
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|m| m.ino())
}

/// Duplicates `x` to a number of at least `floor` (900 or more: below select's
/// `FD_SETSIZE`, far above what the tests of one process hold at once; the soft fd limit is
/// raised to allow it) and returns that number, which the caller now owns (and closes: the
/// "closed behind the loop's back" case). A closed high number stays closed: the kernel
/// gives every new fd the lowest free number, so a low one would soon be reused by the tests
/// running alongside in the same process. Tests that close such a number at the same time
/// take different floors, so that neither reopens the other's.
pub fn fd_out_of_the_way(x: impl AsFd, floor: RawFd) -> RawFd {
    use nix::fcntl::{fcntl, FcntlArg};
    crate::util::raise_nofile(floor as u64 + 100);
    fcntl(x.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(floor)).expect("F_DUPFD_CLOEXEC")
}

/// The raw fd of `x`.
pub fn raw(x: &impl AsRawFd) -> RawFd {
    x.as_raw_fd()
}

/// Runs `run_once` until `done()` or `max` iterations; returns the iterations it took.
#[track_caller]
pub fn run_until_count<P: Poller>(
    lp: &IoLoop<P>,
    max: usize,
    mut done: impl FnMut() -> bool,
) -> usize {
    let mut n = 0;
    while !done() {
        assert!(
            n < max,
            "{}: not done after {max} iterations of run_once",
            P::NAME
        );
        if let Err(e) = lp.run_once() {
            panic!("{}: run_once failed: {e}", P::NAME);
        }
        n += 1;
    }
    n
}

/// A shared counter for closures that are not `Send`.
pub type Counter = Rc<Cell<usize>>;

pub fn counter() -> Counter {
    Rc::new(Cell::new(0))
}

pub fn bump(c: &Cell<usize>) {
    c.set(c.get() + 1);
}

/// How long a test waits for something that must happen before it gives up (only reached
/// on failure).
pub const LONG: Duration = Duration::from_secs(20);

/// Makes the next `run_once` not block: a timer due now (a callback added before `run_once`
/// would run in that iteration, and the wait after it would block).
pub fn nudge<P: Poller>(lp: &IoLoop<P>) {
    lp.call_later(Duration::ZERO, |_| {});
}
