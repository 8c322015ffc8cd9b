//! Steady state of the task layer makes no heap allocation per wake: tasks blocked on I/O
//! are woken by the reactor, re-polled, and block again with nothing allocated (the task's
//! waker is reused; queues are reused buffers; an `Async` wait only re-arms its registration).
//!
//! A test binary of its own: it installs a counting global allocator.

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use ioloop::{Async, IoLoop, Poller};
use ioloop_sys::alloc_counter::{allocations, CountingAlloc};
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
