//! Tasks: spawn/join, block_on, cancellation, panics, timers, cross-thread wakers, and
//! readiness wake-ups through `Async` on every backend.

mod util;

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use ioloop::{Async, IoLoop, Poller};
use ioloop_sys::DefaultPoller;
use util::backend_tests;

fn new_loop<P: Poller>() -> IoLoop<P> {
    IoLoop::with_poller(util::poller::<P>()).unwrap()
}

/// Sets its flag when dropped: shows a task's future was dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// A future that never completes.
fn pending_forever() -> impl Future<Output = ()> {
    poll_fn(|_| Poll::<()>::Pending)
}

// ----- spawn, join, block_on ---------------------------------------------------------------

#[test]
fn spawned_tasks_run_in_spawn_order_and_join() {
    let lp = IoLoop::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let handles: Vec<_> = (0..5)
        .map(|i| {
            let log = log.clone();
            lp.spawn(async move {
                log.borrow_mut().push(i);
                i * 10
            })
        })
        .collect();
    assert_eq!(lp.task_count(), 5);
    let outputs = lp
        .block_on(async {
            let mut out = Vec::new();
            // Join in reverse: the order of awaiting does not change the order of running.
            for h in handles.into_iter().rev() {
                out.push(h.await.unwrap());
            }
            out
        })
        .unwrap();
    assert_eq!(*log.borrow(), [0, 1, 2, 3, 4]);
    assert_eq!(outputs, [40, 30, 20, 10, 0]);
    assert_eq!(lp.task_count(), 0);
}

#[test]
fn block_on_with_nested_spawns() {
    let lp = IoLoop::new().unwrap();
    let v = lp
        .block_on(async {
            let outer = ioloop::spawn(async {
                let inner = ioloop::spawn(async {
                    ioloop::yield_now().await;
                    let innermost = ioloop::spawn(async { 1 });
                    innermost.await.unwrap() + 1
                });
                inner.await.unwrap() + 1
            });
            outer.await.unwrap() + 1
        })
        .unwrap();
    assert_eq!(v, 4);
    // The loop is reusable: a second block_on on the same loop.
    assert_eq!(lp.block_on(async { 5 }).unwrap(), 5);
}

#[test]
fn block_on_borrows_from_the_caller() {
    let lp = IoLoop::new().unwrap();
    let mut local = vec![1, 2];
    lp.block_on(async {
        ioloop::yield_now().await;
        local.push(3);
    })
    .unwrap();
    assert_eq!(local, [1, 2, 3]);
}

#[test]
fn block_on_inside_the_loop_is_an_error() {
    let lp = IoLoop::new().unwrap();
    let err = lp
        .block_on(async {
            let lp = IoLoop::<DefaultPoller>::current().expect("current loop");
            lp.block_on(async {}).unwrap_err()
        })
        .unwrap();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert!(err.to_string().contains("running"), "{err}");
}

#[test]
fn current_loop_is_set_only_while_running() {
    assert!(IoLoop::<DefaultPoller>::current().is_none());
    let lp = IoLoop::new().unwrap();
    let seen = lp
        .block_on(async { IoLoop::<DefaultPoller>::current().is_some() })
        .unwrap();
    assert!(seen);
    assert!(IoLoop::<DefaultPoller>::current().is_none());
}

#[test]
fn tasks_run_under_plain_run() {
    let lp = IoLoop::new().unwrap();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    lp.spawn(async move {
        ioloop::sleep(Duration::from_millis(1)).await;
        d.set(true);
        IoLoop::<DefaultPoller>::current().unwrap().stop();
    })
    .detach();
    lp.run().unwrap();
    assert!(done.get());
}

// ----- cancellation ------------------------------------------------------------------------

#[test]
fn dropping_a_join_handle_cancels_the_task() {
    let lp = IoLoop::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let handle = lp.spawn(async move {
        let _flag = flag;
        pending_forever().await;
    });
    lp.block_on(ioloop::yield_now()).unwrap(); // let it start
    assert!(!dropped.get());
    assert_eq!(lp.task_count(), 1);
    drop(handle);
    assert!(dropped.get(), "the future was not dropped");
    assert_eq!(lp.task_count(), 0);
}

#[test]
fn cancel_reports_cancelled_and_keeps_finished_output() {
    let lp = IoLoop::new().unwrap();
    lp.block_on(async {
        let dropped = Rc::new(Cell::new(false));
        let flag = DropFlag(dropped.clone());
        let task = ioloop::spawn(async move {
            let _flag = flag;
            ioloop::sleep(Duration::from_secs(3600)).await;
        });
        ioloop::yield_now().await;
        task.cancel();
        assert!(dropped.get());
        assert!(task.is_finished());
        assert!(task.await.unwrap_err().is_cancelled());

        let done = ioloop::spawn(async { 7 });
        while !done.is_finished() {
            ioloop::yield_now().await;
        }
        done.cancel(); // too late: the output stays
        assert_eq!(done.await.unwrap(), 7);
    })
    .unwrap();
    // The cancelled sleep's timer was removed from the loop.
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn detached_task_runs_to_completion() {
    let lp = IoLoop::new().unwrap();
    let (tx, rx) = mpsc::channel();
    lp.spawn(async move {
        ioloop::sleep(Duration::from_millis(2)).await;
        tx.send(1).unwrap();
    })
    .detach();
    lp.run_until(|_| rx.try_recv().is_ok()).unwrap();
    assert_eq!(lp.task_count(), 0);
}

#[test]
fn dropping_the_loop_drops_pending_tasks() {
    let dropped = Rc::new(Cell::new(false));
    {
        let lp = IoLoop::new().unwrap();
        let flag = DropFlag(dropped.clone());
        lp.spawn(async move {
            let _flag = flag;
            let (a, _b) = Async::<UnixStream>::pair().unwrap();
            a.readable().await.unwrap();
        })
        .detach();
        lp.block_on(ioloop::yield_now()).unwrap();
        assert!(!dropped.get());
    }
    assert!(dropped.get(), "a pending task outlived its loop");
}

// ----- panics ------------------------------------------------------------------------------

#[test]
fn a_panicking_task_is_reported_and_the_loop_survives() {
    let lp = IoLoop::new().unwrap();
    let bad = lp.spawn(async {
        ioloop::yield_now().await;
        panic!("task failed on purpose");
    });
    let good = lp.spawn(async {
        ioloop::sleep(Duration::from_millis(2)).await;
        "ok"
    });
    let (bad, good) = lp.block_on(async { (bad.await, good.await) }).unwrap();
    let err = bad.unwrap_err();
    assert!(err.is_panic() && !err.is_cancelled());
    assert!(err.to_string().contains("on purpose"), "{err}");
    assert_eq!(
        *err.into_panic().downcast::<&str>().unwrap(),
        "task failed on purpose"
    );
    assert_eq!(good.unwrap(), "ok");
    assert_eq!(lp.task_count(), 0);
    // Still usable.
    assert_eq!(lp.block_on(async { 1 }).unwrap(), 1);
}

/// A future that completes at once and panics when dropped.
struct PanicsOnDrop;

impl Future for PanicsOnDrop {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("dropped on purpose");
        }
    }
}

/// Tasks spawned before the loop runs come from the shared queue; a panic that unwinds out
/// of the pass that polls them (a finished future's destructor) leaves the rest of its
/// batch to the next pass.
#[test]
fn tasks_left_by_a_panicking_pass_still_run() {
    let lp = IoLoop::new().unwrap();
    lp.spawn(PanicsOnDrop).detach();
    let next = lp.spawn(async { 42 });
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run_once()));
    assert!(res.is_err(), "the destructor's panic comes out of the pass");
    let guard = lp.call_later(HANG, |lp| lp.stop());
    let v = lp.block_on(next);
    assert_eq!(
        v.expect("the task left in the batch never ran").unwrap(),
        42
    );
    lp.remove_timeout(guard);
}

/// Dropping a loop drops its pending tasks: their `JoinHandle`s say `Cancelled`, and a task
/// of another loop that awaits one is woken.
#[test]
fn join_handle_of_a_dropped_loop_is_cancelled() {
    let lp1 = IoLoop::new().unwrap();
    let pending = lp1.spawn(std::future::pending::<u32>());
    let idle = lp1.spawn(std::future::pending::<u32>());
    let lp2 = IoLoop::new().unwrap();
    let lp1 = RefCell::new(Some(lp1));
    let res = lp2
        .block_on(async {
            let waiter = ioloop::spawn(pending);
            // The waiter parks on the handle.
            ioloop::yield_now().await;
            ioloop::yield_now().await;
            drop(lp1.borrow_mut().take());
            ioloop::timeout(HANG, waiter).await
        })
        .unwrap();
    let err = res
        .expect("the waiter was never woken")
        .unwrap()
        .unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert!(idle.is_finished());
    assert!(lp2.block_on(idle).unwrap().unwrap_err().is_cancelled());
}

// ----- timers ------------------------------------------------------------------------------

#[test]
fn sleep_is_never_early() {
    let lp = IoLoop::new().unwrap();
    for ms in [0, 1, 5, 20] {
        let d = Duration::from_millis(ms);
        let start = Instant::now();
        lp.block_on(ioloop::sleep(d)).unwrap();
        assert!(start.elapsed() >= d);
    }
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn timeout_fires() {
    let lp = IoLoop::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let start = Instant::now();
    let r = lp
        .block_on(ioloop::timeout(Duration::from_millis(10), async move {
            let _flag = flag;
            pending_forever().await;
        }))
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(10));
    let elapsed = r.unwrap_err();
    assert!(dropped.get(), "the timed-out future was not dropped");
    let e: io::Error = elapsed.into();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
}

#[test]
fn timeout_not_firing_cancels_its_timer() {
    let lp = IoLoop::new().unwrap();
    let r = lp
        .block_on(ioloop::timeout(Duration::from_secs(3600), async {
            ioloop::sleep(Duration::from_millis(1)).await;
            9
        }))
        .unwrap();
    assert_eq!(r, Ok(9));
    assert_eq!(lp.timer_count(), 0, "the timeout's timer was left behind");
}

#[test]
fn interval_ticks_drift_free() {
    let lp = IoLoop::new().unwrap();
    let period = Duration::from_millis(15);
    lp.block_on(async {
        let mut iv = ioloop::interval(period);
        let start = iv.tick().await;
        let mut prev = start;
        for k in 1..=4u32 {
            let due = iv.tick().await;
            assert!(Instant::now() >= due, "tick {k} early");
            assert!(due > prev);
            // Due times are multiples of the period from the start (skips allowed).
            let n = (due - start).as_nanos() / period.as_nanos();
            assert_eq!(due, start + period * n as u32);
            prev = due;
        }
    })
    .unwrap();
    assert_eq!(lp.timer_count(), 0, "the interval's timer outlived it");
}

/// A timer of the same round that stalls the loop makes the interval's callback run after
/// its next tick is due, so that tick is counted then; the reactor's firing of that tick
/// is not a second one: due times keep increasing.
#[test]
fn interval_counts_a_tick_once_after_a_stall() {
    let lp = IoLoop::new().unwrap();
    let p = Duration::from_millis(20);
    let (start, t1, t2) = lp
        .block_on(async move {
            let mut iv = ioloop::interval(p);
            let start = iv.tick().await;
            // Due before tick 1 and run in its round (both are due when the loop gets
            // there), first: it holds the loop until tick 2 is due.
            let lp: IoLoop = IoLoop::current().unwrap();
            lp.call_at(
                start + p / 2,
                move |_| {
                    while Instant::now() < start + p * 5 / 2 {}
                },
            );
            // The task keeps the loop from its timers until tick 1 is due.
            while Instant::now() < start + p * 3 / 2 {}
            let t1 = iv.tick().await;
            let t2 = iv.tick().await;
            (start, t1, t2)
        })
        .unwrap();
    assert!(
        t2 > t1,
        "two ticks due at start + {:?}",
        t1.saturating_duration_since(start)
    );
    assert!(Instant::now() >= t2);
}

