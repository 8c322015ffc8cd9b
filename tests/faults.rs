//! Faults the reactor must survive on every backend: fds closed behind its back, panics in
//! handlers, callbacks and timers, handlers and timers that remove each other mid-batch,
//! `stop` misuse, and bad input across the public API (including `Duration::MAX`).
//!
//! The stress side (fd reuse, signal and notifier storms, 15 000 fds) is in `faults_*.rs`;
//! `IOLOOP_STRESS` scales it (see `tests/faults_util`).

mod faults_util;
mod util;

use std::cell::{Cell, RefCell};
use std::io::{self, ErrorKind};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use faults_util::{bump, counter, fd_out_of_the_way, new_loop, raw, run_until_count};
use ioloop::{Interest, IoLoop, Mode, Poller, Ready, TimeoutId};
use util::{assert_kind, backend_tests, drain, send, socketpair};

/// Backends that watch open files and forget an fd when its last reference is closed, so
/// they never report it; the others watch fd numbers and report [`Ready::ERROR`] once.
fn drops_closed_fds_silently<P: Poller>() -> bool {
    matches!(P::NAME, "epoll" | "kqueue")
}

/// A readable pair whose read end has a level-triggered handler that drains it and counts.
fn counted_reader<P: Poller>(lp: &IoLoop<P>) -> (UnixStream, UnixStream, Rc<Cell<usize>>) {
    let (a, b) = socketpair();
    let n = counter();
    let (n2, b2) = (n.clone(), b.try_clone().unwrap());
    lp.add_handler(&b, Interest::READABLE, move |_, _, _| {
        drain(&b2);
        bump(&n2);
    })
    .unwrap();
    (a, b, n)
}

// ----- an fd closed without remove_handler ----------------------------------------------

fn closed_fd_without_remove_neither_spins_nor_fails<P: Poller>() {
    let lp = new_loop::<P>();
    let healthy: Vec<_> = (0..3).map(|_| counted_reader(&lp)).collect();
    let (_peer, victim) = socketpair();
    // Moved to a high number, which stays closed once closed: the kernel gives each new fd
    // the lowest free number, so the other tests of this process, running alongside, would
    // soon reopen a low one (and this test then saw no error for it).
    let vfd = fd_out_of_the_way(victim, 900);
    let calls = Rc::new(RefCell::new(Vec::<Ready>::new()));
    let c = calls.clone();
    lp.add_handler(vfd, Interest::READABLE, move |_, _, r| {
        c.borrow_mut().push(r)
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 4);
    nix::unistd::close(vfd).expect("close");

    // One timer 50 ms away: the loop must sleep until it, not spin on the closed fd.
    let fired = Rc::new(Cell::new(None::<Instant>));
    let f = fired.clone();
    let deadline = lp.time() + Duration::from_millis(50);
    lp.call_at(deadline, move |lp| f.set(Some(lp.time())));
    let iters = run_until_count(&lp, 10, || fired.get().is_some());
    assert!(fired.get().unwrap() >= deadline);
    eprintln!(
        "{}: timer 50 ms away fired after {iters} iterations",
        P::NAME
    );

    if drops_closed_fds_silently::<P>() {
        assert!(
            calls.borrow().is_empty(),
            "{}: {:?}",
            P::NAME,
            calls.borrow()
        );
        // The loop still lists it; removing it is not an error (documented).
        assert_eq!(lp.handler_count(), 4);
        lp.remove_handler(vfd).unwrap();
    } else {
        let calls = calls.borrow();
        assert_eq!(calls.len(), 1, "{}: calls {calls:?}", P::NAME);
        assert!(calls[0].contains(Ready::ERROR), "{}: {calls:?}", P::NAME);
        assert_eq!(lp.handler_count(), 3, "{}: closed fd not removed", P::NAME);
        assert_kind(
            lp.remove_handler(vfd),
            ErrorKind::NotFound,
            "remove after ERROR",
        );
    }
    assert_eq!(lp.handler_count(), 3);

    // The others keep working.
    for (a, _, _) in &healthy {
        send(a, b"x");
    }
    run_until_count(&lp, 20, || healthy.iter().all(|(_, _, n)| n.get() == 1));
    // A second round proves the loop still sleeps and wakes normally.
    for (a, _, _) in &healthy {
        send(a, b"y");
    }
    run_until_count(&lp, 20, || healthy.iter().all(|(_, _, n)| n.get() == 2));
}

/// A Oneshot registration re-armed (`modify`) after its fd was closed without `deregister`:
/// the poller refuses the re-arm (epoll, whose close dropped the registration; kqueue), or
/// takes it and reports the fd as `ERROR` at the next wait (poll and select, whose re-arm is
/// a table entry only: checking the fd there would be a system call per Oneshot wait). Never
/// a silent success with nothing to follow.
fn rearm_of_a_closed_fd_is_refused_or_reported<P: Poller>() {
    let p = util::poller::<P>();
    if !p.supports(Mode::Oneshot) {
        return;
    }
    let (_peer, victim) = socketpair();
    // Above the other closed-fd test's numbers (900), so neither reopens the other's.
    let vfd = fd_out_of_the_way(&victim, 1000);
    drop(victim);
    p.register(vfd, 7, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    nix::unistd::close(vfd).expect("close");
    if p.modify(vfd, 8, Interest::READABLE, Mode::Oneshot).is_ok() {
        let mut events = ioloop_sys::Events::with_capacity(8);
        p.wait(&mut events, Some(faults_util::LONG)).unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.token() == 8 && e.ready().contains(Ready::ERROR)),
            "{}: re-armed a closed fd, and the wait reported {:?}",
            P::NAME,
            events
                .iter()
                .map(|e| (e.token(), e.ready()))
                .collect::<Vec<_>>()
        );
    }
    let _ = p.deregister(vfd);
}

