//! Timers: deadline order, FIFO ties, cancellation, periodic callbacks, never early.
//!
//! Timers need no fds, so most tests run on the default poller; `timers_fire_on_every_backend`
//! checks each backend's wait timeout.

mod util;

use std::cell::{Cell, RefCell};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ioloop::{Interest, IoLoop, Poller, TimeoutId};
use util::{backend_loop, backend_tests, bump, counter, err_kind, socketpair, turn};

const MS: Duration = Duration::from_millis(1);

fn new_loop() -> IoLoop {
    IoLoop::new().expect("IoLoop::new")
}

#[test]
fn timers_fire_in_deadline_order() {
    let lp = new_loop();
    let log = Rc::new(RefCell::new(Vec::new()));
    for (delay, tag) in [(30, 3), (10, 1), (20, 2), (0, 0)] {
        let log = log.clone();
        lp.call_later(delay * MS, move |_| log.borrow_mut().push(tag));
    }
    let log2 = log.clone();
    let base = Instant::now();
    lp.call_at(base + 15 * MS, move |_| log2.borrow_mut().push(15));
    lp.run_until(|_| log.borrow().len() == 5).unwrap();
    assert_eq!(*log.borrow(), [0, 1, 15, 2, 3]);
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn equal_deadlines_fire_in_insertion_order() {
    let lp = new_loop();
    let log = Rc::new(RefCell::new(Vec::new()));
    let at = Instant::now() + 2 * MS;
    for i in 0..20 {
        let log = log.clone();
        lp.call_at(at, move |_| log.borrow_mut().push(i));
    }
    // A later deadline added first still comes last.
    let l = log.clone();
    lp.call_at(at + MS, move |_| l.borrow_mut().push(99));
    lp.run_until(|_| log.borrow().len() == 21).unwrap();
    let want: Vec<i32> = (0..20).chain([99]).collect();
    assert_eq!(*log.borrow(), want);
}

#[test]
fn remove_timeout_before_after_and_twice() {
    let lp = new_loop();
    let removed = lp.call_later(MS, |_| panic!("a removed timer fired"));
    assert_eq!(lp.timer_count(), 1);
    assert!(lp.remove_timeout(removed), "pending timer");
    assert!(!lp.remove_timeout(removed), "second removal");
    assert_eq!(lp.timer_count(), 0);

    let fired = counter();
    let f = fired.clone();
    let done = lp.call_later(5 * MS, move |_| bump(&f));
    lp.run_until(|_| fired.get() == 1).unwrap();
    assert!(!lp.remove_timeout(done), "a timer that fired");
    // The removed one (due 1 ms in) would have fired by now.
    assert_eq!(lp.timer_count(), 0);

    // An id this loop never issued (from another loop with more timers).
    let other = new_loop();
    let foreign: Vec<TimeoutId> = (0..10)
        .map(|_| other.call_later(Duration::from_secs(60), |_| {}))
        .collect();
    assert!(!lp.remove_timeout(foreign[9]));
    // Slot reuse does not revive old ids.
    let a = lp.call_later(Duration::from_secs(60), |_| {});
    assert!(lp.remove_timeout(a));
    let b = lp.call_later(Duration::from_secs(60), |_| {});
    assert_ne!(a, b);
    assert!(
        !lp.remove_timeout(a),
        "an old id removed the timer now in its slot"
    );
    assert!(lp.remove_timeout(b));
}

#[test]
fn a_timer_cancels_the_next_due_timers() {
    let lp = new_loop();
    let log = Rc::new(RefCell::new(Vec::new()));
    let victims: Rc<RefCell<Vec<TimeoutId>>> = Rc::default();
    let results = Rc::new(RefCell::new(Vec::new()));
    let base = Instant::now();
    {
        let (log, victims, results) = (log.clone(), victims.clone(), results.clone());
        lp.call_at(base, move |lp| {
            log.borrow_mut().push("first");
            for id in victims.borrow().iter() {
                results.borrow_mut().push(lp.remove_timeout(*id));
            }
        });
    }
    // Same deadline (FIFO: after "first") and a later one that is due by the time timers
    // run: all three are in the same batch.
    let l = log.clone();
    victims
        .borrow_mut()
        .push(lp.call_at(base, move |_| l.borrow_mut().push("tie")));
    let l = log.clone();
    let later = Instant::now();
    victims
        .borrow_mut()
        .push(lp.call_at(later, move |_| l.borrow_mut().push("later")));
    let l = log.clone();
    lp.call_at(later, move |_| l.borrow_mut().push("last"));
    lp.run_until(|_| log.borrow().contains(&"last")).unwrap();
    assert_eq!(*log.borrow(), ["first", "last"]);
    assert_eq!(*results.borrow(), [true, true]);
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn periodic_is_never_early_and_never_bursts() {
    let lp = new_loop();
    let period = MS;
    let start = Instant::now();
    let times = Rc::new(RefCell::new(Vec::new()));
    let t = times.clone();
    let every = lp
        .call_every(period, move |lp| t.borrow_mut().push(lp.time()))
        .unwrap();
    let at_stop = Rc::new(Cell::new(None));
    let (t, s) = (times.clone(), at_stop.clone());
    lp.call_later(50 * MS, move |lp| {
        s.set(Some(t.borrow().len()));
        assert!(lp.remove_timeout(every));
        lp.stop();
    });
    lp.run().unwrap();
    let ticks = at_stop.get().expect("stopper did not run");
    // Never more ticks than periods elapsed: the k-th tick is at or after start + k periods.
    assert!((1..=50).contains(&ticks), "{ticks} ticks in 50 periods");
    for (k, at) in times.borrow().iter().enumerate() {
        let k = u32::try_from(k + 1).unwrap();
        assert!(
            *at >= start + period * k,
            "tick {k} early by {:?}",
            (start + period * k) - *at
        );
    }
    assert_eq!(times.borrow().len(), ticks);
    assert!(!lp.remove_timeout(every));
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn periodic_skips_ticks_missed_in_a_stall() {
    let lp = new_loop();
    let period = MS;
    let times = Rc::new(RefCell::new(Vec::new()));
    let t = times.clone();
    let every = lp
        .call_every(period, move |lp| {
            t.borrow_mut().push(lp.time());
            if t.borrow().len() == 3 {
                // Stall the loop for 20 periods.
                let until = lp.time() + 20 * period;
                while Instant::now() < until {
                    std::thread::sleep(until - Instant::now());
                }
            }
        })
        .unwrap();
    let ticks = Rc::new(Cell::new(0));
    let (t, n) = (times.clone(), ticks.clone());
    lp.call_later(50 * MS, move |lp| {
        n.set(t.borrow().len());
        lp.remove_timeout(every);
        lp.stop();
    });
    lp.run().unwrap();
    // The deadlines that fell inside the stall get one late tick, the rest are skipped:
    // about 50 - 20 + 1 ticks in 50 ms, where catching up would run about 50. (A bound on
    // the count only from above: a thread descheduled for a while runs fewer ticks, never
    // more, so this holds on a loaded machine too.)
    let n = ticks.get();
    assert!(n <= 40, "{n} ticks: the missed ones ran in a burst");
    let times = times.borrow();
    assert!(times.windows(2).all(|w| w[1] > w[0]));
}

#[test]
fn periodic_cancelled_from_inside_itself() {
    let lp = new_loop();
    let id = Rc::new(Cell::new(None::<TimeoutId>));
    let ticks = counter();
    let removed = Rc::new(Cell::new(None));
    let (i, t, r) = (id.clone(), ticks.clone(), removed.clone());
    let every = lp
        .call_every(MS, move |lp| {
            bump(&t);
            if t.get() == 3 {
                r.set(Some(lp.remove_timeout(i.get().unwrap())));
                // Timers added from inside still work.
                lp.call_later(MS, |lp| lp.stop());
            }
        })
        .unwrap();
    id.set(Some(every));
    lp.run().unwrap();
    assert_eq!(removed.get(), Some(true));
    assert_eq!(ticks.get(), 3);
    assert_eq!(lp.timer_count(), 0);
    assert!(!lp.remove_timeout(every));
    lp.call_later(5 * MS, |lp| lp.stop());
    lp.run().unwrap();
    assert_eq!(ticks.get(), 3, "the cancelled periodic ran again");
}

/// Cancels a timer when dropped, as a `Sleep` or an RAII guard does.
struct Cancel(IoLoop, TimeoutId, Rc<Cell<bool>>);

impl Drop for Cancel {
    fn drop(&mut self) {
        self.2.set(self.0.remove_timeout(self.1));
    }
}

/// A timer's callback is dropped with nothing of the loop borrowed, so what it captured may
/// use the loop's timers as it goes: a one-shot timer cancelled by `remove_timeout`, and a
/// periodic one that cancels itself, each owning a guard that cancels another timer. (The
/// guard's `remove_timeout` panicked with "already borrowed" inside the first, and left the
/// queue miscounted.)
#[test]
fn a_dropped_timer_callback_may_cancel_timers() {
    let lp = new_loop();
    let other = lp.call_later(Duration::from_secs(3600), |_| panic!("cancelled"));
    let cancelled = Rc::new(Cell::new(false));
    let guard = Cancel(lp.clone(), other, cancelled.clone());
    let owner = lp.call_later(Duration::from_secs(3600), move |_| drop(guard));
    assert!(lp.remove_timeout(owner));
    assert!(
        cancelled.get(),
        "the guard's remove_timeout found the other timer"
    );
    assert_eq!(lp.timer_count(), 0);
    assert!(!lp.remove_timeout(other));

    // A periodic timer that removes itself, holding a guard for another timer.
    let other = lp.call_later(Duration::from_secs(3600), |_| panic!("cancelled"));
    let cancelled = Rc::new(Cell::new(false));
    let guard = Cancel(lp.clone(), other, cancelled.clone());
    let me = Rc::new(Cell::new(None::<TimeoutId>));
    let m = me.clone();
    let id = lp
        .call_every(MS, move |lp| {
            let _keep = &guard;
            lp.remove_timeout(m.get().expect("id"));
        })
        .unwrap();
    me.set(Some(id));
    lp.run_until(|lp| lp.timer_count() == 0).unwrap();
    assert!(
        cancelled.get(),
        "the guard's remove_timeout found the other timer"
    );
    assert!(!lp.remove_timeout(other));
    assert!(!lp.remove_timeout(id));
    assert!(lp.timer_queue_len() <= 2);
    // The queue is consistent: a new timer fires.
    let fired = counter();
    let f = fired.clone();
    lp.call_later(Duration::ZERO, move |_| bump(&f));
    lp.run_until(|_| fired.get() == 1).unwrap();
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn zero_period_is_invalid_input() {
    let lp = new_loop();
    assert_eq!(
        err_kind(lp.call_every(Duration::ZERO, |_| {})),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn huge_delays_do_not_overflow() {
    let lp = new_loop();
    let never = lp.call_later(Duration::MAX, |_| panic!("Duration::MAX timer fired"));
    let every = lp
        .call_every(Duration::MAX, |_| panic!("Duration::MAX periodic fired"))
        .unwrap();
    let fired = counter();
    let f = fired.clone();
    lp.call_later(MS, move |_| bump(&f));
    lp.run_until(|_| fired.get() == 1).unwrap();
    turn(&lp);
    assert_eq!(lp.timer_count(), 2);
    assert!(lp.remove_timeout(never));
    assert!(lp.remove_timeout(every));
}

#[test]
fn cancelled_timers_do_not_pile_up() {
    let lp = new_loop();
    let far = Duration::from_secs(3600);
    let live: Vec<TimeoutId> = (0..10).map(|_| lp.call_later(far, |_| {})).collect();
    for _ in 0..100_000 {
        let id = lp.call_later(far, |_| {});
        assert!(lp.remove_timeout(id));
    }
    let bound = 2 * live.len() + 200;
    assert_eq!(lp.timer_count(), 10);
    assert!(
        lp.timer_queue_len() <= bound,
        "{} queue entries for 10 live timers",
        lp.timer_queue_len()
    );
    // In batches, cancelled in reverse, with iterations in between.
    for _ in 0..100 {
        let ids: Vec<TimeoutId> = (0..1000).map(|_| lp.call_later(far, |_| {})).collect();
        for id in ids.into_iter().rev() {
            assert!(lp.remove_timeout(id));
        }
        turn(&lp);
    }
    assert_eq!(lp.timer_count(), 10);
    assert!(
        lp.timer_queue_len() <= bound,
        "{} queue entries",
        lp.timer_queue_len()
    );
    for id in live {
        assert!(lp.remove_timeout(id));
    }
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn timers_never_fire_early() {
    let lp = new_loop();
    let fired = counter();
    for d in [0, 1, 2, 3, 7, 15] {
        let d = d * MS + Duration::from_micros(250);
        let scheduled = Instant::now();
        let f = fired.clone();
        lp.call_later(d, move |lp| {
            let late = lp.time();
            assert!(
                late >= scheduled + d,
                "fired {:?} early",
                scheduled + d - late
            );
            bump(&f);
        });
        let at = Instant::now() + d;
        let f = fired.clone();
        lp.call_at(at, move |lp| {
            assert!(lp.time() >= at, "call_at fired early");
            bump(&f);
        });
    }
    lp.run_until(|_| fired.get() == 12).unwrap();
}

#[test]
fn panicking_timer_leaves_the_others_pending() {
    let lp = new_loop();
    lp.call_later(Duration::ZERO, |_| {
        panic!("timer panic (expected by the test)")
    });
    let after = counter();
    let a = after.clone();
    lp.call_later(Duration::ZERO, move |_| bump(&a));
    let ticks = counter();
    let t = ticks.clone();
    let every = lp.call_every(MS, move |_| bump(&t)).unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| lp.run())).is_err());
    assert!(!lp.is_running());
    assert_eq!(after.get(), 0);
    assert_eq!(lp.timer_count(), 2, "timers lost to the panic");
    lp.run_until(|_| after.get() == 1 && ticks.get() >= 2)
        .unwrap();
    assert!(lp.remove_timeout(every));

    // A periodic that panics stays scheduled and can still be removed.
    let n = counter();
    let c = n.clone();
    let bad = lp
        .call_every(MS, move |_| {
            bump(&c);
            if c.get() == 1 {
                panic!("periodic panic (expected by the test)");
            }
        })
        .unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| lp.run())).is_err());
    assert_eq!(lp.timer_count(), 1);
    lp.run_until(|_| n.get() >= 3).unwrap();
    assert!(lp.remove_timeout(bad));
}

/// Every backend gets the wait timeout right: one iteration waits until the earliest timer
/// (so it fires in that same iteration), never returns before it, and sub-millisecond delays
/// are not rounded down.
#[test]
fn timeout_ids_belong_to_their_loop() {
    let a = new_loop();
    let b = new_loop();
    let fired = counter();
    let f = fired.clone();
    let id = a.call_later(Duration::from_millis(1), move |_| bump(&f));
    // Same slot and generation in loop `b`: still not `b`'s timer.
    let other = b.call_later(Duration::from_secs(3600), |_| {});
    assert!(!b.remove_timeout(id), "a's id cancelled b's timer");
    assert_eq!(b.timer_count(), 1);
    assert!(b.remove_timeout(other));
    a.run_until(|_| fired.get() == 1).unwrap();
    assert_eq!(fired.get(), 1);
}

#[test]
fn run_until_sees_a_condition_set_by_a_callback() {
    let lp = new_loop();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    lp.add_callback(move |_| d.set(true));
    // Nothing else is pending: the loop must not go on to wait with no timeout.
    lp.run_until(|_| done.get()).unwrap();
    assert!(done.get());
}

#[test]
fn stop_inside_run_once_does_not_leak_into_the_next_run() {
    let lp = new_loop();
    lp.add_callback(|lp| lp.stop());
    lp.run_once().unwrap();
    let fired = counter();
    let f = fired.clone();
    lp.call_later(Duration::from_millis(2), move |_| bump(&f));
    // With the stop left over, this would return after one iteration, before the timer.
    lp.run_until(|_| fired.get() == 1).unwrap();
    assert_eq!(fired.get(), 1);
}

fn timers_fire_on_every_backend<P: Poller>() {
    let lp = backend_loop::<P>();
    // An idle fd, so the backend has something registered while it waits.
    let (idle, _peer) = socketpair();
    lp.add_handler(&idle, Interest::READABLE, |_, _, r| {
        panic!("idle fd reported {r:?}")
    })
    .unwrap();
    for d in [
        10 * MS,
        Duration::from_micros(1500),
        Duration::from_micros(300),
    ] {
        let fired = Rc::new(Cell::new(None));
        let f = fired.clone();
        let scheduled = Instant::now();
        lp.call_later(d, move |lp| f.set(Some(lp.time())));
        lp.run_once().unwrap();
        let at = fired
            .get()
            .unwrap_or_else(|| panic!("{}: the wait for a {d:?} timer returned early", P::NAME));
        assert!(at >= scheduled + d, "{}: {d:?} timer early", P::NAME);
    }
    let start = Instant::now();
    let times = Rc::new(RefCell::new(Vec::new()));
    let t = times.clone();
    let every = lp
        .call_every(2 * MS, move |lp| t.borrow_mut().push(lp.time()))
        .unwrap();
    lp.run_until(|_| times.borrow().len() == 3).unwrap();
    for (k, at) in times.borrow().iter().enumerate() {
        let k = u32::try_from(k + 1).unwrap();
        assert!(*at >= start + 2 * MS * k, "{}: tick {k} early", P::NAME);
    }
    assert!(lp.remove_timeout(every));
    lp.remove_handler(&idle).unwrap();
}

backend_tests!(timers_fire_on_every_backend);