/// A `Sleep` first polled on one loop and then awaited on another (the future moved) is
/// ended by the loop that polls it, also once the first one is gone.
#[test]
fn sleep_moved_to_another_loop_completes() {
    for drop_first in [false, true] {
        let a = IoLoop::new().unwrap();
        let b = IoLoop::new().unwrap();
        let mut s = Box::pin(ioloop::sleep(Duration::from_millis(5)));
        a.block_on(poll_fn(|cx| {
            assert!(s.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        }))
        .unwrap();
        if drop_first {
            drop(a);
        }
        let done = b.block_on(ioloop::timeout(HANG, s)).unwrap();
        assert!(
            done.is_ok(),
            "still pending on the second loop (first dropped: {drop_first})"
        );
        assert_eq!(b.timer_count(), 0);
    }
}

#[test]
fn yield_now_lets_other_tasks_run() {
    let lp = IoLoop::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let tasks: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let log = log.clone();
            lp.spawn(async move {
                for i in 0..3 {
                    log.borrow_mut().push(format!("{name}{i}"));
                    ioloop::yield_now().await;
                }
            })
        })
        .collect();
    lp.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .unwrap();
    assert_eq!(*log.borrow(), ["a0", "b0", "a1", "b1", "a2", "b2"]);
}

// ----- wakers from other threads -----------------------------------------------------------

fn waker_called_from_another_thread_wakes_the_loop<P: Poller>() {
    let lp = new_loop::<P>();
    let slot: Arc<Mutex<Option<Waker>>> = Arc::new(Mutex::new(None));
    let flag = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(2));
    let t = {
        let (slot, flag, barrier) = (slot.clone(), flag.clone(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait(); // the task has stored its waker
            flag.store(true, Ordering::Release);
            let w = slot.lock().unwrap().take().expect("waker stored");
            w.wake();
        })
    };
    let task = lp.spawn({
        let (slot, flag) = (slot.clone(), flag.clone());
        let mut signalled = false;
        poll_fn(move |cx| {
            if flag.load(Ordering::Acquire) {
                return Poll::Ready("woken");
            }
            *slot.lock().unwrap() = Some(cx.waker().clone());
            if !signalled {
                signalled = true;
                barrier.wait();
            }
            Poll::Pending
        })
    });
    // No timer, no fd: only the cross-thread wake can end this.
    assert_eq!(lp.block_on(task).unwrap().unwrap(), "woken");
    t.join().unwrap();
}

/// Wake storms from two other threads, racing the loop's own wakes of the same task (which
/// wakes itself on every other poll), for a spawned task and for `block_on`'s main future:
/// every item arrives and nothing hangs, so no wake is lost between the loop's local queue and
/// the shared one.
fn wake_storms_from_other_threads<P: Poller>() {
    storm::<P>(false);
    storm::<P>(true);
}

fn storm<P: Poller>(spawned: bool) {
    const ITEMS: usize = 20_000;
    let lp = new_loop::<P>();
    let queue: Arc<Mutex<(Vec<usize>, Option<Waker>)>> = Arc::new(Mutex::new((Vec::new(), None)));
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                for i in 0..ITEMS {
                    let waker = {
                        let mut q = queue.lock().unwrap();
                        q.0.push(t * ITEMS + i);
                        q.1.clone()
                    };
                    if let Some(w) = waker {
                        w.wake();
                    }
                }
            })
        })
        .collect();
    let receive = async move {
        let mut got = Vec::new();
        let mut yielded = false;
        poll_fn(|cx| {
            {
                let mut q = queue.lock().unwrap();
                got.append(&mut q.0);
                if got.len() == 2 * ITEMS {
                    return Poll::Ready(());
                }
                q.1 = Some(cx.waker().clone());
            }
            yielded = !yielded;
            if yielded {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
        .await;
        got
    };
    let mut got = if spawned {
        lp.block_on(async { ioloop::spawn(receive).await.unwrap() })
            .unwrap()
    } else {
        lp.block_on(receive).unwrap()
    };
    for s in senders {
        s.join().unwrap();
    }
    got.sort_unstable();
    assert!(
        got.iter().copied().eq(0..2 * ITEMS),
        "every item arrived once"
    );
}

fn handle_spawn_from_another_thread<P: Poller>() {
    let lp = new_loop::<P>();
    let handle = lp.handle();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        handle
            .spawn(async move {
                ioloop::yield_now().await;
                tx.send(std::thread::current().id()).unwrap();
            })
            .unwrap();
    });
    let mut got = None;
    lp.run_until(|_| {
        got = rx.try_recv().ok();
        got.is_some()
    })
    .unwrap();
    assert_eq!(
        got,
        Some(std::thread::current().id()),
        "ran on the loop thread"
    );
    t.join().unwrap();
}

/// Once the loop is dropped, a `Handle` refuses new callbacks and tasks (`NotConnected`) and
/// drops them at once, and the ones queued before are dropped with the loop, not kept until
/// the last `Handle` goes.
#[test]
fn handle_after_the_loop_is_dropped() {
    /// Sends on its channel when dropped.
    struct Dropped(mpsc::Sender<&'static str>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send("dropped");
        }
    }
    let lp = IoLoop::new().unwrap();
    let handle = lp.handle();
    let (tx, rx) = mpsc::channel();
    let queued = Dropped(tx.clone());
    handle.add_callback(move |_| drop(queued)).unwrap();
    drop(lp);
    assert_eq!(
        rx.try_recv(),
        Ok("dropped"),
        "a queued callback outlived the loop"
    );
    let late = Dropped(tx);
    let err = handle.spawn(async move { drop(late) }).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    assert_eq!(rx.try_recv(), Ok("dropped"), "a refused task was kept");
    handle.stop().unwrap();
}

// ----- Async: readiness on every backend ---------------------------------------------------

/// A reader task blocked on an empty socket is woken by the reactor when data arrives,
/// many times over; a writer blocked on a full socket is woken when the peer drains it.
fn readiness_wakeups<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (a, b) = Async::<UnixStream>::pair().unwrap();
        let reader = ioloop::spawn(async move {
            let mut total = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                let n = b.read_with(|mut s| s.read(&mut buf)).await.unwrap();
                if n == 0 {
                    return total;
                }
                total.extend_from_slice(&buf[..n]);
            }
        });
        for i in 0..50u8 {
            a.write_with(|mut s| s.write(&[i])).await.unwrap();
            // Let the reader drain and block again, so each byte is a fresh wake-up.
            ioloop::yield_now().await;
            ioloop::yield_now().await;
        }
        drop(a); // EOF
        let got = reader.await.unwrap();
        assert_eq!(got, (0..50u8).collect::<Vec<_>>());

        // Writability: fill the socket, then a reader drains it.
        let (a, b) = Async::<UnixStream>::pair().unwrap();
        let chunk = [7u8; 4096];
        let mut filled = 0usize;
        loop {
            match a.get_ref().write(&chunk) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let drain = ioloop::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut got = 0usize;
            while got < filled + 1 {
                got += b.read_with(|mut s| s.read(&mut buf)).await.unwrap();
            }
            got
        });
        let n = a.write_with(|mut s| s.write(b"!")).await.unwrap();
        assert_eq!(n, 1);
        assert_eq!(drain.await.unwrap(), filled + 1);
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0, "Async values left handlers behind");
}

/// Tasks take turns waiting on one source: each wait is woken through its own task's waker,
/// not through the one the source kept from the task before (a woken task's waker stays with
/// the source for its next wait, and a wait by another task replaces it).
fn tasks_take_turns_on_one_source<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (a, b) = Async::<UnixStream>::pair().unwrap();
        let b = Rc::new(b);
        for round in 0..20u8 {
            let reader = {
                let b = b.clone();
                ioloop::spawn(async move {
                    let mut buf = [0u8; 1];
                    let n = b.read_with(|mut s| s.read(&mut buf)).await.unwrap();
                    (n, buf[0])
                })
            };
            // The reader runs, finds nothing and parks before the byte is written.
            ioloop::yield_now().await;
            a.write_with(|mut s| s.write(&[round])).await.unwrap();
            assert_eq!(reader.await.unwrap(), (1, round));
        }
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// `readable()` and `writable()` on one source, waited on by two tasks at once.
fn read_and_write_waiters_at_once<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (a, b) = Async::<UnixStream>::pair().unwrap();
        let a = Rc::new(a);
        // Fill `a` so that its writer must wait.
        let chunk = [1u8; 4096];
        while a.get_ref().write(&chunk).is_ok() {}
        let r = {
            let a = a.clone();
            ioloop::spawn(async move {
                a.readable().await.unwrap();
                let mut buf = [0u8; 8];
                a.get_ref().read(&mut buf).unwrap()
            })
        };
        let w = {
            let a = a.clone();
            ioloop::spawn(async move { a.write_with(|mut s| s.write(b"x")).await.unwrap() })
        };
        ioloop::yield_now().await;
        // Only the reader's readiness arrives first.
        b.write_with(|mut s| s.write(b"hi")).await.unwrap();
        assert_eq!(r.await.unwrap(), 2);
        assert!(!w.is_finished());
        // Now drain `b` so the writer can go on.
        let mut buf = vec![0u8; 65536];
        while !w.is_finished() {
            match b.get_ref().read(&mut buf) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ioloop::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(w.await.unwrap(), 1);
    })
    .unwrap();
}

/// An echo server with many concurrent clients over TCP loopback.
fn echo_many_clients<P: Poller>() {
    const CLIENTS: usize = 50;
    const MESSAGES: usize = 100;
    let lp = new_loop::<P>();
    lp.block_on(async {
        let listener = Async::<TcpListener>::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = ioloop::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                ioloop::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = (&stream).read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        (&stream).write_all(&buf[..n]).await.unwrap();
                    }
                })
                .detach();
            }
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                ioloop::spawn(async move {
                    let mut stream = Async::<TcpStream>::connect(addr).await.unwrap();
                    for m in 0..MESSAGES {
                        let msg = format!("client {c} message {m}\n");
                        stream.write_all(msg.as_bytes()).await.unwrap();
                        let mut back = vec![0u8; msg.len()];
                        stream.read_exact(&mut back).await.unwrap();
                        assert_eq!(back, msg.as_bytes());
                    }
                    MESSAGES
                })
            })
            .collect();
        let mut total = 0;
        for c in clients {
            total += c.await.unwrap();
        }
        assert_eq!(total, CLIENTS * MESSAGES);
        server.cancel();
    })
    .unwrap();
}

