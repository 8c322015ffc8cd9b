//! Smoke tests written for the poll and select backends, run on every backend
//! (`util::backend_tests!`), plus select's own limits.

mod util;

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ioloop_sys::{Events, Interest, Mode, Poller, Ready, RESERVED_TOKEN};

const LONG: Duration = Duration::from_secs(10);

#[track_caller]
fn kind<T: std::fmt::Debug>(r: std::io::Result<T>) -> std::io::ErrorKind {
    r.expect_err("expected an error").kind()
}

fn readable_after_write<P: Poller>() {
    let p = util::poller::<P>();
    let (a, mut b) = util::socketpair();
    p.register(a.as_raw_fd(), 7, Interest::READABLE, Mode::Level)
        .unwrap();
    let mut events = Events::with_capacity(8);
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    b.write_all(b"x").unwrap();
    assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 1);
    let ev = events.iter().next().unwrap();
    assert_eq!(ev.token(), 7);
    assert_eq!(ev.ready(), Ready::READABLE);
    p.deregister(a.as_raw_fd()).unwrap();
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
}

fn level_reports_again<P: Poller>() {
    let p = util::poller::<P>();
    let (a, mut b) = util::socketpair();
    p.register(
        a.as_raw_fd(),
        1,
        Interest::READABLE | Interest::WRITABLE,
        Mode::Level,
    )
    .unwrap();
    b.write_all(b"x").unwrap();
    let mut events = Events::with_capacity(8);
    for _ in 0..3 {
        assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 1);
        let ready = events.as_slice()[0].ready();
        assert!(
            ready.contains(Ready::READABLE | Ready::WRITABLE),
            "{ready:?}"
        );
    }
}

fn oneshot_once_then_rearm<P: Poller>() {
    let p = util::poller::<P>();
    let (a, mut b) = util::socketpair();
    p.register(a.as_raw_fd(), 3, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    b.write_all(b"x").unwrap();
    let mut events = Events::with_capacity(8);
    assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 1);
    assert_eq!(events.as_slice()[0].token(), 3);
    // Still readable, but disarmed.
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    p.modify(a.as_raw_fd(), 4, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 1);
    assert_eq!(events.as_slice()[0].token(), 4);
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
}

fn bad_input_kinds<P: Poller>() {
    use std::io::ErrorKind::*;
    let p = util::poller::<P>();
    let (a, _b) = util::socketpair();
    let fd = a.as_raw_fd();
    assert_eq!(
        kind(p.register(-1, 0, Interest::READABLE, Mode::Level)),
        InvalidInput
    );
    assert_eq!(
        kind(p.register(fd, RESERVED_TOKEN, Interest::READABLE, Mode::Level)),
        InvalidInput
    );
    assert_eq!(
        kind(p.modify(fd, 0, Interest::READABLE, Mode::Level)),
        NotFound
    );
    assert_eq!(kind(p.deregister(fd)), NotFound);
    assert_eq!(kind(p.deregister(-1)), InvalidInput);
    if !p.supports(Mode::Edge) {
        assert_eq!(
            kind(p.register(fd, 0, Interest::READABLE, Mode::Edge)),
            Unsupported
        );
    }
    p.register(fd, 0, Interest::READABLE, Mode::Level).unwrap();
    assert_eq!(
        kind(p.register(fd, 0, Interest::READABLE, Mode::Level)),
        AlreadyExists
    );
    if !p.supports(Mode::Edge) {
        assert_eq!(
            kind(p.modify(fd, 0, Interest::READABLE, Mode::Edge)),
            Unsupported
        );
    }
    assert_eq!(
        kind(p.modify(fd, RESERVED_TOKEN, Interest::READABLE, Mode::Level)),
        InvalidInput
    );
    p.deregister(fd).unwrap();
    assert_eq!(kind(p.deregister(fd)), NotFound);
}

