//! Signal handlers: delivered as loop events, one loop per signal, the disposition given back;
//! on every backend (a signal reaches the loop through a pipe registered with its poller).
//!
//! Dispositions are process-wide, so every test holds `SIGNAL_MTX` (as nix's test suite does).
//! SIGUSR1's default action kills the process: a test raises it only while a handler is in.

mod util;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

use ioloop::{IoLoop, Poller};
use nix::sys::signal::{raise, Signal};
use util::{bump, counter, err_kind, turn};

static SIGNAL_MTX: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SIGNAL_MTX.lock().unwrap_or_else(|p| p.into_inner())
}

fn new_loop<P: Poller>() -> IoLoop<P> {
    IoLoop::with_backend().expect("IoLoop::with_backend")
}

fn handler_runs_on_the_loop<P: Poller>() {
    let _g = serial();
    let lp = new_loop::<P>();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let loop_thread = std::thread::current().id();
    lp.add_signal_handler(libc::SIGUSR1, move |lp, sig| {
        assert_eq!(std::thread::current().id(), loop_thread);
        assert!(lp.is_running());
        g.borrow_mut().push(sig);
        lp.stop();
    })
    .unwrap();
    raise(Signal::SIGUSR1).unwrap();
    // Delivered as an event of the loop, not inside the signal handler.
    assert!(got.borrow().is_empty());
    lp.run().unwrap();
    assert_eq!(*got.borrow(), [libc::SIGUSR1]);
    lp.remove_signal_handler(libc::SIGUSR1).unwrap();
    assert_eq!(lp.handler_count(), 0);
}

fn signal_from_another_thread_wakes_the_loop<P: Poller>() {
    let _g = serial();
    let lp = new_loop::<P>();
    let calls = counter();
    let c = calls.clone();
    lp.add_signal_handler(libc::SIGUSR2, move |lp, sig| {
        assert_eq!(sig, libc::SIGUSR2);
        bump(&c);
        lp.stop();
    })
    .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let b = barrier.clone();
    let t = std::thread::spawn(move || {
        b.wait();
        // raise() in this thread: the signal handler runs here, the loop's handler there.
        raise(Signal::SIGUSR2).unwrap();
    });
    // After this callback the loop waits without a timeout until the signal arrives.
    lp.add_callback(move |_| {
        barrier.wait();
    });
    lp.run().unwrap();
    t.join().unwrap();
    assert_eq!(calls.get(), 1);
    lp.remove_signal_handler(libc::SIGUSR2).unwrap();
}

fn deliveries_before_the_loop_runs_merge<P: Poller>() {
    let _g = serial();
    let lp = new_loop::<P>();
    let calls = counter();
    let c = calls.clone();
    lp.add_signal_handler(libc::SIGUSR1, move |_, _| bump(&c))
        .unwrap();
    for _ in 0..3 {
        raise(Signal::SIGUSR1).unwrap();
    }
    lp.run_once().unwrap();
    turn(&lp);
    assert_eq!(
        calls.get(),
        1,
        "three deliveries before one iteration: one call"
    );
    raise(Signal::SIGUSR1).unwrap();
    lp.run_once().unwrap();
    assert_eq!(calls.get(), 2);
    lp.remove_signal_handler(libc::SIGUSR1).unwrap();
}

fn removal_frees_the_signal_for_another_loop<P: Poller>() {
    use io::ErrorKind::{AlreadyExists, NotFound};
    let _g = serial();
    let first = new_loop::<P>();
    let second = new_loop::<P>();
    first
        .add_signal_handler(libc::SIGUSR1, |_, _| panic!("first loop's handler ran"))
        .unwrap();
    assert_eq!(
        err_kind(first.add_signal_handler(libc::SIGUSR1, |_, _| {})),
        AlreadyExists
    );
    assert_eq!(
        err_kind(second.add_signal_handler(libc::SIGUSR1, |_, _| {})),
        AlreadyExists
    );
    assert_eq!(second.handler_count(), 0);
    assert_eq!(first.handler_count(), 1);

    first.remove_signal_handler(libc::SIGUSR1).unwrap();
    assert_eq!(
        err_kind(first.remove_signal_handler(libc::SIGUSR1)),
        NotFound
    );
    assert_eq!(first.handler_count(), 0);

    // The signal is free again: the second loop takes it and gets the delivery.
    let calls = counter();
    let c = calls.clone();
    second
        .add_signal_handler(libc::SIGUSR1, move |lp, _| {
            bump(&c);
            lp.stop();
        })
        .unwrap();
    raise(Signal::SIGUSR1).unwrap();
    second.run().unwrap();
    assert_eq!(calls.get(), 1);
    turn(&first);

    // Dropping the loop gives the signal back too.
    drop(second);
    first.add_signal_handler(libc::SIGUSR1, |_, _| {}).unwrap();
    first.remove_signal_handler(libc::SIGUSR1).unwrap();
    assert_eq!(
        err_kind(first.remove_signal_handler(libc::SIGUSR2)),
        NotFound
    );
}

