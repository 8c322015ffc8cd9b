//! Ping-pong: one byte bounced between the two ends of a non-blocking `AF_UNIX` socketpair,
//! [`HOPS`] times per iteration, on one thread. Each hop is one wait, one 1-byte read and one
//! 1-byte write, so the per-hop cost is the readiness loop's overhead on top of three syscalls.
//!
//! Every contender runs the same [`common::pingpong`] driver on its own fresh pair, in one
//! criterion group (`pingpong`), throughput in hops:
//!
//! | id | what |
//! |---|---|
//! | `floor-level` | raw libc `epoll_wait`, level-triggered, reused array |
//! | `floor-edge` | the same, `EPOLLET` |
//! | `floor-edge-inline` | the same, with the `epoll_wait` system call instruction inlined into the loop (no libc wrapper; see [`common::RawEpoll::inline_syscall`]) |
//! | `mio` | mio 1.x `Poll` + reused `Events` (mio registers edge-triggered) |
//! | `polling-level` | polling 3.x with `PollMode::Level` (`add_with_mode`) |
//! | `ioloop-sys-<backend>-<mode>` | each ioloop-sys backend in each mode it supports |
//!
//! `benches/compare.py` prints ns/hop and the ratios against the floors and mio.
//!
//! # Running
//!
//! * `cargo bench --bench pingpong`: criterion, wall-clock time (group `pingpong`).
//! * `IOLOOP_BENCH_CLOCK=cpu cargo bench --bench pingpong`: criterion measuring this thread's
//!   CPU time (group `pingpong-cpu`); descheduled time is not counted.
//! * `PINGPONG_ROUNDS=400 cargo bench --bench pingpong`: no criterion; contenders interleaved
//!   round by round, with paired per-round CPU-time ratios. On a shared, loaded machine
//!   criterion's one-contender-after-another runs drift by several percent; use this to judge
//!   differences of 1-3 %.
//! * Instructions per hop: run the bench binary under `valgrind --tool=callgrind` with
//!   `PINGPONG_FILTER=<id>` and `PINGPONG_ROUNDS=2`, then `12`; (Ir₁₂ − Ir₂) / 10 000.

use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{Criterion, SamplingMode, Throughput};
use ioloop_sys::{Interest, Mode, Poller};

mod common;
#[cfg(ioloop_has_epoll)]
use common::RawEpoll;
use common::{pingpong, Contender, MioWaiter, Pair, PollingWaiter, SysWaiter, Waiter, CAPACITY};

/// Hops per criterion iteration.
const HOPS: u64 = 1000;

/// Adds a contender: registers both ends of a fresh pair with `make`'s waiter (tokens 0 and
/// 1); each call of the boxed closure runs [`HOPS`] hops.
fn contender<W: Waiter + 'static>(
    list: &mut Vec<Contender>,
    id: &str,
    make: impl FnOnce(&Pair) -> W,
) {
    /// Field order matters: the waiter (and its registrations) drops before the pair's fds.
    struct Running<W> {
        w: W,
        pair: Pair,
    }
    let pair = Pair::new();
    let w = make(&pair);
    let mut r = Running { w, pair };
    list.push((
        id.to_owned(),
        Box::new(move || pingpong(&mut r.w, &r.pair, HOPS)),
    ));
}

/// Both ends of `pair`, as `(fd, token)`: tokens 0 and 1.
fn ends(pair: &Pair) -> [(std::os::fd::RawFd, u64); 2] {
    [(pair.fd(0), 0), (pair.fd(1), 1)]
}

// ---- raw libc floors -----------------------------------------------------------------------

#[cfg(ioloop_has_epoll)]
fn floor(pair: &Pair, extra: libc::c_int) -> RawEpoll {
    let ep = RawEpoll::new(CAPACITY);
    for token in 0..2 {
        ep.add(
            pair.fd(token),
            token,
            libc::EPOLLIN | libc::EPOLLRDHUP | extra,
        );
    }
    ep
}

// ---- ioloop-sys ----------------------------------------------------------------------------

/// The ioloop-sys contender for backend `P` in `mode`; skipped if `P` lacks `mode`.
fn ioloop_sys_pingpong<P: Poller>(list: &mut Vec<Contender>, mode: Mode) {
    let poller = P::new_owned().unwrap_or_else(|e| panic!("{}::new_owned: {e}", P::NAME));
    if !poller.supports(mode) {
        return;
    }
    let id = format!(
        "ioloop-sys-{}-{}",
        P::NAME,
        format!("{mode:?}").to_lowercase()
    );
    contender(list, &id, |pair| {
        SysWaiter::new(poller, ends(pair), mode, CAPACITY)
    });
}