// ----- panics ---------------------------------------------------------------------------

fn handler_panic_mid_batch_loses_nothing<P: Poller>() {
    const N: usize = 8;
    let lp = new_loop::<P>();
    let ran = Rc::new(RefCell::new(vec![0usize; N]));
    let armed = Rc::new(Cell::new(true));
    let mut pairs = Vec::new();
    for i in 0..N {
        let (a, b) = socketpair();
        let (ran, armed) = (ran.clone(), armed.clone());
        // Oneshot: the kernel reports each fd once, so an event the loop dropped after the
        // panic would never come back.
        lp.add_handler_with(&b, Interest::READABLE, Mode::Oneshot, move |_, _, _| {
            ran.borrow_mut()[i] += 1;
            if armed.replace(false) {
                panic!("handler {i} panics on purpose");
            }
        })
        .unwrap();
        send(&a, b"x");
        pairs.push((a, b));
    }
    let timer = counter();
    let t = timer.clone();
    lp.call_later(Duration::ZERO, move |_| bump(&t));

    let res = catch_unwind(AssertUnwindSafe(|| lp.run_once()));
    assert!(res.is_err(), "{}: the panic did not propagate", P::NAME);
    assert!(!lp.is_running());
    assert_eq!(ran.borrow().iter().sum::<usize>(), 1);
    assert_eq!(lp.handler_count(), N, "{}: a handler was lost", P::NAME);
    assert_eq!(lp.timer_count(), 1);

    faults_util::nudge(&lp);
    lp.run_once().unwrap();
    assert_eq!(
        *ran.borrow(),
        vec![1; N],
        "{}: events lost or repeated",
        P::NAME
    );
    assert_eq!(timer.get(), 1);

    // The panicking handler is still registered and can be re-armed.
    let fd0 = raw(&pairs[0].1);
    lp.update_handler_with(fd0, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    faults_util::nudge(&lp);
    run_until_count(&lp, 10, || ran.borrow()[0] == 2);
}

fn callback_and_timer_panics_lose_nothing<P: Poller>() {
    let lp = new_loop::<P>();
    let log = Rc::new(RefCell::new(Vec::<&str>::new()));
    for name in ["cb1", "cb2-panics", "cb3"] {
        let log = log.clone();
        lp.add_callback(move |_| {
            log.borrow_mut().push(name);
            if name.ends_with("panics") {
                panic!("{name}");
            }
        });
    }
    assert!(catch_unwind(AssertUnwindSafe(|| lp.run_once())).is_err());
    faults_util::nudge(&lp);
    lp.run_once().unwrap();
    assert_eq!(*log.borrow(), ["cb1", "cb2-panics", "cb3"]);

    log.borrow_mut().clear();
    let now = lp.time();
    for name in ["t1", "t2-panics", "t3"] {
        let log = log.clone();
        lp.call_at(now, move |_| {
            log.borrow_mut().push(name);
            if name.ends_with("panics") {
                panic!("{name}");
            }
        });
    }
    // A periodic timer that panics on its first tick stays scheduled.
    let ticks = counter();
    let tk = ticks.clone();
    let every = lp
        .call_every(Duration::from_millis(1), move |_| {
            bump(&tk);
            if tk.get() == 1 {
                panic!("first tick");
            }
        })
        .unwrap();
    let mut panics = 0;
    let deadline = Instant::now() + faults_util::LONG;
    while ticks.get() < 3 || log.borrow().len() < 3 {
        assert!(Instant::now() < deadline, "timers lost: {:?}", log.borrow());
        if catch_unwind(AssertUnwindSafe(|| lp.run_once())).is_err() {
            panics += 1;
        }
    }
    assert_eq!(panics, 2);
    assert_eq!(*log.borrow(), ["t1", "t2-panics", "t3"]);
    assert!(lp.remove_timeout(every));
    assert_eq!(lp.timer_count(), 0);
}

// ----- handlers and timers that remove each other ---------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    Orig,
    Removed,
    /// A new handler, added during the given iteration.
    New(u64),
}

