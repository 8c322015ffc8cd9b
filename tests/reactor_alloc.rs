//! No heap allocation per iteration in steady state: handlers dispatching a socket ping-pong,
//! a periodic timer firing, callbacks queued and run (locally and through a `Handle`). Its own test binary, because the
//! counting allocator is the global one.

mod util;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use ioloop::{Interest, IoLoop};
use ioloop_sys::alloc_counter::{allocations, CountingAlloc};
use util::{bump, counter, send, socketpair};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const WARM_UP: usize = 500;
const MEASURED: usize = 10_000;

/// Echoes every byte it reads back to its peer, so the byte bounces forever.
fn echo(s: UnixStream, hits: Rc<Cell<usize>>) -> impl FnMut(&IoLoop, i32, ioloop::Ready) {
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

#[test]
fn steady_state_iterations_do_not_allocate() {
    let lp = IoLoop::new().unwrap();
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
    // A callback that queues itself again each iteration (a zero-sized closure: its Box does
    // not allocate, so anything counted comes from the loop's queues).
    fn again(lp: &IoLoop) {
        lp.add_callback(again);
    }
    lp.add_callback(again);
    // The same through the cross-thread queue (mutex, swap buffer, notifier).
    fn again_remote(lp: &IoLoop) {
        lp.handle().add_callback(again_remote).unwrap();
    }
    lp.handle().add_callback(again_remote).unwrap();

    // The counter counts this thread's allocations.
    let c = allocations();
    drop(std::hint::black_box(Box::new(7u64)));
    assert_eq!(allocations(), c + 1);

    for _ in 0..WARM_UP {
        lp.run_once().unwrap();
    }
    let (hits0, ticks0) = (hits.get(), ticks.get());
    let before = allocations();
    for _ in 0..MEASURED {
        lp.run_once().unwrap();
    }
    let allocated = allocations() - before;
    let (hits1, ticks1) = (hits.get(), ticks.get());

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
        "{allocated} allocations in {MEASURED} iterations ({} handler calls, {} timer ticks)",
        hits1 - hits0,
        ticks1 - ticks0
    );
    assert!(lp.remove_timeout(every));
}
