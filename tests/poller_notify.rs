//! The notifier: a notify from another thread wakes a blocked wait; many notifies coalesce
//! into one wake-up and hold no extra resources.

mod util;

use std::sync::{Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use ioloop_sys::{Events, Poller};
use util::backend_tests;

/// The tests of this file count the process's open fds; the lock keeps them from running
/// at the same time (the harness runs tests on several threads).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn notify_wakes_blocked_wait<P: Poller>() {
    let _g = serial();
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let notifier = p.notifier();
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let t = s.spawn(|| {
            barrier.wait();
            notifier.notify().unwrap();
        });
        barrier.wait();
        // Without the wake-up this never returns (and the test times out).
        assert_eq!(p.wait(&mut ev, None).unwrap(), 0);
        t.join().unwrap();
    });
}

fn poller_notify_wakes_blocked_wait<P: Poller>() {
    let _g = serial();
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            p.notify().unwrap();
        });
        barrier.wait();
        assert_eq!(p.wait(&mut ev, None).unwrap(), 0);
    });
}

fn notify_wakes_repeatedly<P: Poller>() {
    let _g = serial();
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let notifier = p.notifier();
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..100 {
                barrier.wait();
                notifier.clone().notify().unwrap();
                // Wait until the waiter consumed it before the next round.
                barrier.wait();
            }
        });
        for _ in 0..100 {
            barrier.wait();
            assert_eq!(p.wait(&mut ev, None).unwrap(), 0);
            barrier.wait();
        }
    });
}

fn notifies_coalesce<P: Poller>() {
    let _g = serial();
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let notifier = p.notifier();
    let before = util::open_fds();
    for _ in 0..100_000 {
        notifier.notify().unwrap();
    }
    for _ in 0..1000 {
        p.notify().unwrap();
    }
    assert_eq!(util::open_fds(), before, "{}: notify opened fds", P::NAME);

    // One wake-up: the first wait returns with nothing (long before its timeout)...
    let long = Duration::from_secs(30);
    let start = Instant::now();
    assert_eq!(p.wait(&mut ev, Some(long)).unwrap(), 0);
    assert!(
        start.elapsed() < long,
        "{}: the pending notify did not wake the wait",
        P::NAME
    );
    // ...and it consumed all of them: the next wait runs its full timeout.
    let t = Duration::from_millis(20);
    let start = Instant::now();
    assert_eq!(p.wait(&mut ev, Some(t)).unwrap(), 0);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= t,
        "{}: second wait ended after {elapsed:?}: leftover wake-up",
        P::NAME
    );
    assert_eq!(util::open_fds(), before, "{}: fds after the waits", P::NAME);
}

fn notify_after_consumed_wakes_again<P: Poller>() {
    let _g = serial();
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    for _ in 0..3 {
        p.notify().unwrap();
        p.notify().unwrap();
        assert_eq!(p.wait(&mut ev, Some(Duration::from_secs(30))).unwrap(), 0);
        let start = Instant::now();
        assert_eq!(p.wait(&mut ev, Some(Duration::from_millis(5))).unwrap(), 0);
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}

fn pollers_do_not_leak_fds<P: Poller>() {
    let _g = serial();
    let before = util::open_fds();
    for _ in 0..50 {
        let p = util::poller::<P>();
        let n = p.notifier();
        n.notify().unwrap();
        drop(p);
        // A notifier that outlives its poller stays harmless.
        let _ = n.notify();
    }
    assert_eq!(
        util::open_fds(),
        before,
        "{}: fds leaked by new/drop",
        P::NAME
    );
}

backend_tests!(
    notify_wakes_blocked_wait,
    poller_notify_wakes_blocked_wait,
    notify_wakes_repeatedly,
    notifies_coalesce,
    notify_after_consumed_wakes_again,
    pollers_do_not_leak_fds,
);
