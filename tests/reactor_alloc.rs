//! No heap allocation per iteration in steady state: handlers dispatching a socket ping-pong,
//! a periodic timer firing, callbacks and one-shot timers capturing state, queued and run
//! (locally and through a `Handle`), on every backend. Its own test binary, because the
//! counting allocator is the global one.

mod util;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ioloop::{Interest, IoLoop, Poller};
use ioloop_sys::alloc_counter::{allocations, CountingAlloc};
use util::{bump, counter, send, socketpair};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const WARM_UP: usize = 500;
const MEASURED: usize = 10_000;

/// Echoes every byte it reads back to its peer, so the byte bounces forever.
fn echo<P: Poller>(
    s: UnixStream,
    hits: Rc<Cell<usize>>,
) -> impl FnMut(&IoLoop<P>, i32, ioloop::Ready) {
    move |_, _, _| {
        let mut buf = [0u8; 1];
        match (&s).read(&mut buf) {
            Ok(1) => {
                (&s).write_all(&buf).expect("echo write");
                bump(&hits);
            }
            Ok(_) => panic!("peer closed"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("echo read: {e}"),
        }
    }
}

fn steady_state_iterations_do_not_allocate<P: Poller>() {
    let lp = IoLoop::<P>::with_backend().unwrap();
    let (a, b) = socketpair();
    let hits = counter();
    lp.add_handler(
        &a,
        Interest::READABLE,
        echo(a.try_clone().unwrap(), hits.clone()),
    )
    .unwrap();
    lp.add_handler(
        &b,
        Interest::READABLE,
        echo(b.try_clone().unwrap(), hits.clone()),
    )
    .unwrap();
    send(&a, b"p");
    let ticks = counter();
    let t = ticks.clone();
    let every = lp
        .call_every(Duration::from_micros(100), move |_| bump(&t))
        .unwrap();
    // A callback that queues itself again each iteration, capturing an `Rc` (closures of up
    // to two words are stored inline: anything counted comes from the loop's queues).
    fn again<P: Poller>(lp: &IoLoop<P>, n: Rc<Cell<usize>>) {
        bump(&n);
        lp.add_callback(move |lp| again(lp, n));
    }
    let looped = counter();
    let n = looped.clone();
    lp.add_callback(move |lp| again(lp, n));
    // The same through the cross-thread queue (mutex, swapped queues, notifier), capturing
    // an `Arc`.
    fn again_remote<P: Poller>(lp: &IoLoop<P>, n: Arc<AtomicUsize>) {
        n.fetch_add(1, Ordering::Relaxed);
        lp.handle()
            .add_callback(move |lp| again_remote(lp, n))
            .unwrap();
    }
    let remote = Arc::new(AtomicUsize::new(0));
    let n = remote.clone();
    lp.handle()
        .add_callback(move |lp| again_remote(lp, n))
        .unwrap();
    // A one-shot timer that schedules the next one from inside itself, capturing an `Rc`.
    fn again_timer<P: Poller>(lp: &IoLoop<P>, n: Rc<Cell<usize>>) {
        bump(&n);
        lp.call_later(Duration::ZERO, move |lp| again_timer(lp, n));
    }
    let timed = counter();
    let n = timed.clone();
    lp.call_later(Duration::ZERO, move |lp| again_timer(lp, n));

    // The counter counts this thread's allocations.
    let c = allocations();
    drop(std::hint::black_box(Box::new(7u64)));
    assert_eq!(allocations(), c + 1);

    for _ in 0..WARM_UP {
        lp.run_once().unwrap();
    }
    let (hits0, ticks0) = (hits.get(), ticks.get());
    let (looped0, remote0, timed0) = (looped.get(), remote.load(Ordering::Relaxed), timed.get());
    let before = allocations();
    for _ in 0..MEASURED {
        lp.run_once().unwrap();
    }
    let allocated = allocations() - before;
    let (hits1, ticks1) = (hits.get(), ticks.get());
    assert_eq!(
        looped.get() - looped0,
        MEASURED,
        "one local callback per iteration"
    );
    assert_eq!(
        remote.load(Ordering::Relaxed) - remote0,
        MEASURED,
        "one cross-thread callback per iteration"
    );
    assert_eq!(timed.get() - timed0, MEASURED, "one timer per iteration");

    assert!(
        hits1 - hits0 >= MEASURED,
        "ping-pong stalled: {}",
        hits1 - hits0
    );
    assert!(
        ticks1 > ticks0,
        "the periodic timer never fired while measured"
    );
    assert_eq!(
        allocated,
        0,
        "{}: {allocated} allocations in {MEASURED} iterations ({} handler calls, {} timer ticks)",
        P::NAME,
        hits1 - hits0,
        ticks1 - ticks0
    );
    assert!(lp.remove_timeout(every));
}

util::backend_tests!(steady_state_iterations_do_not_allocate);