/// Blocks (best effort, Linux only) until thread `tid` sits in a poller system call, so that
/// the caller's next step happens *during* the blocked wait. Not a timing assertion: without
/// /proc it returns at once, and the tests stay valid (just weaker).
fn until_blocked_in_wait(tid: i32) {
    #[cfg(target_os = "linux")]
    {
        // The calls our backends block in (glibc's epoll_wait is epoll_pwait on some arches).
        let waits = [
            libc::SYS_ppoll,
            libc::SYS_pselect6,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_pwait2,
            libc::SYS_io_uring_enter,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_epoll_wait,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_poll,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_select,
        ];
        // Under qemu-user the file shows the host's system call numbers, never one of ours:
        // checked on this thread, which is in `read(2)` while it reads its own.
        let own = format!("/proc/self/task/{}/syscall", gettid());
        let nr = |s: String| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<libc::c_long>().ok())
        };
        if std::fs::read_to_string(own).ok().and_then(nr) != Some(libc::SYS_read) {
            return;
        }
        let path = format!("/proc/self/task/{tid}/syscall");
        let start = Instant::now();
        while start.elapsed() < LONG {
            let Ok(s) = std::fs::read_to_string(&path) else {
                return;
            };
            if nr(s).is_some_and(|nr| waits.contains(&nr)) {
                return;
            }
            std::thread::yield_now();
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = tid;
}

fn gettid() -> i32 {
    #[cfg(target_os = "linux")]
    return nix::unistd::gettid().as_raw();
    #[cfg(not(target_os = "linux"))]
    0
}

/// Starts a thread that waits once on `p` (for `timeout`), after telling its tid through the
/// barrier's side channel; returns its join handle once it is (best effort) blocked.
fn blocked_waiter<P: Poller>(
    p: &Arc<P>,
    timeout: Duration,
) -> std::thread::JoinHandle<(usize, Vec<ioloop_sys::Event>, Duration)> {
    let barrier = Arc::new(Barrier::new(2));
    let (tx, rx) = std::sync::mpsc::channel();
    let t = {
        let (p, barrier) = (p.clone(), barrier.clone());
        std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            barrier.wait();
            let mut events = Events::with_capacity(8);
            let start = Instant::now();
            let n = p.wait(&mut events, Some(timeout)).unwrap();
            (n, events.as_slice().to_vec(), start.elapsed())
        })
    };
    let tid = rx.recv().unwrap();
    barrier.wait();
    until_blocked_in_wait(tid);
    t
}

fn register_from_other_thread_during_wait<P: Poller>() {
    let p = Arc::new(util::poller::<P>());
    let (a, mut b) = util::socketpair();
    b.write_all(b"x").unwrap();
    let t = blocked_waiter(&p, LONG);
    p.register(a.as_raw_fd(), 11, Interest::READABLE, Mode::Level)
        .unwrap();
    let (n, evs, _) = t.join().unwrap();
    assert_eq!(n, 1, "the blocked wait must see the new registration");
    assert_eq!(evs[0].token(), 11);
    assert!(evs[0].is_readable());
}

fn modify_from_other_thread_rearms<P: Poller>() {
    let p = Arc::new(util::poller::<P>());
    let (a, mut b) = util::socketpair();
    b.write_all(b"x").unwrap();
    p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    let mut events = Events::with_capacity(8);
    assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 1);
    let t = blocked_waiter(&p, LONG);
    p.modify(a.as_raw_fd(), 2, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    let (n, evs, _) = t.join().unwrap();
    assert_eq!(n, 1);
    assert_eq!(evs[0].token(), 2);
}

/// A change from another thread wakes the wait internally, but must not end it early.
fn change_during_wait_never_ends_it_early<P: Poller>() {
    let p = Arc::new(util::poller::<P>());
    let (a, _b) = util::socketpair();
    let timeout = Duration::from_millis(200);
    let t = blocked_waiter(&p, timeout);
    p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)
        .unwrap();
    let (n, _, took) = t.join().unwrap();
    assert_eq!(n, 0);
    assert!(took >= timeout, "ended after {took:?}, before {timeout:?}");
}

