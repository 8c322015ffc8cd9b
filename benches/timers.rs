//! Timers: [`TIMERS`] timers per iteration: schedule them all, cancel every other one, fire
//! the rest. The deadlines are a fixed pseudo-random permutation spread over 1 ms, one
//! second in the past when they are scheduled, so everything left fires in the next loop
//! iteration.
//!
//! | id | what |
//! |---|---|
//! | `heap` | the baseline: a bare `BinaryHeap<Reverse<(Instant, u64)>>`, push all, pop all |
//! | `ioloop-<backend>` | `IoLoop::call_at` all, `remove_timeout` half, `run_until` the rest fired |
//!
//! # Running
//!
//! * `cargo bench --bench timers`: criterion.
//! * `TIMERS_ROUNDS=15 [TIMERS_FILTER=a,b,..] cargo bench --bench timers`: interleaved runner.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use ioloop::{IoLoop, TimeoutId};
use ioloop_sys::Poller;

mod common;
use common::{Contender, Spec};

/// Timers per iteration.
const TIMERS: usize = 1_000_000;

/// Deadline offsets in ns (< 1 ms), a fixed permutation-like spread (xorshift).
fn offsets() -> Rc<Vec<u64>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    Rc::new(
        (0..TIMERS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % 1_000_000
            })
            .collect(),
    )
}

/// The deadlines' base: one second ago.
fn base() -> Instant {
    Instant::now() - Duration::from_secs(1)
}

fn heap(list: &mut Vec<Contender>, offs: Rc<Vec<u64>>) {
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    list.push((
        "heap".to_owned(),
        Box::new(move || {
            let base = base();
            for (seq, &o) in offs.iter().enumerate() {
                heap.push(Reverse((base + Duration::from_nanos(o), seq as u64)));
            }
            let mut n = 0usize;
            while let Some(Reverse((d, _))) = heap.pop() {
                std::hint::black_box(d);
                n += 1;
            }
            assert_eq!(n, TIMERS);
        }),
    ));
}

fn ioloop<P: Poller>(list: &mut Vec<Contender>, offs: Rc<Vec<u64>>) {
    let lp = IoLoop::<P>::with_backend().unwrap_or_else(|e| panic!("IoLoop: {e}"));
    let fired = Rc::new(Cell::new(0usize));
    let mut ids: Vec<TimeoutId> = Vec::with_capacity(TIMERS);
    list.push((
        format!("ioloop-{}", P::NAME),
        Box::new(move || {
            let base = base();
            fired.set(0);
            ids.clear();
            for &o in offs.iter() {
                let fired = fired.clone();
                ids.push(lp.call_at(base + Duration::from_nanos(o), move |_| {
                    fired.set(fired.get() + 1);
                }));
            }
            for id in ids.iter().step_by(2) {
                assert!(lp.remove_timeout(*id));
            }
            let want = TIMERS / 2;
            lp.run_until(|_| fired.get() == want).expect("run_until");
            assert_eq!(lp.timer_count(), 0);
        }),
    ));
}

fn contenders() -> Vec<Contender> {
    let offs = offsets();
    let mut list = Vec::new();
    heap(&mut list, offs.clone());
    ioloop::<ioloop::DefaultPoller>(&mut list, offs);
    list
}

fn spec() -> Spec {
    Spec::new("timers", "timer", TIMERS as u64).bases(["heap"]).note(format!(
        "{TIMERS} timers per round: heap = push + pop of {TIMERS} (deadline, seq) keys; ioloop = call_at {TIMERS} \
         closures, remove_timeout every other one, run until the other {} have fired.",
        TIMERS / 2
    ))
}

fn main() {
    if common::env_run("TIMERS", contenders, &spec()) {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("timers");
    g.throughput(Throughput::Elements(TIMERS as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    for (id, mut run) in contenders() {
        g.bench_function(id, |b| b.iter(&mut run));
    }
    g.finish();
    c.final_summary();
}
