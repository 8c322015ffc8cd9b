//! Smoke tests of the io_uring backend on its own (the shared per-backend suites run it too).
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use ioloop_sys::{Events, Interest, Mode, Poller, Ready, Uring, RESERVED_TOKEN};

const LONG: Duration = Duration::from_secs(10);

/// The fd count is process-wide: tests that compare it hold this exclusively, every other
/// test (they all open fds) holds it shared.
static FD_COUNT: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    FD_COUNT.read().unwrap_or_else(|p| p.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    FD_COUNT.write().unwrap_or_else(|p| p.into_inner())
}

/// How many io_uring, eventfd and socket fds this process has open: the kinds this backend
/// and these tests create (a plain count would also see files other code opens briefly).
fn ring_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| {
            let t = target.to_string_lossy();
            t.contains("io_uring") || t.contains("eventfd") || t.starts_with("socket:")
        })
        .count()
}

fn uring() -> Uring {
    util::poller::<Uring>()
}

#[track_caller]
fn wait_one(p: &Uring, events: &mut Events, timeout: Duration) -> (u64, Ready) {
    let n = p.wait(events, Some(timeout)).unwrap();
    assert_eq!(n, 1, "expected one event, got {:?}", events.as_slice());
    let ev = events.iter().next().unwrap();
    (ev.token(), ev.ready())
}

#[test]
fn readable_after_write() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = uring();
    let (a, mut b) = util::socketpair();
    p.register(a.as_raw_fd(), 7, Interest::READABLE, Mode::Level)
        .unwrap();
    let mut events = Events::with_capacity(8);
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    b.write_all(b"x").unwrap();
    let (token, ready) = wait_one(&p, &mut events, LONG);
    assert_eq!(token, 7);
    assert!(ready.contains(Ready::READABLE));
    p.deregister(a.as_raw_fd()).unwrap();
}

#[test]
fn writable_both_interests() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = uring();
    let (a, _b) = util::socketpair();
    p.register(
        a.as_raw_fd(),
        3,
        Interest::READABLE | Interest::WRITABLE,
        Mode::Level,
    )
    .unwrap();
    let mut events = Events::with_capacity(8);
    let (token, ready) = wait_one(&p, &mut events, LONG);
    assert_eq!(token, 3);
    assert_eq!(ready, Ready::WRITABLE);
}

#[test]
fn level_reports_again_while_undrained() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = uring();
    let (mut a, mut b) = util::socketpair();
    p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)
        .unwrap();
    b.write_all(b"xy").unwrap();
    let mut events = Events::with_capacity(8);
    for _ in 0..5 {
        assert_eq!(wait_one(&p, &mut events, LONG).0, 1);
    }
    // Also with a zero timeout: the re-armed poll completes within the same call.
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 1);
    let mut buf = [0u8; 8];
    assert_eq!(a.read(&mut buf).unwrap(), 2);
    // Drained: the next timed wait reports nothing (and lasts its full time).
    let t = Duration::from_millis(20);
    let start = Instant::now();
    assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
    assert!(start.elapsed() >= t);
    b.write_all(b"z").unwrap();
    assert_eq!(wait_one(&p, &mut events, LONG).0, 1);
}

#[test]
fn oneshot_once_then_modify_rearms() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = uring();
    let (a, mut b) = util::socketpair();
    p.register(a.as_raw_fd(), 5, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    b.write_all(b"x").unwrap();
    let mut events = Events::with_capacity(8);
    assert_eq!(wait_one(&p, &mut events, LONG).0, 5);
    // Still readable, but disarmed.
    let t = Duration::from_millis(20);
    assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    p.modify(a.as_raw_fd(), 6, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    assert_eq!(wait_one(&p, &mut events, LONG).0, 6);
    assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
    // modify to Level: reported on every wait.
    p.modify(a.as_raw_fd(), 8, Interest::READABLE, Mode::Level)
        .unwrap();
    assert_eq!(wait_one(&p, &mut events, LONG).0, 8);
    assert_eq!(wait_one(&p, &mut events, LONG).0, 8);
    p.deregister(a.as_raw_fd()).unwrap();
    assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
}

#[test]
fn modify_changes_token_without_stale_events() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = uring();
    let (a, mut b) = util::socketpair();
    p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)
        .unwrap();
    b.write_all(b"x").unwrap();
    let mut events = Events::with_capacity(8);
    assert_eq!(wait_one(&p, &mut events, LONG).0, 1);
    // The re-armed poll (token 1) is queued; modify replaces it.
    p.modify(a.as_raw_fd(), 2, Interest::READABLE, Mode::Level)
        .unwrap();
    for _ in 0..3 {
        assert_eq!(wait_one(&p, &mut events, LONG).0, 2);
    }
}