/// Sockets the task layer makes: TCP (`accept`, `connect`), over IPv4 and (where the
/// machine has it) IPv6, and Unix pairs (stream and datagram): non-blocking and
/// close-on-exec, each address the other end's, and data flows both ways.
fn sockets_made_nonblocking_and_cloexec<P: Poller>() {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    use std::os::fd::AsFd;
    fn check(what: &str, fd: std::os::fd::BorrowedFd<'_>) {
        let fl = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK), "{what}: O_NONBLOCK");
        let fd_fl = FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD).unwrap());
        assert!(fd_fl.contains(FdFlag::FD_CLOEXEC), "{what}: FD_CLOEXEC");
    }
    let lp = new_loop::<P>();
    lp.block_on(async {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let listener = match Async::<TcpListener>::bind(host) {
                Ok(l) => l,
                // A machine without IPv6 loopback.
                Err(e) if host.starts_with('[') => {
                    eprintln!("note: {host}: {e}; IPv6 not checked");
                    continue;
                }
                Err(e) => panic!("{host}: {e}"),
            };
            let addr = listener.local_addr().unwrap();
            let accepting = ioloop::spawn(async move { listener.accept().await.unwrap() });
            let mut client = Async::<TcpStream>::connect(addr).await.unwrap();
            let (mut server, peer) = ioloop::timeout(HANG, accepting)
                .await
                .expect("hung")
                .unwrap();
            check("connected", client.as_fd());
            check("accepted", server.as_fd());
            assert_eq!(peer, client.get_ref().local_addr().unwrap(), "{host}");
            assert_eq!(client.peer_addr().unwrap(), addr, "{host}");
            // Nothing queued: the accepted socket's own read says WouldBlock, never blocks.
            let err = server.get_ref().read(&mut [0u8; 1]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{host}");
            client.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            server.write_all(b"pong").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
        }
        let (mut a, mut b) = Async::<UnixStream>::pair().unwrap();
        check("stream pair a", a.as_fd());
        check("stream pair b", b.as_fd());
        a.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        let (c, d) = Async::<UnixDatagram>::pair().unwrap();
        check("datagram pair c", c.as_fd());
        check("datagram pair d", d.as_fd());
        d.send(b"pong").await.unwrap();
        assert_eq!(c.recv(&mut buf).await.unwrap(), 4);
        assert_eq!(&buf, b"pong");
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// `flush` does not wait for room: after a write cut short by a full buffer, and after
/// one given up by a timeout, `flush` and `close` return at once (`close` only flushes);
/// a `shutdown` of the write side then lets the peer read the data and the end of the
/// stream (a Unix pair and TCP).
fn flush_and_close_after_a_full_buffer<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (a, b) = Async::<UnixStream>::pair().unwrap();
        let big = vec![7u8; 8 << 20];
        let n = (&a).write(&big).await.unwrap();
        assert!(n < big.len(), "{}: the buffer took {n} bytes", P::NAME);
        ioloop::timeout(HANG, (&a).flush())
            .await
            .expect("flush waited for room")
            .unwrap();
        ioloop::timeout(HANG, (&a).close())
            .await
            .expect("close waited for room")
            .unwrap();
        a.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        (&b).read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), n, "{}", P::NAME);

        let listener = Async::<TcpListener>::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepting = ioloop::spawn(async move { listener.accept().await.unwrap().0 });
        let mut client = Async::<TcpStream>::connect(addr).await.unwrap();
        let server = ioloop::timeout(HANG, accepting)
            .await
            .expect("hung")
            .unwrap();
        // More than the socket buffers hold: given up after a while.
        let huge = vec![1u8; 64 << 20];
        let written = ioloop::timeout(Duration::from_millis(20), client.write_all(&huge)).await;
        assert!(written.is_err(), "{}: 64 MiB fit", P::NAME);
        ioloop::timeout(HANG, client.close())
            .await
            .expect("close waited for room")
            .unwrap();
        client
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let mut got = Vec::new();
        ioloop::timeout(HANG, (&server).read_to_end(&mut got))
            .await
            .expect("no end of stream after close")
            .unwrap();
        assert!(
            !got.is_empty() && got.iter().all(|&x| x == 1),
            "{}",
            P::NAME
        );
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// UDP datagrams and a refused TCP connection.
fn udp_and_connect_errors<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let a = Async::<UdpSocket>::bind("127.0.0.1:0").unwrap();
        let b = Async::<UdpSocket>::bind("127.0.0.1:0").unwrap();
        let b_addr = b.local_addr().unwrap();
        let recv = ioloop::spawn(async move {
            let mut buf = [0u8; 32];
            let (n, from) = b.recv_from(&mut buf).await.unwrap();
            (buf[..n].to_vec(), from)
        });
        ioloop::yield_now().await;
        a.send_to(b"datagram", b_addr).await.unwrap();
        let (data, from) = recv.await.unwrap();
        assert_eq!(data, b"datagram");
        assert_eq!(from, a.local_addr().unwrap());

        // A port with no listener: bind one, note its address, close it.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = Async::<TcpStream>::connect(closed).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// Unix stream sockets by path: a listener accepts clients that connect by its path, each