fn handlers_remove_and_replace_each_other_in_one_batch<P: Poller>() {
    const N: usize = 16;
    let lp = new_loop::<P>();
    let pairs: Vec<_> = (0..N).map(|_| socketpair()).collect();
    let fds: Rc<Vec<i32>> = Rc::new(pairs.iter().map(|(_, b)| raw(b)).collect());
    let state = Rc::new(RefCell::new(vec![State::Orig; N]));
    let iter = Rc::new(Cell::new(0u64));
    let violations = Rc::new(RefCell::new(Vec::<String>::new()));
    let new_calls = Rc::new(RefCell::new(vec![0usize; N]));
    let drops = counter();

    struct OnDrop(Rc<Cell<usize>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            bump(&self.0);
        }
    }

    for i in 0..N {
        let (fds, state, iter, violations, new_calls) = (
            fds.clone(),
            state.clone(),
            iter.clone(),
            violations.clone(),
            new_calls.clone(),
        );
        let guard = OnDrop(drops.clone());
        lp.add_handler(fds[i], Interest::READABLE, move |lp, fd, _| {
            let _ = &guard;
            if state.borrow()[i] != State::Orig || fd != fds[i] {
                violations
                    .borrow_mut()
                    .push(format!("removed handler {i} ran ({:?})", state.borrow()[i]));
                return;
            }
            let j = (i + 1) % N;
            if state.borrow()[j] == State::Orig {
                lp.remove_handler(fds[j]).unwrap();
                if i % 2 == 0 {
                    // Replace j's handler: the event already collected for j belongs to
                    // the old registration and must not reach the new one.
                    let added = iter.get();
                    let (state2, iter2, v2, nc2) = (
                        state.clone(),
                        iter.clone(),
                        violations.clone(),
                        new_calls.clone(),
                    );
                    lp.add_handler(fds[j], Interest::READABLE, move |_, _, _| {
                        if iter2.get() == added || state2.borrow()[j] != State::New(added) {
                            v2.borrow_mut()
                                .push(format!("new handler {j} got a stale event"));
                        }
                        nc2.borrow_mut()[j] += 1;
                    })
                    .unwrap();
                    state.borrow_mut()[j] = State::New(added);
                } else {
                    state.borrow_mut()[j] = State::Removed;
                    assert_kind(lp.remove_handler(fds[j]), ErrorKind::NotFound, "2nd remove");
                }
            }
            if i % 5 == 0 && state.borrow()[i] == State::Orig {
                lp.remove_handler(fd).unwrap();
                state.borrow_mut()[i] = State::Removed;
            }
        })
        .unwrap();
    }
    for (a, _) in &pairs {
        send(a, b"x");
    }
    for _ in 0..3 {
        iter.set(iter.get() + 1);
        faults_util::nudge(&lp);
        lp.run_once().unwrap();
    }
    assert!(
        violations.borrow().is_empty(),
        "{}: {:?}",
        P::NAME,
        violations.borrow()
    );
    let st = state.borrow().clone();
    let removed = st.iter().filter(|s| **s != State::Orig).count();
    assert!(removed > 0);
    assert_eq!(
        drops.get(),
        removed,
        "{}: removed handlers not dropped",
        P::NAME
    );
    for (j, s) in st.iter().enumerate() {
        if let State::New(_) = s {
            assert!(
                new_calls.borrow()[j] >= 1,
                "{}: new handler {j} never ran",
                P::NAME
            );
        }
    }
    let live = st.iter().filter(|s| **s != State::Removed).count();
    assert_eq!(lp.handler_count(), live);
}

