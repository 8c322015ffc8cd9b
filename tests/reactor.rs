//! The reactor: fd handlers, callbacks, run/stop, panics and bad input, on every backend.

mod util;

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ioloop::{Handle, Interest, IoLoop, Mode, Poller, Ready};
use util::{backend_loop, backend_tests, bump, counter, drain, err_kind, send, socketpair, turn};

/// fd numbers are process-wide and the tests of this binary run on parallel threads. The test
/// that closes an fd behind the loop's back holds this exclusively, so that no other test's new
/// fd takes that number while the loop still watches it; every other test that opens fds
/// holds it shared.
static FD_NUMBERS: RwLock<()> = RwLock::new(());

fn shared_fds() -> RwLockReadGuard<'static, ()> {
    FD_NUMBERS.read().unwrap_or_else(|p| p.into_inner())
}

fn exclusive_fds() -> RwLockWriteGuard<'static, ()> {
    FD_NUMBERS.write().unwrap_or_else(|p| p.into_inner())
}

fn assert_send_sync<T: Send + Sync>() {}

/// A chain of callbacks: each link counts itself in `n` and queues the next one; the
/// `until`-th link stops the loop instead.
fn chain<P: Poller>(lp: &IoLoop<P>, n: Rc<Cell<usize>>, until: usize) {
    bump(&n);
    if n.get() < until {
        lp.add_callback(move |lp| chain(lp, n, until));
    } else {
        lp.stop();
    }
}

fn dispatches_to_the_right_handler<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let pairs: Vec<_> = (0..6).map(|_| socketpair()).collect();
    let calls = Rc::new(RefCell::new(Vec::new()));
    for (i, (a, _)) in pairs.iter().enumerate() {
        let calls = calls.clone();
        let reader = a.try_clone().unwrap();
        lp.add_handler(a, Interest::READABLE, move |_, fd, ready| {
            drain(&reader);
            calls.borrow_mut().push((i, fd, ready));
        })
        .unwrap();
    }
    assert_eq!(lp.handler_count(), 6);
    for i in [1, 3, 4] {
        send(&pairs[i].1, b"x");
    }
    lp.run_until(|_| calls.borrow().len() >= 3).unwrap();
    turn(&lp);
    let mut got = calls.borrow().clone();
    got.sort_by_key(|c| c.0);
    let who: Vec<usize> = got.iter().map(|c| c.0).collect();
    assert_eq!(who, [1, 3, 4], "{}: handlers called: {got:?}", P::NAME);
    for (i, fd, ready) in got {
        assert_eq!(fd, pairs[i].0.as_raw_fd(), "handler {i} got another fd");
        assert!(ready.contains(Ready::READABLE), "handler {i}: {ready:?}");
    }
}

fn update_handler_inside_handler<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let (a, b) = socketpair();
    send(&b, b"x"); // never drained: `a` stays readable
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.add_handler(&a, Interest::READABLE, move |lp, fd, ready| {
        s.borrow_mut().push(ready);
        if s.borrow().len() == 1 {
            lp.update_handler(fd, Interest::WRITABLE).unwrap();
        } else {
            lp.remove_handler(fd).unwrap();
        }
    })
    .unwrap();
    lp.run_until(|lp| lp.handler_count() == 0).unwrap();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 2, "{}: {seen:?}", P::NAME);
    assert!(seen[0].contains(Ready::READABLE), "{:?}", seen[0]);
    assert!(seen[1].contains(Ready::WRITABLE), "{:?}", seen[1]);
    assert!(
        !seen[1].contains(Ready::READABLE),
        "{}: still reported readable after update to WRITABLE: {:?}",
        P::NAME,
        seen[1]
    );
}