/// side sees the other's address, and data goes both ways.
fn unix_listener_and_connect<P: Poller>() {
    const CLIENTS: u8 = 3;
    let dir = util::TempDir::new("ul");
    let path = dir.path("s");
    let lp = new_loop::<P>();
    lp.block_on(async {
        let listener = Async::<UnixListener>::bind(&path).unwrap();
        assert_eq!(listener.local_addr().unwrap().as_pathname(), Some(&*path));
        let server = ioloop::spawn(async move {
            let mut echoes = Vec::new();
            for _ in 0..CLIENTS {
                let (stream, peer) = listener.accept().await.unwrap();
                // The clients' sockets are not bound to a path.
                assert!(peer.is_unnamed());
                echoes.push(ioloop::spawn(async move {
                    let mut buf = [0u8; 64];
                    loop {
                        let n = (&stream).read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        (&stream).write_all(&buf[..n]).await.unwrap();
                    }
                }));
            }
            for e in echoes {
                e.await.unwrap();
            }
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let path = path.clone();
                ioloop::spawn(async move {
                    let mut stream = Async::<UnixStream>::connect(&path).await.unwrap();
                    assert_eq!(stream.peer_addr().unwrap().as_pathname(), Some(&*path));
                    let msg = [c; 10];
                    stream.write_all(&msg).await.unwrap();
                    let mut back = [0u8; 10];
                    stream.read_exact(&mut back).await.unwrap();
                    assert_eq!(back, msg);
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        server.await.unwrap();
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// What connecting and binding by path report: nothing there, a socket file with no
/// listener, a path taken, a path too long for a socket address.
fn unix_connect_errors<P: Poller>() {
    let dir = util::TempDir::new("ue");
    let lp = new_loop::<P>();
    lp.block_on(async {
        let err = Async::<UnixStream>::connect(dir.path("missing"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        // A listener's socket file stays when the listener is dropped.
        let stale = dir.path("stale");
        drop(Async::<UnixListener>::bind(&stale).unwrap());
        assert!(stale.exists());
        let err = Async::<UnixStream>::connect(&stale).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let err = Async::<UnixListener>::bind(&stale).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let err = Async::<UnixDatagram>::bind(&stale).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let long = dir.path(&"x".repeat(200));
        let err = Async::<UnixStream>::connect(&long).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let err = Async::<UnixListener>::bind(&long).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// Linux: a connect to a listener whose backlog is full does not wait for room; it reports
/// `WouldBlock`, and connects again once the listener has accepted.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn unix_connect_to_a_full_backlog<P: Poller>() {
    use nix::sys::socket::UnixAddr;
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let dir = util::TempDir::new("ub");
    let path = dir.path("s");
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    // Backlog 0: Linux queues one connection, and refuses the next with EAGAIN.
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    let listener = UnixListener::from(fd);
    let lp = new_loop::<P>();
    lp.block_on(async {
        let mut connected = Vec::new();
        let err = loop {
            match Async::<UnixStream>::connect(&path).await {
                Ok(s) => connected.push(s),
                Err(e) => break e,
            }
            assert!(connected.len() < 100, "the backlog never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert!(!connected.is_empty());
        // Room again once one is accepted (a queued connection: accept does not block).
        let _accepted = listener.accept().unwrap();
        let again = Async::<UnixStream>::connect(&path).await.unwrap();
        drop((connected, again));
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// Linux: a datagram sent by path to a receiver whose queue is full. The kernel refuses it
/// with EAGAIN and, for a sender not connected to that receiver, never reports when there
/// is room: `send_to` reports `WouldBlock` instead of waiting for a report that does not
/// come (it hung on an edge-triggered poller, and spun on the others). A sender connected
/// to the receiver is told (Linux wakes it when the queue has room): its `send` waits.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn unix_datagram_to_a_full_receiver<P: Poller>() {
    let dir = util::TempDir::new("uf");
    let path = dir.path("r");
    let lp = new_loop::<P>();
    lp.block_on(async {
        let receiver = Async::<UnixDatagram>::bind(&path).unwrap();
        // Other senders fill the receiver's queue, each until its own send buffer or the
        // queue is full, until a fresh one's first datagram is refused: the queue is full.
        let mut fillers = Vec::new();
        loop {
            let filler = UnixDatagram::unbound().unwrap();
            filler.set_nonblocking(true).unwrap();
            let mut sent = 0;
            while filler.send_to(b"fill", &path).is_ok() {
                sent += 1;
            }
            fillers.push(filler);
            if sent == 0 {
                break;
            }
            assert!(fillers.len() < 1000, "the receiver's queue never filled");
        }
        let sender = Async::<UnixDatagram>::unbound().unwrap();
        // A hang ends when the watchdog shuts the sender down (its send then fails).
        let twin = sender.get_ref().try_clone().unwrap();
        let watchdog = Watchdog::new(30, move || {
            let _ = twin.shutdown(std::net::Shutdown::Both);
        });
        let err = sender.send_to(b"late", &path).await.unwrap_err();
        watchdog.check("send_to a full receiver");
        drop(watchdog);
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        // Room for one again: the send goes through, and the queue is full again.
        let mut buf = [0u8; 8];
        assert_eq!(receiver.recv(&mut buf).await.unwrap(), 4);
        assert_eq!(sender.send_to(b"late", &path).await.unwrap(), 4);

        // A sender connected to the receiver waits, and is woken when the receiver reads.
        let connected = Async::<UnixDatagram>::unbound().unwrap();
        connected.get_ref().connect(&path).unwrap();
        let connected = Rc::new(connected);
        let late = {
            let connected = connected.clone();
            ioloop::spawn(async move { connected.send(b"later").await.unwrap() })
        };
        ioloop::yield_now().await;
        assert!(!late.is_finished());
        assert_eq!(receiver.recv(&mut buf).await.unwrap(), 4);
        let sent = ioloop::timeout(HANG, late)
            .await
            .expect("the connected sender was not woken");
        assert_eq!(sent.unwrap(), 5);
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// Connected datagram sockets `$x` and `$y` (Unix or UDP, whose `send`/`recv` are inherent
/// methods of each): `$y`, in a task parked first, echoes the one datagram `$x` sends.
macro_rules! assert_echoed {
    ($x:expr, $y:expr, $msg:expr) => {{
        let (x, y, msg): (_, _, &[u8]) = ($x, $y, $msg);
        let echo = ioloop::spawn(async move {
            let mut buf = [0u8; 64];
            let n = y.recv(&mut buf).await.unwrap();
            y.send(&buf[..n]).await.unwrap()
        });
        ioloop::yield_now().await;
        assert_eq!(x.send(msg).await.unwrap(), msg.len());
        let mut buf = [0u8; 64];
        assert_eq!(x.recv(&mut buf).await.unwrap(), msg.len());
        assert_eq!(&buf[..msg.len()], msg);
        assert_eq!(echo.await.unwrap(), msg.len());
    }};
}

/// Unix datagram sockets: by path (a datagram longer than the buffer is cut, the sender's
/// address comes with it, an unbound sender's is unnamed), and a connected pair.
fn unix_datagrams<P: Poller>() {
    let dir = util::TempDir::new("ud");
    let (path_a, path_b) = (dir.path("a"), dir.path("b"));
    let lp = new_loop::<P>();
    lp.block_on(async {
        let a = Async::<UnixDatagram>::bind(&path_a).unwrap();
        let b = Async::<UnixDatagram>::bind(&path_b).unwrap();
        assert_eq!(b.local_addr().unwrap().as_pathname(), Some(&*path_b));
        let recv = ioloop::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..2 {
                let mut buf = [0u8; 4];
                let (n, from) = b.recv_from(&mut buf).await.unwrap();
                got.push((buf[..n].to_vec(), from.as_pathname().map(|p| p.to_owned())));
            }
            got
        });
        // The receiver parks before anything is sent.
        ioloop::yield_now().await;
        assert_eq!(a.send_to(b"datagram", &path_b).await.unwrap(), 8);
        let unbound = Async::<UnixDatagram>::unbound().unwrap();
        assert_eq!(unbound.send_to(b"hi", &path_b).await.unwrap(), 2);
        assert_eq!(
            recv.await.unwrap(),
            vec![
                (b"data".to_vec(), Some(path_a.clone())),
                (b"hi".to_vec(), None)
            ]
        );
        let err = a.send_to(b"x", dir.path("missing")).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");

        let (x, y) = Async::<UnixDatagram>::pair().unwrap();
        assert_echoed!(x, y, b"ping");
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// `msg` from `a` to `b` and back, over a connected stream pair.
async fn stream_round_trip(mut a: Async<UnixStream>, mut b: Async<UnixStream>, msg: &[u8]) {
    let mut buf = vec![0u8; msg.len()];
    a.write_all(msg).await.unwrap();
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
    b.write_all(msg).await.unwrap();
    a.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
}

/// Unix sockets by `std::os::unix::net::SocketAddr` (`bind_addr`, `connect_addr`,
/// `send_to_addr`), here with paths: the same as by path; an unnamed address reaches
/// nothing (`InvalidInput`).
fn unix_sockets_by_address<P: Poller>() {
    use std::os::unix::net::SocketAddr;
    let dir = util::TempDir::new("ua");
    let lp = new_loop::<P>();
    lp.block_on(async {
        let at = SocketAddr::from_pathname(dir.path("l")).unwrap();
        let listener = Async::<UnixListener>::bind_addr(&at).unwrap();
        let accepting = ioloop::spawn(async move { listener.accept().await.unwrap().0 });
        let client = Async::<UnixStream>::connect_addr(&at).await.unwrap();
        assert_eq!(client.peer_addr().unwrap().as_pathname(), at.as_pathname());
        let server = ioloop::timeout(HANG, accepting)
            .await
            .expect("hung")
            .unwrap();
        stream_round_trip(client, server, b"by address").await;

        let (a_at, b_at) = (
            SocketAddr::from_pathname(dir.path("a")).unwrap(),
            SocketAddr::from_pathname(dir.path("b")).unwrap(),
        );
        let a = Async::<UnixDatagram>::bind_addr(&a_at).unwrap();
        let b = Async::<UnixDatagram>::bind_addr(&b_at).unwrap();
        assert_eq!(a.send_to_addr(b"dgram", &b_at).await.unwrap(), 5);
        let mut buf = [0u8; 8];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (&buf[..n], from.as_pathname()),
            (&b"dgram"[..], a_at.as_pathname())
        );

        let unnamed = Async::<UnixDatagram>::unbound()
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(unnamed.is_unnamed());
        let err = Async::<UnixStream>::connect_addr(&unnamed)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let err = a.send_to_addr(b"x", &unnamed).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// UDP's connected `send` and `recv`.
fn udp_connected_send_and_recv<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let a = Async::<UdpSocket>::bind("127.0.0.1:0").unwrap();
        let b = Async::<UdpSocket>::bind("127.0.0.1:0").unwrap();
        a.get_ref().connect(b.local_addr().unwrap()).unwrap();
        b.get_ref().connect(a.local_addr().unwrap()).unwrap();
        assert_echoed!(a, b, b"over udp");
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// `Async::with_loop` outside a running loop; `into_inner` deregisters.
fn with_loop_and_into_inner<P: Poller>() {
    let lp = new_loop::<P>();
    let (a, b) = UnixStream::pair().unwrap();
    let a = Async::with_loop(&lp, a).unwrap();
    let b = Async::with_loop(&lp, b).unwrap();
    assert_eq!(lp.handler_count(), 2);
    let task = lp.spawn(async move {
        let mut buf = [0u8; 4];
        let n = b.read_with(|mut s| s.read(&mut buf)).await.unwrap();
        (buf[..n].to_vec(), b.into_inner().unwrap())
    });
    let sent = lp.block_on(async { a.write_with(|mut s| s.write(b"abc")).await.unwrap() });
    assert_eq!(sent.unwrap(), 3);
    let (got, _raw) = lp.block_on(task).unwrap().unwrap();
    assert_eq!(got, b"abc");
    assert_eq!(lp.handler_count(), 1);
    drop(a);
    assert_eq!(lp.handler_count(), 0);
}

// ----- Async: the readiness cache (edge-triggered where the poller has it) -----------------

/// The byte at offset `i` of a test stream (a pattern that shows loss and reordering).
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Stops the test if it hangs: after `secs`, runs `fire` (which must unblock the test, for
/// example by shutting a socket down) and records that it fired. Dropping it disarms it.
struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    fired: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn new(secs: u64, fire: impl FnOnce() + Send + 'static) -> Self {
        let (stop, rx) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs))
            {
                flag.store(true, Ordering::SeqCst);
                fire();
            }
        });
        Self {
            stop: Some(stop),
            fired,
            thread: Some(thread),
        }
    }

    /// Panics if the watchdog had to fire.
    fn check(&self, what: &str) {
        assert!(
            !self.fired.load(Ordering::SeqCst),
            "{what}: hung (lost wake-up?), the watchdog fired"
        );
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A watchdog that shuts `sock` down (both ways) when it fires: a task blocked on it wakes.
fn shutdown_watchdog(sock: &UnixStream) -> Watchdog {
    let s = sock.try_clone().unwrap();
    Watchdog::new(60, move || {
        let _ = s.shutdown(std::net::Shutdown::Both);
    })
}

/// A thread writing `total` pattern bytes into `w` (blocking) in chunks of varying sizes,
/// then closing it.
fn pattern_writer(mut w: UnixStream, total: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let data: Vec<u8> = (0..total).map(pattern).collect();
        let mut at = 0;
        let mut seed = 12345u32;
        while at < total {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let len = (1 + (seed >> 16) as usize % 8192).min(total - at);
            if w.write_all(&data[at..at + len]).is_err() {
                return; // shut down by the watchdog
            }
            at += len;
        }
    })
}

/// Data that arrives after a short read is still delivered: a short read on a stream
/// clears the readiness (futures-io `poll_read`), and the next write makes a new edge. Also
/// `read_with` with a buffer smaller than what is there: the rest is read without a report.
fn data_after_partial_read<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (a, b) = Async::<UnixStream>::pair().unwrap();
        let dog = shutdown_watchdog(b.get_ref());
        let reader = ioloop::spawn(async move {
            let mut got = Vec::new();
            // Bigger than any write: every read of this loop is short.
            let mut buf = [0u8; 64];
            while got.len() < 30 {
                let n = (&b).read(&mut buf).await.unwrap();
                assert!(n > 0, "early EOF after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
            }
            // Smaller than what is there: read_with must not wait for a new report.
            let mut small = [0u8; 3];
            while got.len() < 40 {
                let n = b.read_with(|mut s| s.read(&mut small)).await.unwrap();
                assert!(n > 0, "early EOF after {} bytes", got.len());
                got.extend_from_slice(&small[..n]);
            }
            got
        });
        for i in 0..3 {
            // 10 bytes, after the reader has read the last ones short and parked.
            let chunk: Vec<u8> = (i * 10..i * 10 + 10).map(pattern).collect();
            a.write_with(|mut s| s.write(&chunk)).await.unwrap();
            for _ in 0..3 {
                ioloop::yield_now().await;
            }
        }
        // 10 bytes in one write, read 3 at a time with no new edge in between.
        let chunk: Vec<u8> = (30..40).map(pattern).collect();
        a.write_with(|mut s| s.write(&chunk)).await.unwrap();
        let got = reader.await.unwrap();
        dog.check("data_after_partial_read");
        assert_eq!(got, (0..40).map(pattern).collect::<Vec<_>>());
    })
    .unwrap();
}

/// End of file that arrives together with the last data (one report for both): the short
/// read of the data must not hide the end of file behind a report that never comes. Also
/// for a write end shut down after the data, and for a pipe.
fn eof_with_the_last_data<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let hang_guard = Duration::from_secs(30);
        for how in ["close", "shutdown", "pipe"] {
            let (r, w): (std::os::fd::OwnedFd, std::os::fd::OwnedFd) = if how == "pipe" {
                let (r, w) = nix::unistd::pipe().unwrap();
                (r, w)
            } else {
                let (r, w) = UnixStream::pair().unwrap();
                (r.into(), w.into())
            };
            let r = Async::new(std::fs::File::from(r)).unwrap();
            let reader = ioloop::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 64];
                loop {
                    let n = ioloop::timeout(hang_guard, (&r).read(&mut buf))
                        .await
                        .expect("hung: the end of file was never reported")
                        .unwrap();
                    if n == 0 {
                        return got;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            });
            // The reader parks on the empty stream (its direction is registered).
            for _ in 0..3 {
                ioloop::yield_now().await;
            }
            let mut w = std::fs::File::from(w);
            w.write_all(b"abc").unwrap();
            if how == "shutdown" {
                let s = UnixStream::from(std::os::fd::OwnedFd::from(w));
                s.shutdown(std::net::Shutdown::Write).unwrap();
                // Kept open: only the shutdown tells the reader.
                let got = reader.await.unwrap();
                drop(s);
                assert_eq!(got, b"abc", "{how}");
            } else {
                drop(w);
                assert_eq!(reader.await.unwrap(), b"abc", "{how}");
            }
        }
    })
    .unwrap();
}

/// A short read on a socket that returns one message per read (a datagram socket under a
/// `Read` type) does not show it drained: the second queued datagram is read at once,
/// without waiting for a new report (which, edge-triggered, would never come).
fn short_datagram_read_keeps_readiness<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let b = Async::new(UnixStream::from(std::os::fd::OwnedFd::from(b))).unwrap();
        a.send(b"one").unwrap();
        a.send(b"two").unwrap();
        let mut buf = [0u8; 64];
        let n = (&b).read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"one");
        // Ready on the first poll: no wait for the reactor.
        let n = futures_lite::future::poll_once((&b).read(&mut buf))
            .await
            .expect("the queued datagram needed a new report")
            .unwrap();
        assert_eq!(&buf[..n], b"two");
    })
    .unwrap();
}

/// `readable()` completes when data is already there and its report was already consumed
/// (an edge-triggered registration must be made to report the current state again), and
/// again after a raw read that left data behind; `writable()` completes on a socket with room.
fn readable_with_data_already_there<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (a, b) = Async::<UnixStream>::pair().unwrap();
        let reader = ioloop::spawn(async move {
            let mut one = [0u8; 1];
            // Parks (empty socket), then reads 1 of the 3 bytes the report was for.
            b.read_with(|mut s| s.read(&mut one)).await.unwrap();
            let hang_guard = Duration::from_secs(30);
            for _ in 0..2 {
                ioloop::timeout(hang_guard, b.readable())
                    .await
                    .expect("readable() hung with data pending")
                    .unwrap();
                b.get_ref().read_exact(&mut one).unwrap();
            }
            ioloop::timeout(hang_guard, b.writable())
                .await
                .expect("writable() hung with room to write")
                .unwrap();
            b
        });
        for _ in 0..3 {
            ioloop::yield_now().await;
        }
        a.get_ref().write_all(b"xyz").unwrap();
        reader.await.unwrap();
    })
    .unwrap();
}

/// A second thread writes a known total in a loop while the task reads it: readiness that
/// arrives around a `WouldBlock` is never lost (every byte arrives, nothing hangs).
fn readiness_races_with_a_writer_thread<P: Poller>() {
    const TOTAL: usize = 2 << 20;
    let lp = new_loop::<P>();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let dog = shutdown_watchdog(&ours);
    let writer = pattern_writer(theirs, TOTAL);
    let got = lp
        .block_on(async {
            let r = Async::new(ours).unwrap();
            let mut got = 0usize;
            let mut buf = [0u8; 4096];
            let mut alternate = false;
            loop {
                // Alternate read_with (reads until WouldBlock) and poll_read (short reads
                // clear the readiness).
                alternate = !alternate;
                let n = if alternate {
                    r.read_with(|mut s| s.read(&mut buf)).await.unwrap()
                } else {
                    (&r).read(&mut buf).await.unwrap()
                };
                if n == 0 {
                    return got;
                }
                for (k, &byte) in buf[..n].iter().enumerate() {
                    assert_eq!(byte, pattern(got + k), "byte {} of the stream", got + k);
                }
                got += n;
            }
        })
        .unwrap();
    writer.join().unwrap();
    dog.check("readiness_races_with_a_writer_thread");
    assert_eq!(got, TOTAL);
}

/// A writer task that fills the socket is woken each time a reader thread drains it: every
/// byte arrives (short writes clear the write readiness; the drain makes a new edge).
fn writable_after_full_buffer_drains<P: Poller>() {
    const TOTAL: usize = 2 << 20;
    let lp = new_loop::<P>();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let dog = shutdown_watchdog(&ours);
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = vec![0u8; 3000];
        loop {
            let n = theirs.read(&mut buf).unwrap();
            if n == 0 {
                return got;
            }
            for (k, &byte) in buf[..n].iter().enumerate() {
                assert_eq!(byte, pattern(got + k), "byte {} of the stream", got + k);
            }
            got += n;
        }
    });
    lp.block_on(async {
        let mut w = Async::new(ours).unwrap();
        let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
        // Half through write_all (futures-io), half through write_with.
        w.write_all(&data[..TOTAL / 2]).await.unwrap();
        let mut at = TOTAL / 2;
        while at < TOTAL {
            let end = (at + 100_000).min(TOTAL);
            at += w.write_with(|mut s| s.write(&data[at..end])).await.unwrap();
        }
        // EOF for the reader (the watchdog holds a clone of the socket).
        w.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
    })
    .unwrap();
    let got = reader.join().unwrap();
    dog.check("writable_after_full_buffer_drains");
    assert_eq!(got, TOTAL);
}

/// One `Async` read by one task and written by another at the same time, while two peer
/// threads write and read the other end: both directions' wake-ups are kept apart.
fn read_and_write_tasks_on_one_source<P: Poller>() {
    const TOTAL: usize = 1 << 20;
    let lp = new_loop::<P>();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let dog = shutdown_watchdog(&ours);
    let mut their_reader = theirs.try_clone().unwrap();
    let writer = pattern_writer(theirs, TOTAL);
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = vec![0u8; 5000];
        while got < TOTAL {
            let n = their_reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            for (k, &byte) in buf[..n].iter().enumerate() {
                assert_eq!(
                    byte,
                    pattern(got + k),
                    "byte {} written by the task",
                    got + k
                );
            }
            got += n;
        }
        got
    });
    let (read, written) = lp
        .block_on(async {
            let s = Rc::new(Async::new(ours).unwrap());
            let r = {
                let s = s.clone();
                ioloop::spawn(async move {
                    let mut got = 0usize;
                    let mut buf = [0u8; 2048];
                    while got < TOTAL {
                        let n = (&*s).read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        for (k, &byte) in buf[..n].iter().enumerate() {
                            assert_eq!(byte, pattern(got + k), "byte {} read by the task", got + k);
                        }
                        got += n;
                    }
                    got
                })
            };
            let w = {
                let s = s.clone();
                ioloop::spawn(async move {
                    let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
                    (&*s).write_all(&data).await.unwrap();
                    TOTAL
                })
            };
            (r.await.unwrap(), w.await.unwrap())
        })
        .unwrap();
    writer.join().unwrap();
    let their_got = reader.join().unwrap();
    dog.check("read_and_write_tasks_on_one_source");
    assert_eq!((read, written, their_got), (TOTAL, TOTAL, TOTAL));
}