fn a_timer_cancels_the_next_due_timer<P: Poller>() {
    let lp = new_loop::<P>();
    let log = Rc::new(RefCell::new(Vec::<&str>::new()));
    let now = lp.time();
    let id2: Rc<Cell<Option<TimeoutId>>> = Rc::new(Cell::new(None));
    let id1: Rc<Cell<Option<TimeoutId>>> = Rc::new(Cell::new(None));
    let (l, i1, i2) = (log.clone(), id1.clone(), id2.clone());
    id1.set(Some(lp.call_at(now, move |lp| {
        l.borrow_mut().push("t1");
        assert!(
            lp.remove_timeout(i2.get().unwrap()),
            "t2 was due and pending"
        );
        assert!(
            !lp.remove_timeout(i1.get().unwrap()),
            "t1 itself already fired"
        );
    })));
    let l = log.clone();
    id2.set(Some(lp.call_at(now, move |_| l.borrow_mut().push("t2"))));
    let l = log.clone();
    lp.call_at(now, move |_| l.borrow_mut().push("t3"));
    // A periodic timer that cancels itself on its first tick.
    let ticks = counter();
    let me: Rc<Cell<Option<TimeoutId>>> = Rc::new(Cell::new(None));
    let (tk, me2) = (ticks.clone(), me.clone());
    me.set(Some(
        lp.call_every(Duration::from_millis(1), move |lp| {
            bump(&tk);
            assert!(lp.remove_timeout(me2.get().unwrap()));
        })
        .unwrap(),
    ));
    run_until_count(&lp, 1000, || ticks.get() == 1);
    assert_eq!(*log.borrow(), ["t1", "t3"]);
    // Two more timer periods: the cancelled periodic timer does not come back.
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    lp.call_later(Duration::from_millis(3), move |_| d.set(true));
    run_until_count(&lp, 1000, || done.get());
    assert_eq!(ticks.get(), 1);
    assert_eq!(lp.timer_count(), 0);
    assert!(!lp.remove_timeout(id2.get().unwrap()));
}

// ----- stop and run misuse -------------------------------------------------------------