#[test]
fn hup_when_peer_closes() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = uring();
    let (a, b) = util::socketpair();
    p.register(a.as_raw_fd(), 9, Interest::READABLE, Mode::Level)
        .unwrap();
    drop(b);
    let mut events = Events::with_capacity(8);
    let (token, ready) = wait_one(&p, &mut events, LONG);
    assert_eq!(token, 9);
    assert!(ready.contains(Ready::HUP), "{ready:?}");
}

#[test]
fn bad_input_kinds() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    use std::io::ErrorKind::*;
    let p = uring();
    let (a, _b) = util::socketpair();
    let fd = a.as_raw_fd();
    let kind = |r: std::io::Result<()>| r.unwrap_err().kind();
    assert_eq!(
        kind(p.register(-1, 1, Interest::READABLE, Mode::Level)),
        InvalidInput
    );
    assert_eq!(
        kind(p.register(fd, RESERVED_TOKEN, Interest::READABLE, Mode::Level)),
        InvalidInput
    );
    // Edge is a multishot poll: Linux 5.13+, which every kernel this suite runs on has.
    assert!(p.supports(Mode::Edge), "multishot poll (Linux 5.13+)");
    assert!(p.supports(Mode::Level) && p.supports(Mode::Oneshot));
    assert_eq!(
        kind(p.modify(fd, 1, Interest::READABLE, Mode::Level)),
        NotFound
    );
    assert_eq!(kind(p.deregister(fd)), NotFound);
    assert_eq!(kind(p.deregister(-1)), InvalidInput);
    p.register(fd, 1, Interest::READABLE, Mode::Level).unwrap();
    assert_eq!(
        kind(p.register(fd, 2, Interest::READABLE, Mode::Level)),
        AlreadyExists
    );
    p.modify(fd, 1, Interest::READABLE, Mode::Edge).unwrap();
    assert_eq!(
        kind(p.register(fd, 2, Interest::READABLE, Mode::Edge)),
        AlreadyExists
    );
    p.deregister(fd).unwrap();
    assert_eq!(kind(p.deregister(fd)), NotFound);
    // An fd that is not open is EBADF at registration, as on epoll. (Not a just-closed fd:
    // a test running in parallel could reuse its number.)
    let closed = 1 << 29;
    let err = p
        .register(closed, 1, Interest::READABLE, Mode::Level)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));
}

#[test]
fn notify_from_another_thread_wakes_blocked_wait() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = uring();
    let notifier = p.notifier();
    let barrier = Arc::new(Barrier::new(2));
    let b2 = Arc::clone(&barrier);
    let t = thread::spawn(move || {
        b2.wait();
        notifier.notify().unwrap();
    });
    barrier.wait();
    let mut events = Events::with_capacity(8);
    assert_eq!(p.wait(&mut events, None).unwrap(), 0);
    t.join().unwrap();
    // The wake-up was consumed: the next timed wait lasts its full time.
    let t = Duration::from_millis(10);
    let start = Instant::now();
    assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
    assert!(start.elapsed() >= t);
    // Many notifies coalesce into (at most) one wake-up.
    for _ in 0..1000 {
        p.notify().unwrap();
    }
    assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 0);
    let start = Instant::now();
    assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
    assert!(start.elapsed() >= t);
}

#[test]
fn register_from_another_thread_during_blocked_wait() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = Arc::new(uring());
    let (a, mut b) = util::socketpair();
    b.write_all(b"x").unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let (p2, b2) = (Arc::clone(&p), Arc::clone(&barrier));
    let fd = a.as_raw_fd();
    let t = thread::spawn(move || {
        b2.wait();
        p2.register(fd, 42, Interest::READABLE, Mode::Oneshot)
            .unwrap();
    });
    barrier.wait();
    let mut events = Events::with_capacity(8);
    // No timeout: only the other thread's registration can end this wait.
    assert_eq!(p.wait(&mut events, None).unwrap(), 1);
    assert_eq!(events.as_slice()[0].token(), 42);
    t.join().unwrap();
}

