//! Timeouts: zero does not block, a timed wait never returns early, huge ones do not
//! overflow.

mod util;

use std::time::{Duration, Instant};

use ioloop_sys::{Events, Interest, Mode, Poller, Ready};
use util::{backend_tests, expect_one, fd, register, send};

fn zero_timeout_does_not_block<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    // Nothing registered, nothing notified: a blocking wait would never return.
    for _ in 0..100 {
        assert_eq!(p.wait(&mut ev, Some(Duration::ZERO)).unwrap(), 0);
        assert!(ev.is_empty());
    }
    // A registered fd that is not ready changes nothing.
    let (a, b) = util::socketpair();
    register(&p, fd(&a), 1, Interest::READABLE, Mode::Level);
    assert_eq!(p.wait(&mut ev, Some(Duration::ZERO)).unwrap(), 0);
    // Once it is ready, a zero wait reports it (possibly after a first empty one on backends
    // that learn of readiness asynchronously).
    send(&b, b"x");
    assert!(expect_one(&p, &mut ev, 1).contains(Ready::READABLE));
    let mut seen = false;
    for _ in 0..1000 {
        if p.wait(&mut ev, Some(Duration::ZERO)).unwrap() == 1 {
            assert_eq!(ev.as_slice()[0].token(), 1);
            seen = true;
            break;
        }
    }
    assert!(seen, "{}: a zero wait never reported the ready fd", P::NAME);
}

#[track_caller]
fn assert_full_wait<P: Poller>(p: &P, ev: &mut Events, t: Duration) {
    let start = Instant::now();
    let n = p.wait(ev, Some(t)).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(
        n,
        0,
        "{}: events from nowhere: {:?}",
        P::NAME,
        ev.as_slice()
    );
    assert!(
        elapsed >= t,
        "{}: wait({t:?}) returned after {elapsed:?}",
        P::NAME
    );
}

fn timed_wait_never_returns_early<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let times = [1_000, 5_000, 1_500, 20_000, 1, 999, 10_001].map(Duration::from_micros);
    for t in times {
        assert_full_wait(&p, &mut ev, t);
    }
    // Same with idle registered fds.
    let (a, _b) = util::socketpair();
    let (r, _w) = util::pipe();
    register(&p, fd(&a), 1, Interest::READABLE, Mode::Level);
    register(&p, fd(&r), 2, Interest::READABLE, Mode::Oneshot);
    for t in times {
        assert_full_wait(&p, &mut ev, t);
    }
}

fn sub_millisecond_timeouts_never_early<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    for ns in [1, 500, 999_999, 1_000_001] {
        assert_full_wait(&p, &mut ev, Duration::from_nanos(ns));
    }
}

fn huge_timeout_does_not_overflow<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    // A pending notify makes these return at once; they must neither panic nor fail
    // converting the timeout.
    for t in [
        Duration::MAX,
        Duration::from_secs(u64::from(u32::MAX) * 1000),
        Duration::from_secs(86_400 * 365),
    ] {
        p.notify().unwrap();
        assert_eq!(
            p.wait(&mut ev, Some(t)).unwrap(),
            0,
            "{}: wait({t:?})",
            P::NAME
        );
    }
}

backend_tests!(
    zero_timeout_does_not_block,
    timed_wait_never_returns_early,
    sub_millisecond_timeouts_never_early,
    huge_timeout_does_not_overflow,
);