fn remove_own_handler_inside_handler<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let (a, b) = socketpair();
    send(&b, b"x"); // stays readable: a handler still registered would be called again
    let calls = counter();
    let c = calls.clone();
    lp.add_handler(&a, Interest::READABLE, move |lp, fd, _| {
        bump(&c);
        lp.remove_handler(fd).unwrap();
        assert_eq!(err_kind(lp.remove_handler(fd)), io::ErrorKind::NotFound);
    })
    .unwrap();
    lp.run_once().unwrap();
    assert_eq!(calls.get(), 1);
    assert_eq!(lp.handler_count(), 0);
    for _ in 0..3 {
        turn(&lp);
    }
    assert_eq!(calls.get(), 1, "{}: removed handler called again", P::NAME);
    // The fd can get a handler again.
    lp.add_handler(&a, Interest::READABLE, |lp, fd, _| {
        lp.remove_handler(fd).unwrap()
    })
    .unwrap();
    lp.run_once().unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// Sets its flag when dropped: tells when the loop drops a handler's closure.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

fn replace_own_handler_inside_handler<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let (a, b) = socketpair();
    send(&b, b"x"); // stays readable: each turn dispatches whichever handler is registered
    let old_calls = counter();
    let new_calls = counter();
    let old_dropped = Rc::new(Cell::new(false));
    let flag = DropFlag(old_dropped.clone());
    let (c, n) = (old_calls.clone(), new_calls.clone());
    let seen_dropped = old_dropped.clone();
    lp.add_handler(&a, Interest::READABLE, move |lp, fd, _| {
        let _keep = &flag; // owned by this closure: dropped with it
        bump(&c);
        lp.remove_handler(fd).unwrap();
        // Still running: the closure (and `flag`) must not be dropped under our feet.
        assert!(!seen_dropped.get(), "handler dropped while it runs");
        let n = n.clone();
        lp.add_handler(fd, Interest::READABLE, move |_, _, _| bump(&n))
            .unwrap();
    })
    .unwrap();
    lp.run_once().unwrap();
    assert_eq!(old_calls.get(), 1);
    assert!(
        old_dropped.get(),
        "{}: the removed handler was not dropped",
        P::NAME
    );
    assert_eq!(lp.handler_count(), 1);
    for _ in 0..3 {
        turn(&lp);
    }
    assert_eq!(
        old_calls.get(),
        1,
        "{}: the replaced handler ran again",
        P::NAME
    );
    assert_eq!(
        new_calls.get(),
        3,
        "{}: the new handler is not the one dispatched",
        P::NAME
    );
    lp.remove_handler(&a).unwrap();
}

fn remove_other_handler_inside_handler<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let pairs = [socketpair(), socketpair()];
    // Both readable before the wait, so both events are in one batch; whichever handler
    // runs first removes the other, whose queued event must then not be delivered.
    for (_, peer) in &pairs {
        send(peer, b"x");
    }
    let calls = Rc::new([Cell::new(0usize), Cell::new(0usize)]);
    let fds = [pairs[0].0.as_raw_fd(), pairs[1].0.as_raw_fd()];
    for i in 0..2 {
        let calls = calls.clone();
        lp.add_handler(fds[i], Interest::READABLE, move |lp, _, _| {
            bump(&calls[i]);
            if calls[1 - i].get() == 0 && calls[i].get() == 1 {
                lp.remove_handler(fds[1 - i]).unwrap();
            }
        })
        .unwrap();
    }
    lp.run_once().unwrap();
    for _ in 0..3 {
        turn(&lp);
    }
    let (c0, c1) = (calls[0].get(), calls[1].get());
    assert!(
        (c0 == 0) != (c1 == 0),
        "{}: exactly one handler may run, calls: {c0}, {c1}",
        P::NAME
    );
    assert_eq!(lp.handler_count(), 1);
    // The survivor is level-triggered and was never drained: it kept being called.
    assert!(c0 + c1 >= 4, "survivor called {} times", c0 + c1);
}

