//! A signal that interrupts a wait is not an error and does not shorten it.

mod util;

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ioloop_sys::{Events, Interest, Mode, Poller};
use nix::sys::pthread::pthread_kill;
use nix::sys::signal::Signal;
use util::{backend_tests, fd, register};

/// A waiter thread does five timed waits while this thread sends SIGUSR1 at it (a handler
/// without `SA_RESTART`, so each one interrupts the system call) as fast as it can.
fn eintr_neither_fails_nor_shortens_wait<P: Poller>() {
    ioloop_sys::signal::install_noop_handler(libc::SIGUSR1).unwrap();
    let p = Arc::new(util::poller::<P>());
    let (a, _b) = util::socketpair();
    register(&*p, fd(&a), 1, Interest::READABLE, Mode::Level);
    let t = Duration::from_millis(20);
    let done = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(2));
    let waiter = {
        let (p, done, barrier) = (p.clone(), done.clone(), barrier.clone());
        thread::spawn(move || {
            let mut ev = Events::with_capacity(8);
            barrier.wait();
            let results: Vec<_> = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    let res = p.wait(&mut ev, Some(t)).map_err(|e| e.to_string());
                    (res, start.elapsed())
                })
                .collect();
            done.store(true, Ordering::SeqCst);
            results
        })
    };
    // Not shared with another thread: pthread_t is a raw pointer on some libcs. std's
    // `RawPthread` is an integer everywhere, so it is cast to libc's type (a no-op on glibc).
    #[allow(clippy::unnecessary_cast)]
    let target = waiter.as_pthread_t() as libc::pthread_t;
    barrier.wait();
    let mut sent = 0u64;
    while !done.load(Ordering::SeqCst) {
        // The waiter may have just finished: a failed send then is fine.
        if pthread_kill(target, Signal::SIGUSR1).is_ok() {
            sent += 1;
        }
        thread::yield_now();
    }
    for (res, elapsed) in waiter.join().unwrap() {
        assert_eq!(res, Ok(0), "{}: interrupted wait", P::NAME);
        assert!(
            elapsed >= t,
            "{}: interrupted wait returned after {elapsed:?}",
            P::NAME
        );
    }
    assert!(sent > 0);
}

backend_tests!(eintr_neither_fails_nor_shortens_wait);