#[test]
fn write_from_another_thread_after_register_from_it() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    // The poll is armed by a thread that has exited when the fd becomes ready.
    let p = Arc::new(uring());
    let (a, mut b) = util::socketpair();
    let p2 = Arc::clone(&p);
    let fd = a.as_raw_fd();
    thread::spawn(move || p2.register(fd, 4, Interest::READABLE, Mode::Level).unwrap())
        .join()
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let b2 = Arc::clone(&barrier);
    let t = thread::spawn(move || {
        b2.wait();
        b.write_all(b"x").unwrap();
        b
    });
    barrier.wait();
    let mut events = Events::with_capacity(8);
    assert_eq!(p.wait(&mut events, None).unwrap(), 1);
    assert_eq!(events.as_slice()[0].token(), 4);
    drop(t.join().unwrap());
}

#[test]
fn deregister_from_another_thread_during_blocked_wait() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = Arc::new(uring());
    let (a, _b) = util::socketpair();
    p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let (p2, b2) = (Arc::clone(&p), Arc::clone(&barrier));
    let fd = a.as_raw_fd();
    let t = thread::spawn(move || {
        b2.wait();
        p2.deregister(fd).unwrap();
        p2.notify().unwrap();
    });
    barrier.wait();
    let mut events = Events::with_capacity(8);
    // Ends by the notify; the cancelled poll is not reported.
    assert_eq!(p.wait(&mut events, None).unwrap(), 0);
    t.join().unwrap();
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
}

#[test]
fn timed_wait_never_returns_early() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = uring();
    let mut events = Events::with_capacity(8);
    for ms in [1u64, 5, 15, 30] {
        let t = Duration::from_millis(ms);
        let start = Instant::now();
        assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
        let elapsed = start.elapsed();
        assert!(elapsed >= t, "waited {elapsed:?} < {t:?}");
    }
    let t = Duration::from_micros(300);
    let start = Instant::now();
    assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
    assert!(start.elapsed() >= t);
}

#[test]
fn events_capacity_leaves_the_rest_for_the_next_wait() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = shared();
    let p = uring();
    let pairs: Vec<_> = (0..5).map(|_| util::socketpair()).collect();
    for (i, (a, b)) in pairs.iter().enumerate() {
        p.register(a.as_raw_fd(), i as u64, Interest::READABLE, Mode::Oneshot)
            .unwrap();
        (&*b).write_all(b"x").unwrap();
    }
    let mut events = Events::with_capacity(2);
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let n = p.wait(&mut events, Some(LONG)).unwrap();
        assert!((1..=2).contains(&n));
        seen.extend(events.iter().map(|e| e.token()));
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
}

#[test]
fn many_register_deregister_cycles_leak_nothing() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = exclusive();
    let p = uring();
    let (a, mut b) = util::socketpair();
    let fd = a.as_raw_fd();
    let before = ring_fds();
    let mut events = Events::with_capacity(16);
    for i in 0..10_000u64 {
        let mode = if i % 2 == 0 {
            Mode::Level
        } else {
            Mode::Oneshot
        };
        p.register(fd, i, Interest::READABLE | Interest::WRITABLE, mode)
            .unwrap();
        if i % 1000 == 0 {
            // Sometimes a wait in between (writable: it reports).
            assert!(p.wait(&mut events, Some(LONG)).unwrap() >= 1);
        }
        p.deregister(fd).unwrap();
    }
    // Nothing is left in the table: the fd is free to register again, and unknown after.
    assert_eq!(
        p.deregister(fd).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    assert_eq!(ring_fds(), before);
    // Still working afterwards.
    p.register(fd, 77, Interest::READABLE, Mode::Level).unwrap();
    b.write_all(b"x").unwrap();
    assert_eq!(wait_one(&p, &mut events, LONG).0, 77);
}

#[test]
fn drop_closes_every_fd() {
    if util::uring_unavailable() {
        return;
    }
    let _fds = exclusive();
    let before = ring_fds();
    for _ in 0..50 {
        let p = uring();
        let (a, _b) = util::socketpair();
        p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)
            .unwrap();
        drop(p);
    }
    assert_eq!(ring_fds(), before);
}