fn reused_fd_gets_no_stale_event<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let (x, x_peer) = socketpair();
    let (y, y_peer) = socketpair();
    send(&x_peer, b"x");
    send(&y_peer, b"y");
    // The socket that takes over the loser's fd number. Its peer writes nothing until the
    // end, so any call of its handler before that is the stale event of the old socket.
    let (fresh, fresh_peer) = socketpair();
    let fresh = Rc::new(fresh);
    let owned: Rc<RefCell<[Option<OwnedFd>; 2]>> =
        Rc::new(RefCell::new([Some(x.into()), Some(y.into())]));
    let fds: [RawFd; 2] = {
        let o = owned.borrow();
        [
            o[0].as_ref().unwrap().as_raw_fd(),
            o[1].as_ref().unwrap().as_raw_fd(),
        ]
    };
    let calls = Rc::new([Cell::new(0usize), Cell::new(0usize)]);
    let c_calls = Rc::new(RefCell::new(Vec::new()));
    let winner = Rc::new(Cell::new(None));
    for i in 0..2 {
        let (calls, c_calls, winner) = (calls.clone(), c_calls.clone(), winner.clone());
        let (owned, fresh) = (owned.clone(), fresh.clone());
        lp.add_handler(fds[i], Interest::READABLE, move |lp, _, _| {
            bump(&calls[i]);
            // Keep this side quiet from now on.
            let mut buf = [0u8; 16];
            if let Some(me) = owned.borrow()[i].as_ref() {
                let _ = nix::unistd::read(me, &mut buf);
            }
            if winner.get().is_some() {
                return;
            }
            winner.set(Some(i));
            let other = 1 - i;
            lp.remove_handler(fds[other]).unwrap();
            let mut o = owned.borrow_mut();
            let slot = o[other].as_mut().unwrap();
            // Closes the other socket and puts the fresh one at the same number, atomically
            // (a close + socket() could lose the number to another thread).
            nix::unistd::dup2(&*fresh, slot).unwrap();
            assert_eq!(slot.as_raw_fd(), fds[other]);
            let c_calls = c_calls.clone();
            lp.add_handler(fds[other], Interest::READABLE, move |_, _, ready| {
                c_calls.borrow_mut().push(ready);
            })
            .unwrap();
        })
        .unwrap();
    }
    lp.run_once().unwrap();
    let w = winner.get().expect("no handler ran");
    for _ in 0..3 {
        turn(&lp);
    }
    assert_eq!(
        calls[1 - w].get(),
        0,
        "{}: the removed handler was called",
        P::NAME
    );
    assert_eq!(
        c_calls.borrow().len(),
        0,
        "{}: the new handler got the event queued for the old socket: {:?}",
        P::NAME,
        c_calls.borrow()
    );
    assert_eq!(lp.handler_count(), 2);
    // The new registration works.
    send(&fresh_peer, b"z");
    lp.run_once().unwrap();
    assert_eq!(c_calls.borrow().len(), 1);
    assert!(c_calls.borrow()[0].contains(Ready::READABLE));
}

fn callbacks_run_fifo_and_added_ones_wait<P: Poller>() {
    let _fds = shared_fds(); // opens fds (the loop's own)
    let lp = backend_loop::<P>();
    let log = Rc::new(RefCell::new(Vec::new()));
    for i in 1..=3 {
        let log = log.clone();
        lp.add_callback(move |lp| {
            log.borrow_mut().push(i);
            if i == 2 {
                let log = log.clone();
                lp.add_callback(move |_| log.borrow_mut().push(10));
            }
        });
    }
    lp.run_once().unwrap();
    assert_eq!(*log.borrow(), [1, 2, 3], "{}", P::NAME);
    // The pending callback made that iteration's wait non-blocking; it runs now.
    turn(&lp);
    assert_eq!(*log.borrow(), [1, 2, 3, 10], "{}", P::NAME);
}