fn stop_twice_and_run_after_stop<P: Poller>() {
    let lp = new_loop::<P>();
    lp.stop();
    lp.stop();
    lp.run().unwrap(); // one iteration, then returns

    // The stop was consumed: the next run goes on until its own stop (called twice too).
    let start = lp.time();
    let at = Rc::new(Cell::new(None::<Instant>));
    let a = at.clone();
    lp.call_later(Duration::from_millis(20), move |lp| {
        a.set(Some(lp.time()));
        lp.stop();
        lp.stop();
    });
    lp.run().unwrap();
    assert!(
        at.get().is_some(),
        "{}: run returned before the timer",
        P::NAME
    );
    assert!(start.elapsed() >= Duration::from_millis(20));

    // Once more, stopped from another thread, twice.
    let h = lp.handle();
    let barrier = Arc::new(Barrier::new(2));
    let b = barrier.clone();
    let t = std::thread::spawn(move || {
        b.wait();
        h.stop().unwrap();
        h.stop().unwrap();
    });
    let ran = counter();
    let r = ran.clone();
    lp.add_callback(move |_| {
        bump(&r);
        barrier.wait();
    });
    lp.run().unwrap();
    t.join().unwrap();
    assert_eq!(ran.get(), 1);

    // A nested run is refused, and does not disturb the outer one.
    let nested = Rc::new(RefCell::new(None::<io::Result<()>>));
    let n = nested.clone();
    lp.add_callback(move |lp| {
        *n.borrow_mut() = Some(lp.run());
        lp.stop();
    });
    lp.run().unwrap();
    assert_kind(
        nested.borrow_mut().take().unwrap(),
        ErrorKind::Other,
        "nested run",
    );
    assert!(!lp.is_running());
}

// ----- bad input -----------------------------------------------------------------------

fn bad_fds_and_double_removal<P: Poller>() {
    let lp = new_loop::<P>();
    for fd in [-1, -2, i32::MIN] {
        assert_kind(
            lp.add_handler(fd, Interest::READABLE, |_, _, _| {}),
            ErrorKind::InvalidInput,
            "add_handler(negative)",
        );
        assert_kind(
            lp.update_handler(fd, Interest::READABLE),
            ErrorKind::InvalidInput,
            "update_handler(negative)",
        );
        assert_kind(
            lp.update_handler_with(fd, Interest::READABLE, Mode::Level),
            ErrorKind::InvalidInput,
            "update_handler_with(negative)",
        );
        assert_kind(
            lp.remove_handler(fd),
            ErrorKind::InvalidInput,
            "remove(negative)",
        );
    }
    // An fd number that is not open (below the fd limit, far above what tests open).
    let closed = 19_990;
    assert!(!ioloop::sys::is_open(closed));
    assert!(lp
        .add_handler(closed, Interest::READABLE, |_, _, _| {})
        .is_err());
    assert_kind(
        lp.remove_handler(closed),
        ErrorKind::NotFound,
        "remove(never added)",
    );
    assert_kind(
        lp.update_handler(closed, Interest::WRITABLE),
        ErrorKind::NotFound,
        "update(never added)",
    );
    assert_eq!(lp.handler_count(), 0);

    let (a, b, n) = counted_reader(&lp);
    assert_kind(
        lp.add_handler(&b, Interest::READABLE, |_, _, _| {}),
        ErrorKind::AlreadyExists,
        "add twice",
    );
    if !lp.poller().supports(Mode::Edge) {
        assert_kind(
            lp.update_handler_with(&b, Interest::READABLE, Mode::Edge),
            ErrorKind::Unsupported,
            "update to Edge",
        );
        let (_c, d) = socketpair();
        assert_kind(
            lp.add_handler_with(&d, Interest::READABLE, Mode::Edge, |_, _, _| {}),
            ErrorKind::Unsupported,
            "add in Edge",
        );
    }
    assert_eq!(lp.handler_count(), 1);
    // After all that, the handler still works.
    send(&a, b"x");
    run_until_count(&lp, 10, || n.get() == 1);
    lp.remove_handler(&b).unwrap();
    assert_kind(lp.remove_handler(&b), ErrorKind::NotFound, "double remove");
    assert_kind(
        lp.update_handler(&b, Interest::READABLE),
        ErrorKind::NotFound,
        "update after remove",
    );
    assert_eq!(lp.handler_count(), 0);
}

