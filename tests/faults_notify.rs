//! Notifier storm: 8 threads queue callbacks through `Handle::add_callback` as fast as they
//! can while the loop runs them. Every callback runs exactly once, in FIFO order per thread,
//! and the storm leaves the number of open fds unchanged (the wake-up is coalesced: no pipe
//! fills up, no fd is created per notify).
//!
//! Counts: 8 x 5 000 callbacks by default, 8 x 100 000 with `IOLOOP_STRESS=full`.

mod faults_util;
mod util;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use faults_util::{new_loop, scaled, serial};
use ioloop::Poller;
use util::{backend_tests, open_fds};

const THREADS: usize = 8;

fn notifier_storm_runs_each_callback_once_in_order<P: Poller>() {
    // Open-fd counts are process-wide: no other test of this binary may run meanwhile.
    let _serial = serial();
    let per_thread = scaled(5_000, 100_000);
    let fds_before = open_fds();
    {
        let lp = new_loop::<P>();
        let fds_with_loop = open_fds();
        let next: Arc<Vec<AtomicUsize>> =
            Arc::new((0..THREADS).map(|_| AtomicUsize::new(0)).collect());
        let ran = Arc::new(AtomicUsize::new(0));
        let out_of_order = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (h, next, ran, ooo, barrier) = (
                    lp.handle(),
                    next.clone(),
                    ran.clone(),
                    out_of_order.clone(),
                    barrier.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..per_thread {
                        let (next, ran, ooo) = (next.clone(), ran.clone(), ooo.clone());
                        h.add_callback(move |lp| {
                            // Runs on the loop's thread only: a plain check-and-bump.
                            if next[t].fetch_add(1, Ordering::Relaxed) != i {
                                ooo.fetch_add(1, Ordering::Relaxed);
                            }
                            if ran.fetch_add(1, Ordering::Relaxed) + 1 == THREADS * per_thread {
                                lp.stop();
                            }
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        // Only reached if callbacks are lost: fail instead of hanging.
        let guard = lp.call_later(Duration::from_secs(300), |_| {
            panic!("callbacks lost: the storm did not complete")
        });
        let total = THREADS * per_thread;
        let start = Instant::now();
        barrier.wait();
        let mut iterations = 0usize;
        // The last callback stops the loop (a `run_until` condition is checked before an
        // iteration, whose wait would then block with nothing left to wake it).
        lp.run_until(|_| {
            iterations += 1;
            false
        })
        .unwrap();
        let elapsed = start.elapsed();
        for t in threads {
            t.join().unwrap();
        }
        assert!(lp.remove_timeout(guard));
        eprintln!(
            "{}: {THREADS} x {per_thread} callbacks in {elapsed:?}, {iterations} iterations",
            P::NAME
        );
        assert_eq!(ran.load(Ordering::Relaxed), total, "{}", P::NAME);
        assert_eq!(
            out_of_order.load(Ordering::Relaxed),
            0,
            "{}: FIFO broken",
            P::NAME
        );
        for (t, n) in next.iter().enumerate() {
            assert_eq!(
                n.load(Ordering::Relaxed),
                per_thread,
                "{}: thread {t}",
                P::NAME
            );
        }
        // Nothing left behind: one more iteration runs no callback.
        faults_util::nudge(&lp);
        lp.run_once().unwrap();
        assert_eq!(ran.load(Ordering::Relaxed), total);
        assert_eq!(
            open_fds(),
            fds_with_loop,
            "{}: fds leaked by the storm",
            P::NAME
        );
    }
    assert_eq!(open_fds(), fds_before, "{}: the loop leaked fds", P::NAME);
}

/// Free-running notifiers racing with the waiter's consumption of the wake-up: no
/// interleaving may leave the notifier "pending" with nothing to read, which would coalesce
/// every later notify into a wake-up that never comes (each wait here would then time out).
fn poller_notifier_is_never_muted_by_racing_notifies<P: Poller>() {
    let _serial = serial(); // holds fds: not while another test counts them
    let rounds = scaled(20_000, 500_000);
    let p = util::poller::<P>();
    let stop = AtomicBool::new(false);
    let mut events = ioloop::sys::Events::with_capacity(8);
    // A hang guard, not a timing bound: with three threads notifying all the time, a
    // wait that lasts this long was not woken.
    let limit = Duration::from_secs(60);
    let mut timed_out = 0;
    std::thread::scope(|s| {
        for _ in 0..3 {
            let n = p.notifier();
            let stop = &stop;
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    n.notify().unwrap();
                }
            });
        }
        for _ in 0..rounds {
            let start = Instant::now();
            p.wait(&mut events, Some(limit)).unwrap();
            if start.elapsed() >= limit {
                timed_out += 1;
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(timed_out, 0, "{}: the notifier went mute", P::NAME);
}

backend_tests!(
    notifier_storm_runs_each_callback_once_in_order,
    poller_notifier_is_never_muted_by_racing_notifies
);