// ----- Async: hang-ups, errors, urgent data, reuse (lost wake-up hunt) ----------------------

/// How long a wait that must end may take before a test calls it a hang (only reached when a
/// wake-up is lost; a passing test never waits for it).
const HANG: Duration = Duration::from_secs(30);

/// A connected pair of the given kind as raw fds: "unix" (socketpair) or "tcp" (loopback,
/// Nagle off so each send goes out at once). (ours, theirs).
fn stream_pair(kind: &str) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    if kind == "unix" {
        let (a, b) = UnixStream::pair().unwrap();
        (a.into(), b.into())
    } else {
        let (a, b) = util::tcp_pair();
        a.set_nodelay(true).unwrap();
        b.set_nodelay(true).unwrap();
        b.set_nonblocking(false).unwrap();
        (a.into(), b.into())
    }
}

/// Reads `r` through futures-io with a buffer larger than anything sent (every read that
/// returns data is short) until `want` bytes came, the stream ended or a read failed; each
/// read is bounded by [`HANG`] and a hang panics with `what`.
async fn read_short<T>(r: &Async<T>, want: usize, what: &str) -> (Vec<u8>, Option<io::Error>)
where
    T: std::os::fd::AsFd,
    for<'a> &'a T: Read,
{
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < want {
        let res = ioloop::timeout(HANG, { r }.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: hung after {:?}", got));
        match res {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

/// Lets a just-spawned task run until it parks.
async fn let_run() {
    for _ in 0..3 {
        ioloop::yield_now().await;
    }
}

/// Urgent (out-of-band) data in the middle of a TCP stream: the kernel ends a read early at
/// the urgent mark although the rest of the stream is queued behind it, so a short read
/// there must not count as "drained" (edge-triggered, no further report comes). Linux
/// 5.15+ does the same for a Unix stream socket. The priority report latches "infer
/// nothing" for the source (where priority is exact; elsewhere a TCP or Linux Unix read
/// infers nothing anyway).
fn urgent_data_mid_stream<P: Poller>() {
    use nix::sys::socket::{send, MsgFlags};
    use std::os::fd::AsRawFd;
    let lp = new_loop::<P>();
    lp.block_on(async {
        for kind in ["tcp", "unix"] {
            let (ours, theirs) = stream_pair(kind);
            let r = Async::new(std::fs::File::from(ours)).unwrap();
            let what = format!("{kind}: data after the urgent byte");
            let reader = ioloop::spawn(async move { read_short(&r, 6, &what).await });
            // The reader parks on the empty stream (its direction is registered); then
            // everything arrives before the loop waits again: one report.
            let_run().await;
            let fd = theirs.as_raw_fd();
            send(fd, b"abc", MsgFlags::empty()).unwrap();
            match send(fd, b"X", MsgFlags::MSG_OOB) {
                Ok(_) => {}
                // A kernel without AF_UNIX MSG_OOB (before 5.15, or configured out).
                Err(nix::errno::Errno::EOPNOTSUPP) if kind == "unix" => continue,
                Err(e) => panic!("{kind}: send(MSG_OOB): {e}"),
            }
            send(fd, b"def", MsgFlags::empty()).unwrap();
            let (got, err) = reader.await.unwrap();
            assert!(err.is_none(), "{kind}: {err:?}");
            // The urgent byte is out of band (not inline): the stream is the rest.
            assert_eq!(got, b"abcdef", "{kind}");
        }
    })
    .unwrap();
}

/// A stream socket that counts its `read` calls.
struct CountedReads {
    fd: std::fs::File,
    reads: Rc<Cell<usize>>,
}

/// Through `&CountedReads`, as std's fd types read through `&T`: `&Async<CountedReads>` is
/// what futures-io reads with the short-read inference (not `Async<T>`, whose `T` may
/// buffer).
impl Read for &CountedReads {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads.set(self.reads.get() + 1);
        (&self.fd).read(buf)
    }
}

/// A reader that returns at most 4 bytes a call while more may be queued in the kernel (as
/// a buffering or length-capping wrapper does; std's `Stdin` reads through an 8 KiB buffer).
struct CappedReads(std::fs::File);

impl Read for CappedReads {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(4);
        self.0.read(&mut buf[..n])
    }
}

impl std::os::fd::AsFd for CappedReads {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

thread_local! {
    /// `rearm_keeps_a_wait_begun_by_the_wake_up`'s reader and what it has read.
    static INLINE_READER: RefCell<Option<(Async<UnixStream>, Waker)>> = const { RefCell::new(None) };
    static INLINE_GOT: Cell<usize> = const { Cell::new(0) };
}

/// Reads `INLINE_READER` until it parks (with its own waker, which calls this again).
fn read_inline_until_parked() {
    INLINE_READER.with(|r| {
        let r = r.borrow();
        let (src, waker) = r.as_ref().expect("reader");
        let mut cx = Context::from_waker(waker);
        loop {
            let mut buf = [0u8; 1];
            match futures_io::AsyncRead::poll_read(Pin::new(&mut &*src), &mut cx, &mut buf) {
                Poll::Ready(Ok(n)) => INLINE_GOT.with(|g| g.set(g.get() + n)),
                Poll::Ready(Err(e)) => panic!("read: {e}"),
                Poll::Pending => return,
            }
        }
    });
}

/// A waker that reads again, inline, when woken (a foreign executor's may run code).
struct ReadsInline;

impl std::task::Wake for ReadsInline {
    fn wake(self: Arc<Self>) {
        read_inline_until_parked();
    }
}

/// A reader whose waker waits again inside the wake-up (its own code runs inline), while a
/// writer waits too: the handler's re-arm for the writer keeps the new read wait, so the
/// next byte is reported (on a Oneshot registration the re-arm used to replace it).
fn rearm_keeps_a_wait_begun_by_the_wake_up<P: Poller>() {
    let lp = new_loop::<P>();
    let (a, b) = UnixStream::pair().unwrap();
    let src = Async::with_loop(&lp, a).unwrap();
    // The writer waits on a full buffer (its peer reads nothing yet).
    util::fill(src.get_ref());
    let noop = Waker::from(Arc::new(Woken::default()));
    let mut wcx = Context::from_waker(&noop);
    let wrote = futures_io::AsyncWrite::poll_write(Pin::new(&mut &src), &mut wcx, &[1; 8]);
    assert!(wrote.is_pending());
    INLINE_GOT.with(|g| g.set(0));
    INLINE_READER.with(|r| *r.borrow_mut() = Some((src, Waker::from(Arc::new(ReadsInline)))));
    read_inline_until_parked();
    let guard = lp.call_later(HANG, |lp| lp.stop());
    for (i, byte) in [b"x", b"y"].into_iter().enumerate() {
        (&b).write_all(byte).unwrap();
        lp.run_until(|_| INLINE_GOT.with(|g| g.get()) > i).unwrap();
        assert_eq!(
            INLINE_GOT.with(|g| g.get()),
            i + 1,
            "{}: byte {i} never reported",
            P::NAME
        );
    }
    lp.remove_timeout(guard);
    INLINE_READER.with(|r| drop(r.borrow_mut().take()));
}

/// An `Async` whose registration the reactor has dropped (here by hand) cannot change the
/// registration a newer `Async` made on the same fd number: its wait fails with `NotFound`
/// and the newer one's writer is still woken.
fn stale_async_leaves_the_newer_registration_alone<P: Poller>() {
    let lp = new_loop::<P>();
    let (a, b) = util::socketpair();
    let mut old = Async::with_loop_nonblocking(&lp, &a).unwrap();
    lp.remove_handler(&a).unwrap();
    let mut newer = Async::with_loop_nonblocking(&lp, &a).unwrap();
    util::fill(&a);
    let woken = Arc::new(Woken::default());
    let waker = Waker::from(woken.clone());
    let mut cx = Context::from_waker(&waker);
    let wrote = futures_io::AsyncWrite::poll_write(Pin::new(&mut newer), &mut cx, &[1; 8]);
    assert!(wrote.is_pending());
    let noop = Waker::from(Arc::new(Woken::default()));
    let mut ncx = Context::from_waker(&noop);
    match futures_io::AsyncRead::poll_read(Pin::new(&mut old), &mut ncx, &mut [0; 8]) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound, "{}", P::NAME),
        other => panic!("{}: the stale Async's read: {other:?}", P::NAME),
    }
    // The peer drains: the newer writer is woken.
    util::drain(&b);
    let guard = lp.call_later(HANG, |lp| lp.stop());
    lp.run_until(|_| woken.0.load(Ordering::SeqCst)).unwrap();
    assert!(
        woken.0.load(Ordering::SeqCst),
        "{}: the newer writer was never woken",
        P::NAME
    );
    lp.remove_timeout(guard);
    drop((old, newer));
}

/// A waker that records that it was woken (also a waker to ignore).
#[derive(Default)]
struct Woken(AtomicBool);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Several tasks wait on one `Async` at once, in each way a task can wait: `read_with`, a
/// futures-io read, `readable()`, and `accept` on one shared listener. A report wakes every
/// task waiting for its direction, so none is left asleep (a second waiter used to replace
/// the first one's waker, and the first was never woken).
fn many_tasks_wait_on_one_source<P: Poller>() {
    const N: usize = 4;
    let lp = new_loop::<P>();
    lp.block_on(async {
        // Reads: N tasks, each takes one byte of one write of N.
        let (a, b) = Async::<UnixStream>::pair().unwrap();
        let b = Rc::new(b);
        let readers: Vec<_> = (0..N)
            .map(|i| {
                let b = b.clone();
                ioloop::spawn(async move {
                    let mut buf = [0u8; 1];
                    let read = async {
                        if i % 2 == 0 {
                            b.read_with(|mut s| s.read(&mut buf)).await
                        } else {
                            (&*b).read(&mut buf).await
                        }
                    };
                    let n = ioloop::timeout(HANG, read)
                        .await
                        .unwrap_or_else(|_| panic!("reader {i} was never woken"))
                        .unwrap();
                    assert_eq!(n, 1);
                    buf[0]
                })
            })
            .collect();
        let_run().await;
        a.get_ref().write_all(&[1, 2, 3, 4]).unwrap();
        let mut got = Vec::new();
        for r in readers {
            got.push(r.await.unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3, 4], "{}", P::NAME);

        // readable(): N tasks, one report; the byte stays for all of them to see.
        let waiters: Vec<_> = (0..N)
            .map(|i| {
                let b = b.clone();
                ioloop::spawn(async move {
                    ioloop::timeout(HANG, b.readable())
                        .await
                        .unwrap_or_else(|_| panic!("readable() {i} was never woken"))
                        .unwrap();
                })
            })
            .collect();
        let_run().await;
        a.get_ref().write_all(b"x").unwrap();
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(b.get_ref().read(&mut [0u8; 8]).unwrap(), 1);

        // accept: N tasks on one listener, N clients; each task gets one connection.
        let listener = Rc::new(Async::<TcpListener>::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let acceptors: Vec<_> = (0..N)
            .map(|i| {
                let listener = listener.clone();
                ioloop::spawn(async move {
                    let (s, _) = ioloop::timeout(HANG, listener.accept())
                        .await
                        .unwrap_or_else(|_| panic!("acceptor {i} was never woken"))
                        .unwrap();
                    s.peer_addr().unwrap()
                })
            })
            .collect();
        let_run().await;
        let clients: Vec<_> = (0..N).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut peers = Vec::new();
        for t in acceptors {
            peers.push(t.await.unwrap());
        }
        let mut want: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        peers.sort_unstable();
        want.sort_unstable();
        assert_eq!(peers, want, "{}", P::NAME);
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// A waker that panics (a foreign executor's may).
struct Panics;

impl std::task::Wake for Panics {
    fn wake(self: Arc<Self>) {
        panic!("a waker that panics");
    }
}

/// A waker that panics does not keep the other tasks of the same report asleep: neither a
/// second reader of the same direction nor a writer woken by the same report. The panic
/// comes out of the loop's run, and the loop goes on.
fn a_panicking_waker_wakes_the_others<P: Poller>() {
    let lp = new_loop::<P>();
    let (a, b) = util::socketpair();
    let src = Async::with_loop(&lp, a).unwrap();
    let panics = Waker::from(Arc::new(Panics));
    let mut pcx = Context::from_waker(&panics);
    let run_panics = |what: &str| {
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run_once()));
        assert!(
            res.is_err(),
            "{}: {what}: the waker's panic was lost",
            P::NAME
        );
    };

    // Two readers: the panicking one parked first.
    let other = Arc::new(Woken::default());
    let owaker = Waker::from(other.clone());
    let mut ocx = Context::from_waker(&owaker);
    let read = |cx: &mut Context<'_>| {
        futures_io::AsyncRead::poll_read(Pin::new(&mut &src), cx, &mut [0u8; 8])
    };
    assert!(read(&mut pcx).is_pending());
    assert!(read(&mut ocx).is_pending());
    (&b).write_all(b"x").unwrap();
    run_panics("two readers");
    assert!(
        other.0.load(Ordering::SeqCst),
        "{}: the second reader was never woken",
        P::NAME
    );
    assert!(matches!(read(&mut ocx), Poll::Ready(Ok(1))));

    // A writer parked on a full buffer, then the panicking reader.
    let park_writer_and_reader = |pcx: &mut Context<'_>| {
        util::fill(src.get_ref());
        let writer = Arc::new(Woken::default());
        let wwaker = Waker::from(writer.clone());
        let mut wcx = Context::from_waker(&wwaker);
        let wrote = futures_io::AsyncWrite::poll_write(Pin::new(&mut &src), &mut wcx, &[1; 8]);
        assert!(wrote.is_pending());
        assert!(read(pcx).is_pending());
        writer
    };

    // A reader and a writer, one report for both.
    let writer = park_writer_and_reader(&mut pcx);
    (&b).write_all(b"y").unwrap();
    util::drain(&b);
    // Both may come in one report, or the writer's in a later one.
    let guard = lp.call_later(HANG, |lp| lp.stop());
    run_panics("a reader and a writer");
    lp.run_until(|_| writer.0.load(Ordering::SeqCst)).unwrap();
    lp.remove_timeout(guard);
    assert!(
        writer.0.load(Ordering::SeqCst),
        "{}: the writer was never woken",
        P::NAME
    );
    assert!(matches!(read(&mut ocx), Poll::Ready(Ok(1))));

    // A report for the reader alone while the writer waits: on a Oneshot registration the
    // report disarms both directions, and the writer's must be armed again although the
    // reader's waker panics.
    let writer = park_writer_and_reader(&mut pcx);
    (&b).write_all(b"z").unwrap();
    run_panics("a reader's report while a writer waits");
    assert!(!writer.0.load(Ordering::SeqCst), "{}", P::NAME);
    util::drain(&b);
    let guard = lp.call_later(HANG, |lp| lp.stop());
    lp.run_until(|_| writer.0.load(Ordering::SeqCst)).unwrap();
    lp.remove_timeout(guard);
    assert!(
        writer.0.load(Ordering::SeqCst),
        "{}: the writer was never woken after the reader's waker panicked",
        P::NAME
    );
    drop(src);
    assert_eq!(lp.handler_count(), 0);
}

/// A loop dropped while a `Handle` keeps its poller alive deregisters its fds first, so a
/// socket its tasks' `Async`s close as they drop is closed (on io_uring a registration holds
/// the file open).
fn loop_dropped_under_a_live_handle_closes_sockets<P: Poller>() {
    let lp = new_loop::<P>();
    let handle = lp.handle();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.set_nonblocking(true).unwrap();
    lp.block_on(async {
        let a = Async::new(ours).unwrap();
        ioloop::spawn(async move {
            let _ = a.readable().await;
        })
        .detach();
        // The task parks: the fd is registered.
        let_run().await;
    })
    .unwrap();
    drop(lp);
    let end = theirs.read(&mut [0u8; 8]).map_err(|e| e.kind());
    assert_eq!(end, Ok(0), "{}: the socket stayed open", P::NAME);
    drop(handle);
}

/// `Async<T>` through futures-io infers nothing from a short read (its `T` may cap or
/// buffer): a reader that takes 4 bytes a call reads all 10 queued, with no report after
/// the first (which, edge-triggered, would never come).
fn capped_reads_lose_nothing<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut r = Async::new(CappedReads(std::fs::File::from(
            std::os::fd::OwnedFd::from(ours),
        )))
        .unwrap();
        let reader = ioloop::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < 10 {
                let n = r.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        // The reader parks on the empty socket (its direction is registered), then all ten
        // bytes arrive at once: one report.
        let_run().await;
        (&theirs).write_all(b"0123456789").unwrap();
        let got = ioloop::timeout(HANG, reader)
            .await
            .expect("hung: bytes left unread after a short read")
            .unwrap();
        assert_eq!(got, b"0123456789");
    })
    .unwrap();
}