/// A user notify still ends the wait even when it coincides with internal wakes.
fn notify_still_wakes<P: Poller>() {
    let p = Arc::new(util::poller::<P>());
    let (a, _b) = util::socketpair();
    let t = blocked_waiter(&p, LONG * 6);
    p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)
        .unwrap();
    p.notify().unwrap();
    p.deregister(a.as_raw_fd()).unwrap();
    let (n, _, took) = t.join().unwrap();
    assert_eq!(n, 0);
    assert!(took < LONG * 6);
}

/// poll and select report an fd closed behind their back as ERROR (epoll forgets it).
fn closed_fd_reports_error<P: Poller>(high_base: RawFd) {
    let p = util::poller::<P>();
    let (a, _b) = util::socketpair();
    // A high fd number, distinct per backend, so that fds opened by tests running in parallel
    // do not reuse it between the close and the wait.
    let fd = nix::fcntl::fcntl(&a, nix::fcntl::FcntlArg::F_DUPFD(high_base)).unwrap();
    drop(a);
    p.register(fd, 5, Interest::READABLE, Mode::Level).unwrap();
    nix::unistd::close(fd).unwrap();
    let mut events = Events::with_capacity(8);
    assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 1);
    assert_eq!(events.as_slice()[0].token(), 5);
    assert!(events.as_slice()[0].ready().contains(Ready::ERROR));
    // The reactor then drops it; the closed fd can be deregistered.
    p.deregister(fd).unwrap();
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
}

fn peer_closed_reports<P: Poller>() {
    let p = util::poller::<P>();
    let (a, b) = util::socketpair();
    p.register(a.as_raw_fd(), 9, Interest::READABLE, Mode::Level)
        .unwrap();
    drop(b);
    let mut events = Events::with_capacity(8);
    assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 1);
    let ready = events.as_slice()[0].ready();
    assert!(ready.contains(Ready::READABLE), "{ready:?}");
    if P::NAME != "select" {
        assert!(ready.contains(Ready::HUP), "{ready:?}");
    }
}

fn more_ready_than_capacity_is_fair<P: Poller>() {
    let p = util::poller::<P>();
    let pairs: Vec<_> = (0..4).map(|_| util::socketpair()).collect();
    for (i, (a, b)) in pairs.iter().enumerate() {
        p.register(a.as_raw_fd(), i as u64, Interest::READABLE, Mode::Level)
            .unwrap();
        (&*b).write_all(b"x").unwrap();
    }
    let mut events = Events::with_capacity(3);
    let mut seen = [false; 4];
    for _ in 0..2 {
        assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 3);
        for ev in &events {
            seen[ev.token() as usize] = true;
        }
    }
    assert_eq!(
        seen, [true; 4],
        "every ready fd is reported within two waits"
    );
}

util::backend_tests!(
    readable_after_write,
    level_reports_again,
    oneshot_once_then_rearm,
    bad_input_kinds,
    register_from_other_thread_during_wait,
    modify_from_other_thread_rearms,
    change_during_wait_never_ends_it_early,
    notify_still_wakes,
    peer_closed_reports,
    more_ready_than_capacity_is_fair,
);

#[test]
fn poll_closed_fd_reports_error() {
    closed_fd_reports_error::<ioloop_sys::Poll>(700);
}

#[test]
fn select_closed_fd_reports_error() {
    closed_fd_reports_error::<ioloop_sys::Select>(800);
}

#[test]
fn select_rejects_fd_at_or_above_fd_setsize() {
    let p = util::poller::<ioloop_sys::Select>();
    let (a, _b) = util::socketpair();
    // FD_SETSIZE is 1024 on most systems, 65 536 on 64-bit illumos.
    let Some(dup) = util::dup_at_least(&a, RawFd::try_from(libc::FD_SETSIZE).unwrap()) else {
        eprintln!("skipped: RLIMIT_NOFILE does not allow fd FD_SETSIZE");
        return;
    };
    let high = dup.0;
    let err = p
        .register(high, 1, Interest::READABLE, Mode::Level)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    // poll has no such limit.
    let p = util::poller::<ioloop_sys::Poll>();
    p.register(high, 1, Interest::WRITABLE, Mode::Level)
        .unwrap();
    let mut events = Events::with_capacity(8);
    assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 1);
    p.deregister(high).unwrap();
    drop(dup); // closes `high`
}