/// Every mode of backend `P` that the ping-pong pattern can use (Oneshot would add a re-arm
/// per hop, a different workload).
fn ioloop_sys_backend<P: Poller>(list: &mut Vec<Contender>) {
    ioloop_sys_pingpong::<P>(list, Mode::Level);
    ioloop_sys_pingpong::<P>(list, Mode::Edge);
}

// ---- ioloop (the reactor) ------------------------------------------------------------------

/// The reactor contender: a handler per end reads the byte and sends it back; the handler of
/// the last hop stops the loop. One `IoLoop::run` per [`HOPS`] hops.
fn ioloop_pingpong<P: Poller>(list: &mut Vec<Contender>, mode: Mode) {
    use std::cell::Cell;
    use std::rc::Rc;

    let lp =
        ioloop::IoLoop::<P>::with_backend().unwrap_or_else(|e| panic!("IoLoop<{}>: {e}", P::NAME));
    if !lp.poller().supports(mode) {
        return;
    }
    let id = format!("ioloop-{}-{}", P::NAME, format!("{mode:?}").to_lowercase());
    let pair = Pair::new();
    let left = Rc::new(Cell::new(0u64));
    for token in 0..2 {
        let left = left.clone();
        lp.add_handler_with(
            pair.fd(token),
            Interest::READABLE,
            mode,
            move |lp, fd, _| {
                common::recv_byte(fd);
                let l = left.get() - 1;
                left.set(l);
                if l > 0 {
                    common::send_byte(fd);
                } else {
                    lp.stop();
                }
            },
        )
        .expect("add_handler");
    }
    list.push((
        id,
        Box::new(move || {
            left.set(HOPS);
            common::send_byte(pair.fd(0));
            lp.run().expect("run");
        }),
    ));
}

// ---- the contenders, run by criterion or by the interleaved runner --------------------------

fn contenders() -> Vec<Contender> {
    let mut list = Vec::new();
    #[cfg(ioloop_has_epoll)]
    {
        contender(&mut list, "floor-level", |p| floor(p, 0));
        contender(&mut list, "floor-edge", |p| floor(p, libc::EPOLLET));
        contender(&mut list, "floor-edge-inline", |p| {
            floor(p, libc::EPOLLET).inline_syscall()
        });
    }
    contender(&mut list, "mio", |p| MioWaiter::new(ends(p), CAPACITY));
    contender(&mut list, "polling-level", |p| {
        PollingWaiter::new(ends(p), CAPACITY)
    });

    // ioloop-sys: one line per backend.
    common::every_sys_backend!(ioloop_sys_backend(&mut list));

    // The reactor: the same hops dispatched to `IoLoop` handlers.
    #[cfg(ioloop_has_epoll)]
    {
        ioloop_pingpong::<ioloop_sys::Epoll>(&mut list, Mode::Level);
        ioloop_pingpong::<ioloop_sys::Epoll>(&mut list, Mode::Edge);
    }
    #[cfg(ioloop_has_uring)]
    {
        ioloop_pingpong::<ioloop_sys::Uring>(&mut list, Mode::Level);
        ioloop_pingpong::<ioloop_sys::Uring>(&mut list, Mode::Edge);
    }
    ioloop_pingpong::<ioloop_sys::Poll>(&mut list, Mode::Level);
    list
}

fn bench<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(HOPS))
        // One iteration is ~1-10 ms: flat sampling keeps the sample count affordable.
        .sampling_mode(SamplingMode::Flat)
        .sample_size(80)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (id, mut run) in contenders() {
        g.bench_function(id, |b| b.iter(&mut run));
    }
    g.finish();
}

/// `cargo bench --bench pingpong`: criterion, wall-clock time, group `pingpong`.
/// `IOLOOP_BENCH_CLOCK=cpu`: criterion, this thread's CPU time, group `pingpong-cpu` (robust
/// when other processes load the machine). `PINGPONG_ROUNDS=n [PINGPONG_FILTER=a,b,..]`: no
/// criterion; n interleaved rounds (see [`common::interleaved`]), for noisy machines and for
/// `valgrind --tool=callgrind` (instructions per hop = difference of two round counts).
fn main() {
    if let Some(rounds) = common::env_rounds("PINGPONG_ROUNDS") {
        common::interleaved(common::filtered("PINGPONG", contenders()), rounds, HOPS);
        return;
    }
    if common::cpu_clock() {
        let mut c = Criterion::default()
            .with_measurement(common::ThreadCpu)
            .configure_from_args();
        bench(&mut c, "pingpong-cpu");
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c, "pingpong");
        c.final_summary();
    }
}