impl std::os::fd::AsFd for CountedReads {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A short TCP or Unix read through futures-io shows the socket drained, so the next read
/// waits for a report without calling `read` for the `WouldBlock` (tokio's rule, kept safe
/// against urgent data by the priority reports). Not on an edge-triggered registration
/// whose priority reports are not exact (kqueue): there a short read infers nothing and
/// the next one reads on to the `WouldBlock`. io_uring's are not exact either, but the task
/// layer registers Oneshot there (its re-arm is deferred to the next wait), which infers.
fn short_stream_read_infers_drained<P: Poller>() {
    use nix::poll::{PollFd, PollFlags};
    use std::os::fd::AsFd;
    let lp = new_loop::<P>();
    let p = lp.poller();
    let edge_blind = p.supports(ioloop::Mode::Edge) && !p.priority_exact() && !p.modify_deferred();
    let reads_to_park = if edge_blind { 2 } else { 1 };
    lp.block_on(async {
        for kind in ["tcp", "unix"] {
            let (ours, theirs) = stream_pair(kind);
            let mut theirs = std::fs::File::from(theirs);
            theirs.write_all(b"abc").unwrap();
            // Until the bytes are there (loopback may hand them over a little later), so that
            // the first read takes all three.
            let mut pfd = [PollFd::new(ours.as_fd(), PollFlags::POLLIN)];
            assert_eq!(nix::poll::poll(&mut pfd, 10_000u16).unwrap(), 1, "{kind}");
            let reads = Rc::new(Cell::new(0));
            let counted = CountedReads {
                fd: std::fs::File::from(ours),
                reads: reads.clone(),
            };
            let r = Async::new(counted).unwrap();
            let mut buf = [0u8; 64];
            assert_eq!((&r).read(&mut buf).await.unwrap(), 3, "{kind}");
            assert_eq!(reads.get(), 1, "{kind}");
            let reader = ioloop::spawn(async move {
                let mut buf = [0u8; 64];
                let n = (&r).read(&mut buf).await.unwrap();
                buf[..n].to_vec()
            });
            let_run().await;
            assert_eq!(reads.get(), reads_to_park, "{kind}: reads before parking");
            theirs.write_all(b"de").unwrap();
            let got = ioloop::timeout(HANG, reader).await.expect("hung").unwrap();
            assert_eq!(got, b"de", "{kind}");
            assert_eq!(reads.get(), reads_to_park + 1, "{kind}");
        }
    })
    .unwrap();
}

/// Vectored reads and writes through `&Async<T>` and `Async<T>`: one `readv`/`writev` for
/// std's sockets (all buffers in one call, where futures-io's default moves only the first
/// non-empty one).
fn vectored_reads_and_writes<P: Poller>() {
    use std::io::{IoSlice, IoSliceMut};
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (mut a, mut b) = Async::<UnixStream>::pair().unwrap();
        let bufs = [IoSlice::new(b"ab"), IoSlice::new(b""), IoSlice::new(b"cd")];
        assert_eq!((&a).write_vectored(&bufs).await.unwrap(), 4);
        let (mut x, mut y) = ([0u8; 2], [0u8; 8]);
        let mut into = [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)];
        assert_eq!((&b).read_vectored(&mut into).await.unwrap(), 4);
        assert_eq!((&x, &y[..2]), (b"ab", &b"cd"[..]));
        // The owned impls (no inference) too.
        let bufs = [IoSlice::new(b"efg"), IoSlice::new(b"h")];
        assert_eq!(b.write_vectored(&bufs).await.unwrap(), 4);
        let (mut x, mut y) = ([0u8; 1], [0u8; 8]);
        let mut into = [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)];
        assert_eq!(a.read_vectored(&mut into).await.unwrap(), 4);
        assert_eq!((&x, &y[..3]), (b"e", &b"fgh"[..]));
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

