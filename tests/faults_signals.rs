//! Signal storm: another thread sends the loop's thread ~10 000 signals a second while the
//! loop waits with timers pending. No error surfaces, no timer fires early, none is lost.
//! Two ways in: a no-op handler installed without `SA_RESTART` (every wait is interrupted
//! with `EINTR`), and `IoLoop::add_signal_handler` (the self-pipe).
//!
//! Counts: 200 timers over ~0.3 s by default; 2 000 timers over ~3 s with
//! `IOLOOP_STRESS=full`.

mod faults_util;
mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use faults_util::{new_loop, scaled, serial};
use ioloop::{IoLoop, Poller};
use nix::sys::pthread::{pthread_kill, pthread_self};
use nix::sys::signal::Signal;
use util::backend_tests;

/// Signals per second the storm aims at.
const RATE: u64 = 10_000;

fn storm<P: Poller>(signal: Signal, via_loop: bool) {
    // Dispositions are process-wide: one storm at a time.
    let _serial = serial();
    // The fallback disposition (also what `remove_signal_handler` restores): a no-op, so a
    // straggler signal can never kill the test process.
    ioloop::sys::signal::install_noop_handler(signal as i32).unwrap();
    let lp: IoLoop<P> = new_loop::<P>();
    let handled = Rc::new(Cell::new(0usize));
    if via_loop {
        let h = handled.clone();
        lp.add_signal_handler(signal as i32, move |_, _| h.set(h.get() + 1))
            .unwrap();
    }
    let n = scaled(200, 2_000);
    let span = Duration::from_millis(scaled(300, 3_000) as u64);
    let fired = Rc::new(Cell::new(0usize));
    let early = Rc::new(Cell::new(0usize));
    let start = lp.time();
    for k in 0..n {
        let deadline = start + span * (k as u32 + 1) / n as u32;
        let (f, e) = (fired.clone(), early.clone());
        lp.call_at(deadline, move |lp| {
            if lp.time() < deadline {
                e.set(e.get() + 1);
            }
            f.set(f.get() + 1);
            if f.get() == n {
                lp.stop();
            }
        });
    }
    // pthread_t is an integer on glibc and a pointer on musl: it crosses threads as an integer.
    let me = pthread_self() as usize;
    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let barrier = Barrier::new(2);
    let mut elapsed = Duration::ZERO;
    std::thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            let t0 = Instant::now();
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                pthread_kill(me as libc::pthread_t, signal).unwrap();
                k += 1;
                sent.store(k as usize, Ordering::Relaxed);
                // Pace to RATE per second (a rate limit, not synchronisation).
                let due = t0 + Duration::from_micros(k * 1_000_000 / RATE);
                if let Some(ahead) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(ahead);
                }
            }
        });
        barrier.wait();
        let t0 = Instant::now();
        let res = lp.run();
        elapsed = t0.elapsed();
        stop.store(true, Ordering::SeqCst);
        if let Err(e) = res {
            panic!("{}: run failed under a signal storm: {e}", P::NAME);
        }
    });
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "{}: {} signals ({:.0}/s, {}) during {elapsed:?}; {}/{n} timers fired, {} early; \
         loop handler ran {} times",
        P::NAME,
        sent,
        sent as f64 / elapsed.as_secs_f64(),
        if via_loop {
            "add_signal_handler"
        } else {
            "no-op handler, EINTR"
        },
        fired.get(),
        early.get(),
        handled.get(),
    );
    assert_eq!(fired.get(), n, "{}: timers lost", P::NAME);
    assert_eq!(early.get(), 0, "{}: timers fired early", P::NAME);
    assert!(sent > 0);
    if via_loop {
        assert!(
            handled.get() > 0,
            "{}: the signal handler never ran",
            P::NAME
        );
        lp.remove_signal_handler(signal as i32).unwrap();
    }
}

fn signal_storm_interrupting_waits<P: Poller>() {
    storm::<P>(Signal::SIGUSR1, false);
}

fn signal_storm_through_add_signal_handler<P: Poller>() {
    storm::<P>(Signal::SIGUSR2, true);
}

backend_tests!(
    signal_storm_interrupting_waits,
    signal_storm_through_add_signal_handler
);
