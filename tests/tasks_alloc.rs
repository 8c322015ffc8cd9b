//! Steady state of the task layer makes no heap allocation per wake: tasks blocked on I/O
//! are woken by the reactor, re-polled, and block again with nothing allocated (the task's
//! waker is reused; queues are reused buffers; an `Async` wait only re-arms its registration).
//!
//! A test binary of its own: it installs a counting global allocator.

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use ioloop::{Async, IoLoop, Poller};
use ioloop_sys::alloc_counter::{allocated_bytes, allocations, CountingAlloc};
use util::backend_tests;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const WARM_UP: usize = 200;
const MEASURED: usize = 2_000;

/// Two tasks play ping-pong over a socket pair: every round trip is two reactor wake-ups,
/// two task wakes and two re-polls.
fn ping_pong_allocates_nothing_per_wake<P: Poller>() {
    let lp = IoLoop::with_poller(util::poller::<P>()).unwrap();
    lp.block_on(async {
        let (a, b) = Async::<UnixStream>::pair().unwrap();
        let echo = ioloop::spawn(async move {
            let mut byte = [0u8; 1];
            loop {
                let n = b.read_with(|mut s| s.read(&mut byte)).await.unwrap();
                if n == 0 {
                    return;
                }
                b.write_with(|mut s| s.write(&byte)).await.unwrap();
            }
        });
        let pinger = ioloop::spawn(async move {
            let mut before = 0;
            for i in 0..WARM_UP + MEASURED {
                if i == WARM_UP {
                    before = allocations();
                }
                let mut byte = [0u8; 1];
                a.write_with(|mut s| s.write(&[i as u8])).await.unwrap();
                a.read_with(|mut s| s.read(&mut byte)).await.unwrap();
                assert_eq!(byte[0], i as u8);
            }
            let after = allocations();
            drop(a);
            after - before
        });
        let allocs = pinger.await.unwrap();
        echo.await.unwrap();
        assert_eq!(
            allocs,
            0,
            "{allocs} allocations over {MEASURED} round trips on {}",
            P::NAME
        );
    })
    .unwrap();
}

backend_tests!(ping_pong_allocates_nothing_per_wake);

/// A spawned future is stored once: spawning one of 4 KiB allocates its 4 KiB and the
/// task's small bookkeeping, not a second copy (an `async` block awaiting the future would
/// hold it twice: rust-lang/rust#62958).
#[test]
fn a_spawned_future_is_stored_once() {
    const SIZE: usize = 4096;
    let lp = IoLoop::new().unwrap();
    // Grow the task table and the run queue first, so that only the spawn is counted.
    lp.spawn(async {}).detach();
    lp.run_until(|lp| lp.task_count() == 0).unwrap();
    let payload = [7u8; SIZE];
    let future = async move { payload.iter().map(|&b| u64::from(b)).sum::<u64>() };
    assert!(std::mem::size_of_val(&future) >= SIZE);
    let before = allocated_bytes();
    let task = lp.spawn(future);
    let spent = allocated_bytes() - before;
    assert!(
        spent < (SIZE + 512) as u64,
        "spawning a {SIZE}-byte future allocated {spent} bytes"
    );
    assert_eq!(lp.block_on(task).unwrap().unwrap(), 7 * SIZE as u64);
}