/// A vectored read through a `&T: Read` without its own `read_vectored` (std's default reads
/// the first non-empty buffer only): filling that buffer is not a short read, so the rest
/// stays readable (were the read compared with all the buffers, it would look short, the
/// task would park with the rest queued, and on an edge-triggered poller no report would
/// come).
fn vectored_read_through_a_default_read_vectored<P: Poller>() {
    use std::io::IoSliceMut;
    let lp = new_loop::<P>();
    lp.block_on(async {
        for kind in ["tcp", "unix"] {
            let (ours, theirs) = stream_pair(kind);
            let mut theirs = std::fs::File::from(theirs);
            let r = Async::new(CountedReads {
                fd: std::fs::File::from(ours),
                reads: Rc::new(Cell::new(0)),
            })
            .unwrap();
            let reader = ioloop::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 6 {
                    let (mut x, mut y) = ([0u8; 4], [0u8; 64]);
                    let mut into = [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)];
                    let n = (&r).read_vectored(&mut into).await.unwrap();
                    assert!((1..=4).contains(&n), "{n}");
                    got.extend_from_slice(&x[..n]);
                }
                got
            });
            // The reader parks first (its registration covers reading from then on), so the
            // write below makes one report.
            let_run().await;
            theirs.write_all(b"abcdef").unwrap();
            let got = ioloop::timeout(HANG, reader)
                .await
                .unwrap_or_else(|_| panic!("{kind}: hung with the rest queued"))
                .unwrap();
            assert_eq!(got, b"abcdef", "{kind}");
        }
    })
    .unwrap();
}

/// A pipe whose writer is in packet mode (`pipe2(O_DIRECT)`, Linux; the read end does not
/// show it) returns one packet per read, leaving the next one queued with no further report:
/// the documented exception to the short-read inference, read with `read_with`.
fn packet_pipe_reads_one_packet_each<P: Poller>() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let lp = new_loop::<P>();
        lp.block_on(async {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_DIRECT).unwrap();
            let r = Async::new(std::fs::File::from(r)).unwrap();
            let reader = ioloop::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 256];
                while got.len() < 6 {
                    let n = ioloop::timeout(HANG, r.read_with(|mut f| f.read(&mut buf)))
                        .await
                        .expect("packet pipe: the second packet was never read")
                        .unwrap();
                    assert!(n > 0, "packet pipe: early end of file");
                    got.extend_from_slice(&buf[..n]);
                }
                got
            });
            // Parked (registered); then both packets come in one report.
            let_run().await;
            let mut w = std::fs::File::from(w);
            w.write_all(b"abc").unwrap();
            w.write_all(b"def").unwrap();
            assert_eq!(reader.await.unwrap(), b"abcdef");
        })
        .unwrap();
    }
}

/// A Unix stream socket with `SO_PASSCRED` set (Linux) does not merge data from different
/// writers in one read: a read stops where the next writer's data begins, with that data
/// queued and no further report to come. Here the reader parks, then this process writes
/// "a" and a child process "b" (one report for both): the first read returns "a" alone, and
/// the next must still get "b" (the short read does not count as "drained" on such a
/// socket).
fn passcred_reads_stop_at_another_writer<P: Poller>() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::socket::{setsockopt, sockopt::PassCred};
        let lp = new_loop::<P>();
        lp.block_on(async {
            let (ours, mut theirs) = UnixStream::pair().unwrap();
            setsockopt(&ours, PassCred, &true).unwrap();
            let r = Async::new(ours).unwrap();
            let reader = ioloop::spawn(async move {
                let mut buf = [0u8; 64];
                let n = ioloop::timeout(HANG, (&r).read(&mut buf))
                    .await
                    .expect("SO_PASSCRED: nothing came")
                    .unwrap();
                let mut got = buf[..n].to_vec();
                let (rest, err) = read_short(&r, 1, "SO_PASSCRED: the second writer's data").await;
                assert!(err.is_none(), "{err:?}");
                got.extend_from_slice(&rest);
                (n, got)
            });
            let_run().await;
            theirs.write_all(b"a").unwrap();
            let child_end = std::os::fd::OwnedFd::from(theirs.try_clone().unwrap());
            let status = std::process::Command::new("sh")
                .args(["-c", "printf b"])
                .stdout(std::process::Stdio::from(child_end))
                .status()
                .expect("sh");
            assert!(status.success(), "the child's write failed: {status}");
            let (first, got) = reader.await.unwrap();
            assert_eq!(first, 1, "the two writers' data merged in one read");
            assert_eq!(got, b"ab");
            drop(theirs);
        })
        .unwrap();
    }
}

/// TCP: the last data and the end of the connection arrive together: a FIN (peer closed, or
/// shut down its write side) or a reset (SO_LINGER 0). The data is read, then the end of
/// file or `ConnectionReset`, never a hang. After a half-close the reader can still write.
fn tcp_end_with_the_last_data<P: Poller>() {
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    let lp = new_loop::<P>();
    lp.block_on(async {
        for how in ["close", "reset", "shutdown"] {
            let (ours, theirs) = stream_pair("tcp");
            let mut theirs = TcpStream::from(theirs);
            let r = Async::new(TcpStream::from(ours)).unwrap();
            let reader = ioloop::spawn(async move {
                let (got, err) = read_short(&r, usize::MAX, &format!("tcp {how}")).await;
                (r, got, err)
            });
            let_run().await;
            theirs.write_all(b"abc").unwrap();
            if how == "reset" {
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                setsockopt(&theirs, Linger, &linger).unwrap();
            }
            // Close (FIN), reset (RST), or only shut the write side down (FIN; kept open).
            let theirs = if how == "shutdown" {
                theirs.shutdown(std::net::Shutdown::Write).unwrap();
                Some(theirs)
            } else {
                drop(theirs);
                None
            };
            let (r, got, err) = reader.await.unwrap();
            assert_eq!(got, b"abc", "tcp {how}");
            match how {
                "reset" => {
                    let err = err.expect("tcp reset: no error after the data");
                    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
                }
                _ => assert!(err.is_none(), "tcp {how}: {err:?}"),
            }
            if how == "shutdown" {
                // Half-closed: the other direction still works.
                ioloop::timeout(HANG, (&r).write_all(b"reply"))
                    .await
                    .expect("write after the peer's half-close hung")
                    .unwrap();
                let mut back = [0u8; 5];
                theirs.unwrap().read_exact(&mut back).unwrap();
                assert_eq!(&back, b"reply");
            }
        }
    })
    .unwrap();
}

/// A writer parked on a full buffer when the peer goes away (closes, or resets the
/// connection) gets the error (`BrokenPipe`, `ConnectionReset`), never a hang: through
/// futures-io (short writes clear the readiness) and through `write_with`.
fn write_fails_after_the_peer_closes<P: Poller>() {
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    let lp = new_loop::<P>();
    lp.block_on(async {
        for kind in ["unix", "tcp", "tcp-reset"] {
            for via_with in [false, true] {
                let (ours, theirs) = stream_pair(if kind == "unix" { "unix" } else { "tcp" });
                let w = Async::new(std::fs::File::from(ours)).unwrap();
                let writer = ioloop::spawn(async move {
                    let chunk = [7u8; 64 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let res = if via_with {
                            ioloop::timeout(HANG, w.write_with(|mut f| f.write(&chunk))).await
                        } else {
                            ioloop::timeout(HANG, (&w).write(&chunk)).await
                        };
                        match res.unwrap_or_else(|_| panic!("{kind}: writer hung after {sent}")) {
                            Ok(n) => sent += n,
                            Err(e) => return e,
                        }
                    }
                });
                // The writer fills the buffer and parks.
                let_run().await;
                if kind == "tcp-reset" {
                    let linger = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    setsockopt(&theirs, Linger, &linger).unwrap();
                }
                drop(theirs);
                let err = writer.await.unwrap();
                assert!(
                    matches!(
                        err.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ),
                    "{kind}: {err}"
                );
            }
        }
    })
    .unwrap();
}

/// `readable()` and `writable()` keep completing after a hang-up (each wait needs a fresh
/// report, which the kernel gives again when the registration is updated), also after the
/// end of file was read and a write failed.
fn readiness_waits_after_hang_up<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        for kind in ["unix", "tcp"] {
            let (ours, theirs) = stream_pair(kind);
            let s = Async::new(std::fs::File::from(ours)).unwrap();
            let task = ioloop::spawn(async move {
                // Parks on an empty stream first: the hang-up comes as a report.
                ioloop::timeout(HANG, s.readable())
                    .await
                    .unwrap_or_else(|_| panic!("{kind}: readable() missed the hang-up"))
                    .unwrap();
                for round in 0..3 {
                    ioloop::timeout(HANG, s.readable())
                        .await
                        .unwrap_or_else(|_| panic!("{kind}: readable() hung, round {round}"))
                        .unwrap();
                    assert_eq!(s.get_ref().read(&mut [0u8; 8]).unwrap(), 0);
                    ioloop::timeout(HANG, s.writable())
                        .await
                        .unwrap_or_else(|_| panic!("{kind}: writable() hung, round {round}"))
                        .unwrap();
                    // Unix: EPIPE at once; TCP: the first write may go out (and be reset).
                    let _ = s.get_ref().write(b"x");
                }
            });
            let_run().await;
            drop(theirs);
            task.await.unwrap();
        }
    })
    .unwrap();
}

