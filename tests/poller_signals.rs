//! A signal that interrupts a wait is not an error and does not shorten it.

mod util;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use ioloop_sys::{Events, Interest, Mode, Poller};
use nix::sys::pthread::{pthread_kill, pthread_self};
use nix::sys::signal::Signal;
use util::{backend_tests, fd, register};

fn eintr_neither_fails_nor_shortens_wait<P: Poller>() {
    ioloop_sys::signal::install_noop_handler(libc::SIGUSR1).unwrap();
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, _b) = util::socketpair();
    register(&p, fd(&a), 1, Interest::READABLE, Mode::Level);
    let me = pthread_self();
    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let barrier = Barrier::new(2);
    let t = Duration::from_millis(20);
    for _ in 0..5 {
        stop.store(false, Ordering::SeqCst);
        thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                while !stop.load(Ordering::SeqCst) {
                    pthread_kill(me, Signal::SIGUSR1).unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    thread::yield_now();
                }
            });
            barrier.wait();
            let start = Instant::now();
            let res = p.wait(&mut ev, Some(t));
            let elapsed = start.elapsed();
            // Stop the sender before asserting: it must not outlive this scope's checks.
            stop.store(true, Ordering::SeqCst);
            assert_eq!(res.unwrap(), 0, "{}: interrupted wait", P::NAME);
            assert!(
                elapsed >= t,
                "{}: interrupted wait returned after {elapsed:?}",
                P::NAME
            );
        });
    }
    assert!(sent.load(Ordering::Relaxed) > 0);
}

backend_tests!(eintr_neither_fails_nor_shortens_wait);