fn callbacks_from_other_threads<P: Poller>() {
    let _fds = shared_fds(); // opens fds (the loop's own)
    const THREADS: usize = 4;
    const EACH: usize = 250;
    assert_send_sync::<Handle<P>>();
    let lp = backend_loop::<P>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (h, log) = (lp.handle(), log.clone());
            std::thread::spawn(move || {
                for k in 0..EACH {
                    let log = log.clone();
                    h.add_callback(move |lp| {
                        let mut log = log.lock().unwrap();
                        log.push((t, k));
                        // Not run_until: callbacks run before the wait, so a condition they
                        // make true is only checked once the wait returns.
                        if log.len() == THREADS * EACH {
                            lp.stop();
                        }
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    // Returns only if no wake-up is lost: the loop sleeps without a timeout in between.
    lp.run().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    turn(&lp);
    let log = log.lock().unwrap();
    assert_eq!(
        log.len(),
        THREADS * EACH,
        "{}: callbacks ran twice",
        P::NAME
    );
    for t in 0..THREADS {
        let mine: Vec<usize> = log.iter().filter(|e| e.0 == t).map(|e| e.1).collect();
        assert_eq!(
            mine,
            (0..EACH).collect::<Vec<_>>(),
            "thread {t}'s callbacks"
        );
    }
}

fn stop_from_another_thread_wakes_the_loop<P: Poller>() {
    let _fds = shared_fds(); // opens fds (the loop's own)
    let lp = backend_loop::<P>();
    let barrier = Arc::new(Barrier::new(2));
    let (h, b) = (lp.handle(), barrier.clone());
    let t = std::thread::spawn(move || {
        b.wait();
        h.stop().unwrap();
    });
    // After this callback the loop has nothing to do and blocks without a timeout until the
    // other thread's stop wakes it.
    lp.add_callback(move |_| {
        barrier.wait();
    });
    lp.run().unwrap();
    t.join().unwrap();
    assert!(!lp.is_running());
}

fn stop_run_again_and_nested_run<P: Poller>() {
    let _fds = shared_fds(); // opens fds (the loop's own)
    let lp = backend_loop::<P>();
    assert!(!lp.is_running());
    // Twice is the same as once: run returns after one iteration, and the next run is not
    // stopped early by a left-over second stop.
    lp.stop();
    lp.stop();
    let n = counter();
    let c = n.clone();
    lp.add_callback(move |_| bump(&c));
    lp.run().unwrap();
    assert_eq!(n.get(), 1);
    let n = counter();
    let c = n.clone();
    lp.add_callback(move |lp| chain(lp, c, 5));
    lp.run().unwrap();
    assert_eq!(n.get(), 5, "{}: the second run stopped early", P::NAME);
    // And once more after a stop from inside.
    let n = counter();
    let c = n.clone();
    lp.add_callback(move |lp| chain(lp, c, 3));
    lp.run().unwrap();
    assert_eq!(n.get(), 3);
    // Nested runs are refused; is_running says where we are.
    let checked = counter();
    let c = checked.clone();
    lp.add_callback(move |lp| {
        assert!(lp.is_running());
        assert_eq!(err_kind(lp.run()), io::ErrorKind::Other);
        assert_eq!(err_kind(lp.run_once()), io::ErrorKind::Other);
        assert_eq!(err_kind(lp.run_until(|_| true)), io::ErrorKind::Other);
        assert!(
            lp.is_running(),
            "a refused nested run cleared the running flag"
        );
        bump(&c);
        lp.stop();
    });
    lp.run().unwrap();
    assert_eq!(checked.get(), 1);
    assert!(!lp.is_running());
}

/// A callback from another thread that panics unwinds out of `run`; the ones queued after it
/// (from the same batch) are kept and run, in order, by the next `run`.
fn panicking_remote_callback_keeps_the_rest<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let h = lp.handle();
    let log = Arc::new(Mutex::new(Vec::new()));
    for i in 0..4 {
        let log = log.clone();
        h.add_callback(move |_| {
            log.lock().unwrap().push(i);
            assert_ne!(i, 1, "remote callback panic (expected by the test)");
        })
        .unwrap();
    }
    let r = catch_unwind(AssertUnwindSafe(|| lp.run_once()));
    assert!(
        r.is_err(),
        "{}: the panic did not unwind out of run",
        P::NAME
    );
    assert_eq!(*log.lock().unwrap(), [0, 1]);
    assert!(!lp.is_running());
    // Queued behind the leftovers: runs after them.
    let l = log.clone();
    h.add_callback(move |lp| {
        l.lock().unwrap().push(9);
        lp.stop();
    })
    .unwrap();
    lp.run().unwrap();
    assert_eq!(*log.lock().unwrap(), [0, 1, 2, 3, 9], "{}", P::NAME);
}

/// A callback that stops the loop ends the iteration before its wait (as in Tornado): a
/// ready fd's handler is not called by that iteration, and it is called by the next `run`.
fn stop_from_a_callback_skips_the_wait<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let (a, b) = socketpair();
    send(&b, b"x");
    let calls = counter();
    let c = calls.clone();
    lp.add_handler(&a, Interest::READABLE, move |lp, _, _| {
        bump(&c);
        lp.stop();
    })
    .unwrap();
    lp.add_callback(|lp| lp.stop());
    lp.run().unwrap();
    assert_eq!(calls.get(), 0, "{}: the stopped iteration polled", P::NAME);
    lp.run().unwrap();
    assert_eq!(calls.get(), 1, "{}", P::NAME);
    lp.remove_handler(&a).unwrap();
}

fn panicking_handler_leaves_the_loop_consistent<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    // Registered first and readable first, so that (on epoll at least) its event leads the
    // batch: it panics on its first call.
    let (p, p_peer) = socketpair();
    send(&p_peer, b"p");
    let p_calls = counter();
    let (c, p_reader) = (p_calls.clone(), p.try_clone().unwrap());
    lp.add_handler(&p, Interest::READABLE, move |lp, fd, _| {
        bump(&c);
        if c.get() == 1 {
            panic!("handler panic (expected by the test)");
        }
        drain(&p_reader);
        lp.remove_handler(fd).unwrap();
    })
    .unwrap();
    // Oneshot handlers report once: an event of the batch lost to the panic would never
    // come back.
    let others: Vec<(UnixStream, UnixStream)> = (0..3).map(|_| socketpair()).collect();
    let fired = Rc::new(RefCell::new(Vec::new()));
    for (i, (a, peer)) in others.iter().enumerate() {
        send(peer, b"o");
        let fired = fired.clone();
        lp.add_handler_with(a, Interest::READABLE, Mode::Oneshot, move |_, _, _| {
            fired.borrow_mut().push(i)
        })
        .unwrap();
    }
    let once = counter();
    let c = once.clone();
    lp.call_later(std::time::Duration::ZERO, move |_| bump(&c));
    let ticks = counter();
    let c = ticks.clone();
    let every = lp
        .call_every(std::time::Duration::from_millis(1), move |_| bump(&c))
        .unwrap();

    let res = catch_unwind(AssertUnwindSafe(|| lp.run()));
    assert!(
        res.is_err(),
        "{}: the panic did not unwind out of run",
        P::NAME
    );
    assert!(!lp.is_running());
    assert_eq!(p_calls.get(), 1);
    assert_eq!(lp.handler_count(), 4, "the panicking handler was dropped");
    assert_eq!(lp.timer_count(), 2, "timers lost");

    // One iteration delivers the rest of the batch, calls the (level, still readable)
    // panicking handler again, and fires the due timer.
    lp.run_once().unwrap();
    let mut f = fired.borrow().clone();
    f.sort_unstable();
    assert_eq!(f, [0, 1, 2], "{}: oneshot events lost or repeated", P::NAME);
    assert_eq!(p_calls.get(), 2, "the panicking handler is gone");
    assert_eq!(lp.handler_count(), 3);
    assert_eq!(once.get(), 1);
    assert_eq!(lp.timer_count(), 1);
    lp.run_until(|_| ticks.get() >= 2).unwrap();
    assert!(lp.remove_timeout(every));
    // The oneshot registrations are intact: re-arming one delivers again.
    lp.update_handler_with(&others[1].0, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    lp.run_once().unwrap();
    assert_eq!(fired.borrow().len(), 4);
}

fn fd_closed_behind_the_loops_back<P: Poller>() {
    let _fds = exclusive_fds();
    let lp = backend_loop::<P>();
    let (victim, victim_peer) = socketpair();
    let victim_fd = victim.as_raw_fd();
    send(&victim_peer, b"v"); // readable: the backend has it in flight when it is closed
    let victim_calls = Rc::new(RefCell::new(Vec::new()));
    let v = victim_calls.clone();
    lp.add_handler(&victim, Interest::READABLE, move |_, _, ready| {
        v.borrow_mut().push(ready)
    })
    .unwrap();
    // A busy neighbour: level-triggered, never drained, so every iteration calls it.
    let (busy, busy_peer) = socketpair();
    send(&busy_peer, b"b");
    let busy_calls = counter();
    let c = busy_calls.clone();
    lp.add_handler(&busy, Interest::READABLE, move |_, _, _| bump(&c))
        .unwrap();

    lp.run_once().unwrap();
    let before = victim_calls.borrow().len();
    assert!(before >= 1);
    drop(victim); // closed, never removed

    let iterations = counter();
    let it = iterations.clone();
    lp.run_until(move |_| {
        bump(&it);
        it.get() > 50
    })
    .unwrap();
    let after: Vec<Ready> = victim_calls.borrow()[before..].to_vec();
    assert!(
        busy_calls.get() >= 51,
        "{}: neighbour starved ({} calls)",
        P::NAME,
        busy_calls.get()
    );
    match P::NAME {
        "epoll" | "kqueue" => {
            // The kernel forgets a closed fd's registration: nothing is reported, and the
            // loop cannot know, so the handler stays counted until removed.
            assert!(after.is_empty(), "{}: {after:?}", P::NAME);
            assert_eq!(lp.handler_count(), 2);
            lp.remove_handler(victim_fd)
                .expect("removing the handler of a closed fd");
        }
        _ => {
            // Reported once as ERROR (a last in-flight READABLE may precede it), then removed.
            assert!(
                !after.is_empty() && after.len() <= 2,
                "{}: closed fd reported {} times: {after:?}",
                P::NAME,
                after.len()
            );
            assert!(
                after.last().unwrap().contains(Ready::ERROR),
                "{}: {after:?}",
                P::NAME
            );
            assert_eq!(lp.handler_count(), 1, "{}: handler not removed", P::NAME);
        }
    }
    assert_eq!(lp.handler_count(), 1);
    drop(victim_peer);
}

fn bad_input_is_an_error<P: Poller>() {
    use io::ErrorKind::{AlreadyExists, InvalidInput, NotFound};
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let (a, _b) = socketpair();
    let fd = a.as_raw_fd();
    let noop = |_: &IoLoop<P>, _: RawFd, _: Ready| {};
    assert_eq!(
        err_kind(lp.add_handler(-1, Interest::READABLE, noop)),
        InvalidInput
    );
    assert_eq!(
        err_kind(lp.update_handler(-1, Interest::READABLE)),
        InvalidInput
    );
    assert_eq!(
        err_kind(lp.update_handler_with(-1, Interest::READABLE, Mode::Level)),
        InvalidInput
    );
    assert_eq!(err_kind(lp.remove_handler(-1)), InvalidInput);
    assert_eq!(
        err_kind(lp.update_handler(fd, Interest::WRITABLE)),
        NotFound
    );
    assert_eq!(err_kind(lp.remove_handler(fd)), NotFound);

    lp.add_handler(fd, Interest::READABLE, noop).unwrap();
    assert_eq!(
        err_kind(lp.add_handler(fd, Interest::WRITABLE, noop)),
        AlreadyExists
    );
    assert_eq!(lp.handler_count(), 1);
    lp.remove_handler(fd).unwrap();
    assert_eq!(err_kind(lp.remove_handler(fd)), NotFound);
    assert_eq!(
        err_kind(lp.update_handler(fd, Interest::READABLE)),
        NotFound
    );
    assert_eq!(lp.handler_count(), 0);

    // An fd number that is not open is the poller's error, with no table grown to its size.
    assert!(lp.add_handler(i32::MAX, Interest::READABLE, noop).is_err());
    assert_eq!(lp.handler_count(), 0);

    if !lp.poller().supports(Mode::Edge) {
        assert_eq!(
            err_kind(lp.add_handler_with(fd, Interest::READABLE, Mode::Edge, noop)),
            io::ErrorKind::Unsupported
        );
        assert_eq!(lp.handler_count(), 0);
    }
    // Still usable after all that.
    lp.add_handler(fd, Interest::WRITABLE, |lp, fd, _| {
        lp.remove_handler(fd).unwrap()
    })
    .unwrap();
    lp.run_once().unwrap();
    assert_eq!(lp.handler_count(), 0);
}

fn oneshot_fires_once_until_rearmed<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let (a, b) = socketpair();
    send(&b, b"x"); // never drained: readable all along
    let calls = counter();
    let c = calls.clone();
    lp.add_handler_with(&a, Interest::READABLE, Mode::Oneshot, move |_, _, ready| {
        assert!(ready.contains(Ready::READABLE));
        bump(&c);
    })
    .unwrap();
    lp.run_once().unwrap();
    assert_eq!(calls.get(), 1);
    for _ in 0..5 {
        turn(&lp);
    }
    assert_eq!(calls.get(), 1, "{}: oneshot reported again", P::NAME);
    lp.update_handler_with(&a, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    lp.run_once().unwrap();
    assert_eq!(calls.get(), 2, "{}: re-arm did not deliver", P::NAME);
    for _ in 0..3 {
        turn(&lp);
    }
    assert_eq!(calls.get(), 2);
    // update_handler keeps the mode and re-arms too.
    lp.update_handler(&a, Interest::READABLE).unwrap();
    lp.run_once().unwrap();
    turn(&lp);
    assert_eq!(calls.get(), 3);
    assert_eq!(lp.handler_count(), 1);
    lp.remove_handler(&a).unwrap();
}

/// A handler whose fd was closed behind the loop's back does not hold on to the fd number:
/// a handler for a new fd with that number can be added (kqueue: after removing the stale one
/// by hand), and the stale handler has had exactly one ERROR — at the next wait on poll and
/// select, which report the closed fd; when the number is reused on epoll, whose kernel forgot
/// the fd silently, and on io_uring, whose idle poll still watches the closed file
/// (`Poller::is_stale`).
fn closed_fd_number_reused_by_a_new_handler<P: Poller>() {
    let _fds = exclusive_fds();
    let lp = backend_loop::<P>();
    let (victim, _victim_peer) = socketpair();
    let n = victim.as_raw_fd();
    let stale = Rc::new(RefCell::new(Vec::new()));
    let s = stale.clone();
    lp.add_handler(n, Interest::READABLE, move |_, _, ready| {
        s.borrow_mut().push(ready)
    })
    .unwrap();
    turn(&lp);
    assert!(stale.borrow().is_empty());
    drop(victim); // closed, never removed
    turn(&lp);
    // A new socket at number n. A lower number may be free too (other tests close fds), so
    // if neither end of the new pair got n, a duplicate goes onto the lowest free number >= n,
    // which is n (no other test of this binary opens fds while this one holds `exclusive_fds`).
    let (a, b) = socketpair();
    let (fresh, fresh_peer) = if a.as_raw_fd() == n { (a, b) } else { (b, a) };
    let dup = (fresh.as_raw_fd() != n).then(|| util::dup_at_least(&fresh, n).expect("fd n"));
    let reused = dup.as_ref().map_or(fresh.as_raw_fd(), |d| d.0);
    assert_eq!(reused, n, "{}: the number was not reused", P::NAME);
    let fresh_calls = counter();
    let c = fresh_calls.clone();
    let add = || {
        let c = c.clone();
        lp.add_handler(reused, Interest::READABLE, move |_, _, _| bump(&c))
    };
    if P::NAME == "kqueue" {
        // kqueue keeps the number in its table and cannot tell the new file from the closed
        // one: the stale handler must be removed by hand (documented on `Kqueue`).
        assert!(
            stale.borrow().is_empty(),
            "{}: {:?}",
            P::NAME,
            stale.borrow()
        );
        assert_eq!(err_kind(add()), io::ErrorKind::AlreadyExists, "{}", P::NAME);
        lp.remove_handler(n).unwrap();
        add().unwrap();
    } else {
        add().unwrap_or_else(|e| panic!("{}: add on a reused number: {e}", P::NAME));
        assert_eq!(
            stale.borrow().as_slice(),
            [Ready::ERROR],
            "{}: the stale handler's calls",
            P::NAME
        );
    }
    assert_eq!(lp.handler_count(), 1, "{}", P::NAME);
    // The new handler gets the new fd's events, the stale one nothing more.
    send(&fresh_peer, b"x");
    lp.run_once().unwrap();
    assert_eq!(fresh_calls.get(), 1, "{}", P::NAME);
    assert!(stale.borrow().len() <= 1, "{}", P::NAME);
    lp.remove_handler(reused).unwrap();
    drop(dup);
    drop(fresh);
}

/// Adding a handler on a number that has a live one is refused, and the refused attempt
/// changes nothing: a Oneshot handler that has fired stays disarmed (the liveness check must
/// not re-arm it, as a `modify` would).
fn refused_add_does_not_rearm_a_fired_oneshot<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let (a, b) = socketpair();
    send(&b, b"x"); // never drained: readable all along
    let calls = counter();
    let c = calls.clone();
    lp.add_handler_with(&a, Interest::READABLE, Mode::Oneshot, move |_, _, _| {
        bump(&c)
    })
    .unwrap();
    lp.run_once().unwrap();
    assert_eq!(calls.get(), 1);
    assert_eq!(
        err_kind(lp.add_handler(&a, Interest::READABLE, |_, _, _| {})),
        io::ErrorKind::AlreadyExists,
        "{}",
        P::NAME
    );
    for _ in 0..5 {
        turn(&lp);
    }
    assert_eq!(
        calls.get(),
        1,
        "{}: a refused add_handler re-armed the fired oneshot",
        P::NAME
    );
    lp.remove_handler(&a).unwrap();
}

/// A refused add_handler (whose liveness check may ask the poller about the occupied number)
/// does not make another fd's next level report stale: data written after it is reported
/// by the next wait together with what was ready before (found by the model test on io_uring,
/// whose `is_stale` probe submitted re-arms queued for the next wait early).
fn refused_add_leaves_level_reports_current<P: Poller>() {
    let _fds = shared_fds();
    let lp = backend_loop::<P>();
    let (a, a_peer) = socketpair();
    let (b, _b_peer) = socketpair();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.add_handler(
        &a,
        Interest::READABLE | Interest::WRITABLE,
        move |_, _, ready| s.borrow_mut().push(ready),
    )
    .unwrap();
    lp.add_handler(&b, Interest::empty(), |_, _, _| {}).unwrap();
    lp.run_once().unwrap();
    assert_eq!(seen.borrow().as_slice(), [Ready::WRITABLE], "{}", P::NAME);
    assert_eq!(
        err_kind(lp.add_handler(&b, Interest::empty(), |_, _, _| {})),
        io::ErrorKind::AlreadyExists,
        "{}",
        P::NAME
    );
    send(&a_peer, b"x");
    lp.run_once().unwrap();
    assert_eq!(
        seen.borrow().last(),
        Some(&(Ready::READABLE | Ready::WRITABLE)),
        "{}: the report after the refused add",
        P::NAME
    );
    lp.remove_handler(&a).unwrap();
    lp.remove_handler(&b).unwrap();
}

backend_tests!(
    dispatches_to_the_right_handler,
    update_handler_inside_handler,
    remove_own_handler_inside_handler,
    replace_own_handler_inside_handler,
    remove_other_handler_inside_handler,
    reused_fd_gets_no_stale_event,
    callbacks_run_fifo_and_added_ones_wait,
    callbacks_from_other_threads,
    panicking_remote_callback_keeps_the_rest,
    stop_from_a_callback_skips_the_wait,
    stop_from_another_thread_wakes_the_loop,
    stop_run_again_and_nested_run,
    panicking_handler_leaves_the_loop_consistent,
    fd_closed_behind_the_loops_back,
    closed_fd_number_reused_by_a_new_handler,
    bad_input_is_an_error,
    oneshot_fires_once_until_rearmed,
    refused_add_does_not_rearm_a_fired_oneshot,
    refused_add_leaves_level_reports_current,
);