/// One task waits for both directions of one source at once (zip of a read and a write),
/// and one report carries both: the peer writes and drains the buffer in one go.
fn one_task_waits_on_both_directions<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (ours, theirs) = util::socketpair();
        util::fill(&ours);
        let s = Async::new(ours).unwrap();
        let task = ioloop::spawn(async move {
            let read = s.read_with(|mut s| s.read(&mut [0u8; 8]));
            let write = s.write_with(|mut s| s.write(b"y"));
            let both = futures_lite::future::zip(read, write);
            let (r, w) = ioloop::timeout(HANG, both)
                .await
                .expect("a direction of a two-way wait was lost");
            (r.unwrap(), w.unwrap())
        });
        let_run().await;
        // Both edges before the loop waits again.
        (&theirs).write_all(b"x").unwrap();
        util::drain(&theirs);
        assert_eq!(task.await.unwrap(), (1, 1));
    })
    .unwrap();
}

/// A task parked on an `Async` is cancelled (dropping the `Async` and closing its fd) and, in
/// the same iteration, a new `Async` is made on the same fd number while an event of the old
/// registration is pending: the new one starts fresh and its waits work; the old event
/// wakes nothing.
fn fd_number_reused_while_parked<P: Poller>() {
    use std::os::fd::AsRawFd;
    let lp = new_loop::<P>();
    lp.block_on(async {
        for _ in 0..4 {
            let (a, a_peer) = UnixStream::pair().unwrap();
            let number = a.as_raw_fd();
            let a = Async::new(a).unwrap();
            let parked = ioloop::spawn(async move {
                let _ = a.read_with(|mut s| s.read(&mut [0u8; 8])).await;
                unreachable!("the cancelled reader ran");
            });
            let_run().await;
            // An event for the old registration, then (same iteration) cancel, close, reuse.
            (&a_peer).write_all(b"old").unwrap();
            drop(parked);
            let (b, b_peer) = UnixStream::pair().unwrap();
            let reused = b.as_raw_fd() == number || b_peer.as_raw_fd() == number;
            let (b, b_peer) = if b_peer.as_raw_fd() == number {
                (b_peer, b)
            } else {
                (b, b_peer)
            };
            let b = Async::new(b).unwrap();
            let reader = ioloop::spawn(async move {
                let mut buf = [0u8; 8];
                let n = ioloop::timeout(HANG, b.read_with(|mut s| s.read(&mut buf)))
                    .await
                    .expect("the new Async on a reused number hung")
                    .unwrap();
                buf[..n].to_vec()
            });
            let_run().await;
            (&b_peer).write_all(b"new").unwrap();
            assert_eq!(reader.await.unwrap(), b"new", "number reused: {reused}");
        }
    })
    .unwrap();
}

/// `into_inner` after a wait that parked and was dropped (its waker still stored): the fd
/// can be registered again and waited on.
fn into_inner_after_a_dropped_wait<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (ours, theirs) = util::socketpair();
        let a = Async::new_nonblocking(ours).unwrap();
        assert!(futures_lite::future::poll_once(a.readable())
            .await
            .is_none());
        assert!(
            futures_lite::future::poll_once(a.read_with(|mut s| s.read(&mut [0u8; 1])))
                .await
                .is_none()
        );
        let raw = a.into_inner().unwrap();
        let b = Async::new_nonblocking(raw).unwrap();
        let reader = ioloop::spawn(async move {
            let mut buf = [0u8; 8];
            ioloop::timeout(HANG, b.read_with(|mut s| s.read(&mut buf)))
                .await
                .expect("re-registered fd hung")
                .unwrap()
        });
        let_run().await;
        (&theirs).write_all(b"abc").unwrap();
        assert_eq!(reader.await.unwrap(), 3);
    })
    .unwrap();
}

/// `read_with` on a socket with an error pending (a UDP socket connected to a closed port):
/// the error is returned, not waited on.
fn read_with_an_error_pending<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let s = Async::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        s.get_ref().connect(closed).unwrap();
        let reader = {
            let s = Rc::new(s);
            let r = s.clone();
            let task = ioloop::spawn(async move {
                ioloop::timeout(HANG, r.read_with(|s| s.recv(&mut [0u8; 8])))
                    .await
                    .expect("the pending error was never reported")
            });
            let_run().await;
            s.write_with(|s| s.send(b"ping")).await.unwrap();
            task
        };
        let err = reader.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    })
    .unwrap();
}

backend_tests!(
    readiness_wakeups,
    wake_storms_from_other_threads,
    tasks_take_turns_on_one_source,
    read_and_write_waiters_at_once,
    echo_many_clients,
    sockets_made_nonblocking_and_cloexec,
    udp_and_connect_errors,
    unix_listener_and_connect,
    unix_connect_errors,
    unix_datagrams,
    unix_sockets_by_address,
    udp_connected_send_and_recv,
    with_loop_and_into_inner,
    data_after_partial_read,
    eof_with_the_last_data,
    readable_with_data_already_there,
    short_datagram_read_keeps_readiness,
    readiness_races_with_a_writer_thread,
    writable_after_full_buffer_drains,
    read_and_write_tasks_on_one_source,
    urgent_data_mid_stream,
    short_stream_read_infers_drained,
    vectored_reads_and_writes,
    vectored_read_through_a_default_read_vectored,
    capped_reads_lose_nothing,
    loop_dropped_under_a_live_handle_closes_sockets,
    rearm_keeps_a_wait_begun_by_the_wake_up,
    stale_async_leaves_the_newer_registration_alone,
    packet_pipe_reads_one_packet_each,
    passcred_reads_stop_at_another_writer,
    tcp_end_with_the_last_data,
    write_fails_after_the_peer_closes,
    readiness_waits_after_hang_up,
    one_task_waits_on_both_directions,
    fd_number_reused_while_parked,
    into_inner_after_a_dropped_wait,
    read_with_an_error_pending,
    many_tasks_wait_on_one_source,
    a_panicking_waker_wakes_the_others,
    flush_and_close_after_a_full_buffer,
    waker_called_from_another_thread_wakes_the_loop,
    handle_spawn_from_another_thread,
    new_nonblocking_leaves_the_flags_alone,
    poll_readable_in_a_hand_written_future,
);

/// Linux: Unix sockets at abstract names (no file; the name is gone with the socket): a
/// listener and a client, datagrams with the sender's name, and the errors (nothing at a
/// name: `ConnectionRefused`; a name taken: `AddrInUse`); an unnamed `bind_addr` autobinds
/// to a name the kernel picks.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn unix_abstract_names<P: Poller>() {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    // Unique per process and backend: abstract names are shared by the whole network
    // namespace.
    let name = |what: &str| {
        let n = format!("ioloop-test-{}-{}-{what}", std::process::id(), P::NAME);
        SocketAddr::from_abstract_name(n.as_bytes()).unwrap()
    };
    let lp = new_loop::<P>();
    lp.block_on(async {
        let at = name("l");
        let err = Async::<UnixStream>::connect_addr(&at).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let listener = Async::<UnixListener>::bind_addr(&at).unwrap();
        assert_eq!(
            listener.local_addr().unwrap().as_abstract_name(),
            at.as_abstract_name()
        );
        let err = Async::<UnixListener>::bind_addr(&at).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let accepting = ioloop::spawn(async move { listener.accept().await.unwrap().0 });
        let client = Async::<UnixStream>::connect_addr(&at).await.unwrap();
        assert_eq!(
            client.peer_addr().unwrap().as_abstract_name(),
            at.as_abstract_name()
        );
        let server = ioloop::timeout(HANG, accepting)
            .await
            .expect("hung")
            .unwrap();
        stream_round_trip(client, server, b"abstract").await;

        let (a_at, b_at) = (name("a"), name("b"));
        let a = Async::<UnixDatagram>::bind_addr(&a_at).unwrap();
        let b = Async::<UnixDatagram>::bind_addr(&b_at).unwrap();
        let receiving = ioloop::spawn(async move {
            let mut buf = [0u8; 8];
            let (n, from) = b.recv_from(&mut buf).await.unwrap();
            (
                buf[..n].to_vec(),
                from.as_abstract_name().map(<[u8]>::to_vec),
            )
        });
        ioloop::yield_now().await;
        assert_eq!(a.send_to_addr(b"dgram", &b_at).await.unwrap(), 5);
        let (got, from) = ioloop::timeout(HANG, receiving)
            .await
            .expect("hung")
            .unwrap();
        assert_eq!(got, b"dgram");
        assert_eq!(from.as_deref(), a_at.as_abstract_name());
        let err = a.send_to_addr(b"x", &name("nobody")).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

        let unnamed = UnixDatagram::unbound().unwrap().local_addr().unwrap();
        assert!(unnamed.is_unnamed());
        let auto = Async::<UnixDatagram>::bind_addr(&unnamed).unwrap();
        assert!(auto.local_addr().unwrap().as_abstract_name().is_some());
    })
    .unwrap();
    assert_eq!(lp.handler_count(), 0);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux {
    use super::*;
    backend_tests!(
        unix_abstract_names,
        unix_connect_to_a_full_backlog,
        unix_datagram_to_a_full_receiver
    );
}

/// Outside a loop, binding by path fails before the socket is made: no socket file is left.
#[test]
fn unix_bind_outside_a_loop_leaves_no_file() {
    let dir = util::TempDir::new("uo");
    let path = dir.path("s");
    let err = Async::<UnixListener>::bind(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    let err = Async::<UnixDatagram>::bind(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    assert!(!path.exists());
}

#[test]
fn async_new_outside_a_loop_is_not_connected() {
    let (a, _b) = UnixStream::pair().unwrap();
    let err = Async::new(a).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    let (a, _b) = UnixStream::pair().unwrap();
    let err = Async::new_nonblocking(a).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected);
}

fn new_nonblocking_leaves_the_flags_alone<P: Poller>() {
    let lp = new_loop::<P>();
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let flags = nix::fcntl::fcntl(&a, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let (tx, rx) = (a, b);
    let n = lp
        .block_on(async {
            // Inside the loop: `new_nonblocking` finds the current loop.
            let a = Async::new_nonblocking(&tx).unwrap();
            (&rx).write_all(b"abc").unwrap();
            a.read_with(|s| (&**s).read(&mut [0; 8])).await
        })
        .unwrap()
        .unwrap();
    assert_eq!(n, 3);
    let after = nix::fcntl::fcntl(&tx, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_eq!(flags, after);
}

/// A hand-written future using `poll_readable` (the `poll_*` API for manual futures).
struct ReadOne<'a>(&'a Async<UnixStream>);

impl Future for ReadOne<'_> {
    type Output = u8;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
        loop {
            let mut b = [0u8; 1];
            match self.0.get_ref().read(&mut b) {
                Ok(1) => return Poll::Ready(b[0]),
                Ok(_) => panic!("eof"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            match self.0.poll_readable(cx) {
                Poll::Ready(r) => r.unwrap(),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn poll_readable_in_a_hand_written_future<P: Poller>() {
    let lp = new_loop::<P>();
    lp.block_on(async {
        let (a, b) = Async::<UnixStream>::pair().unwrap();
        // The block owns `b`, which the future borrows: not redundant.
        #[allow(clippy::redundant_async_block)]
        let t = ioloop::spawn(async move { ReadOne(&b).await });
        ioloop::yield_now().await;
        a.get_ref().write_all(&[42]).unwrap();
        assert_eq!(t.await.unwrap(), 42);
    })
    .unwrap();
}