fn unknown_timeout_ids_and_extreme_durations<P: Poller>() {
    let lp = new_loop::<P>();
    // Unknown ids: fired, removed twice, from another loop.
    let fired = counter();
    let f = fired.clone();
    let id = lp.call_later(Duration::ZERO, move |_| bump(&f));
    run_until_count(&lp, 10, || fired.get() == 1);
    assert!(!lp.remove_timeout(id), "a fired timer is unknown");
    let id = lp.call_later(Duration::from_secs(3600), |_| {});
    assert!(lp.remove_timeout(id));
    assert!(!lp.remove_timeout(id), "second removal");
    let other = new_loop::<P>();
    for _ in 0..3 {
        other.call_later(Duration::from_secs(3600), |_| {});
    }
    let foreign = other.call_later(Duration::from_secs(3600), |_| {});
    assert!(!lp.remove_timeout(foreign), "an id this loop never issued");
    assert_eq!(lp.timer_count(), 0);

    // Zero and past deadlines run on the next iteration; a zero period is refused.
    let f = fired.clone();
    let past = lp
        .time()
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or_else(|| lp.time());
    lp.call_at(past, move |_| bump(&f));
    run_until_count(&lp, 10, || fired.get() == 2);
    assert_kind(
        lp.call_every(Duration::ZERO, |_| {}),
        ErrorKind::InvalidInput,
        "call_every(0)",
    );

    // Duration::MAX: no overflow, no panic, and the loop still waits (for a notify).
    let far = lp.call_later(Duration::MAX, |_| {
        panic!("a timer Duration::MAX away fired")
    });
    let far_every = lp
        .call_every(Duration::MAX, |_| {
            panic!("a period of Duration::MAX elapsed")
        })
        .unwrap();
    let far_at = lp.call_at(lp.time() + Duration::from_secs(u64::MAX >> 34), |_| {
        panic!("a timer centuries away fired")
    });
    assert_eq!(lp.timer_count(), 3);
    faults_util::nudge(&lp);
    lp.run_once().unwrap();
    let h = lp.handle();
    let barrier = Arc::new(Barrier::new(2));
    let b = barrier.clone();
    let t = std::thread::spawn(move || {
        b.wait();
        h.add_callback(|lp| lp.stop()).unwrap();
    });
    lp.add_callback(move |_| {
        barrier.wait();
    });
    lp.run().unwrap(); // blocked with only far timers pending until the other thread's stop
    t.join().unwrap();
    assert!(lp.remove_timeout(far));
    assert!(lp.remove_timeout(far_every));
    assert!(lp.remove_timeout(far_at));

    // A handle outliving its loop: queuing is refused (`NotConnected`), the callback dropped.
    let h = lp.handle();
    drop(lp);
    let err = h
        .add_callback(|_| panic!("ran after the loop was dropped"))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected);
    h.stop().unwrap();
}

fn poller_wait_with_huge_timeouts_ends_on_notify<P: Poller>() {
    let p = Arc::new(util::poller::<P>());
    let mut events = ioloop::sys::Events::with_capacity(8);
    for timeout in [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(i64::MAX as u64),
        Duration::from_secs(u64::from(u32::MAX) + 1),
        Duration::new(u64::from(u32::MAX), 999_999_999),
    ] {
        let barrier = Arc::new(Barrier::new(2));
        let (b, n) = (barrier.clone(), p.notifier());
        let t = std::thread::spawn(move || {
            b.wait();
            n.notify().unwrap();
        });
        barrier.wait();
        match p.wait(&mut events, Some(timeout)) {
            Ok(0) => {}
            other => panic!("{}: wait(Some({timeout:?})): {other:?}", P::NAME),
        }
        t.join().unwrap();
    }
}

backend_tests!(
    rearm_of_a_closed_fd_is_refused_or_reported,
    closed_fd_without_remove_neither_spins_nor_fails,
    handler_panic_mid_batch_loses_nothing,
    callback_and_timer_panics_lose_nothing,
    handlers_remove_and_replace_each_other_in_one_batch,
    a_timer_cancels_the_next_due_timer,
    stop_twice_and_run_after_stop,
    bad_fds_and_double_removal,
    unknown_timeout_ids_and_extreme_durations,
    poller_wait_with_huge_timeouts_ends_on_notify,
);