fn handler_can_remove_itself<P: Poller>() {
    let _g = serial();
    let lp = new_loop::<P>();
    let calls = counter();
    let c = calls.clone();
    lp.add_signal_handler(libc::SIGUSR1, move |lp, sig| {
        bump(&c);
        lp.remove_signal_handler(sig).unwrap();
        lp.stop();
    })
    .unwrap();
    raise(Signal::SIGUSR1).unwrap();
    lp.run().unwrap();
    assert_eq!(calls.get(), 1);
    assert_eq!(lp.handler_count(), 0);
    // Given back: it can be taken again.
    lp.add_signal_handler(libc::SIGUSR1, |_, _| {}).unwrap();
    lp.remove_signal_handler(libc::SIGUSR1).unwrap();
}

/// A handler that removes itself gives the signal back before `remove_signal_handler`
/// returns, not when the handler returns: a new handler can be added right there, and it
/// gets the next delivery.
fn handler_can_replace_itself<P: Poller>() {
    let _g = serial();
    let lp = new_loop::<P>();
    let calls = counter();
    let c = calls.clone();
    lp.add_signal_handler(libc::SIGUSR2, move |lp, sig| {
        lp.remove_signal_handler(sig).unwrap();
        let c = c.clone();
        lp.add_signal_handler(sig, move |lp, _| {
            bump(&c);
            lp.stop();
        })
        .expect("a new handler from inside the old one");
        lp.stop();
    })
    .unwrap();
    raise(Signal::SIGUSR2).unwrap();
    lp.run().unwrap();
    assert_eq!(calls.get(), 0);
    assert_eq!(lp.handler_count(), 1);
    raise(Signal::SIGUSR2).unwrap();
    lp.run().unwrap();
    assert_eq!(calls.get(), 1);
    lp.remove_signal_handler(libc::SIGUSR2).unwrap();
    assert_eq!(lp.handler_count(), 0);
}

fn uncatchable_and_fault_signals_are_invalid_input<P: Poller>() {
    let _g = serial();
    let lp = new_loop::<P>();
    for sig in [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        0,
        -1,
        10_000,
    ] {
        assert_eq!(
            err_kind(lp.add_signal_handler(sig, |_, _| {})),
            io::ErrorKind::InvalidInput,
            "signal {sig}"
        );
    }
    assert_eq!(lp.handler_count(), 0);
}

/// Real-time signals are signals too: one is handled on the loop (each delivery queued by
/// the kernel, merged into the calls), and the old disposition comes back on removal. glibc
/// keeps the first two for itself (its `sigaction` refuses them): `InvalidInput`, as for any
/// number the program may not catch.
fn real_time_signals_are_handled<P: Poller>() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    real_time_signals::<P>();
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn real_time_signals<P: Poller>() {
    let _g = serial();
    let lp = new_loop::<P>();
    let sig = libc::SIGRTMIN() + 3;
    assert!(sig <= libc::SIGRTMAX());
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    lp.add_signal_handler(sig, move |lp, s| {
        g.borrow_mut().push(s);
        lp.stop();
    })
    .unwrap();
    assert_eq!(
        err_kind(lp.add_signal_handler(sig, |_, _| {})),
        io::ErrorKind::AlreadyExists
    );
    ioloop::sys::signal::raise(sig).unwrap();
    lp.run().unwrap();
    assert_eq!(*got.borrow(), [sig]);
    lp.remove_signal_handler(sig).unwrap();
    assert_eq!(lp.handler_count(), 0);
    if cfg!(target_env = "gnu") {
        for reserved in [32, 33] {
            assert_eq!(
                err_kind(lp.add_signal_handler(reserved, |_, _| {})),
                io::ErrorKind::InvalidInput,
                "signal {reserved}"
            );
        }
    }
}

util::backend_tests!(
    handler_runs_on_the_loop,
    signal_from_another_thread_wakes_the_loop,
    deliveries_before_the_loop_runs_merge,
    removal_frees_the_signal_for_another_loop,
    handler_can_remove_itself,
    handler_can_replace_itself,
    uncatchable_and_fault_signals_are_invalid_input,
    real_time_signals_are_handled,
);
