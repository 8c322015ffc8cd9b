//! Idle scaling: the ping-pong of `benches/pingpong.rs` ([`HOPS`] hops per iteration on one
//! active socketpair) while 10, 1 000 or 10 000 idle fds are registered with the same poller
//! (both ends of 5, 500 or 5 000 socketpairs nobody writes to). An O(1) readiness API (epoll,
//! io_uring, kqueue) should not care; poll and select scan every registered fd per wait.
//!
//! Contender ids are `<name>/<idle fds>`; every size of every contender runs in one
//! interleaved session, so `x own/10` is a paired ratio against the same contender with 10
//! idle fds. The idle fds are shared by all contenders (an idle fd costs an epoll instance
//! nothing per wait, whoever else watches it).
//!
//! select holds only fds < `FD_SETSIZE` (1024): its pollers and active pairs are created
//! before the idle pool so that the first 1 000 idle fds stay below it; its 10 000 case is
//! n/a.
//!
//! # Running
//!
//! * `cargo bench --bench idle_scale`: criterion (`IOLOOP_BENCH_CLOCK=cpu`: thread CPU time).
//! * `IDLE_SCALE_ROUNDS=30 [IDLE_SCALE_FILTER=a,b,..] cargo bench --bench idle_scale`: the
//!   interleaved runner.

use std::os::fd::RawFd;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{Criterion, SamplingMode, Throughput};
use ioloop::IoLoop;
use ioloop_sys::{Interest, Mode, Poller};

mod common;
#[cfg(ioloop_has_epoll)]
use common::RawEpoll;
use common::{
    mode_id, pingpong, Base, Contender, MioWaiter, Pair, PollingWaiter, Spec, SysWaiter, Waiter,
    CAPACITY,
};

/// Hops per iteration.
const HOPS: u64 = 200;
/// The idle fd counts.
const SIZES: [usize; 3] = [10, 1000, 10_000];
/// `FD_SETSIZE` on Linux and the BSDs.
const FD_SETSIZE: RawFd = 1024;

/// `(fd, token)` of the idle fds a contender registers (tokens from 2 up; 0 and 1 are the
/// active pair's ends).
type Idle<'a> = &'a [(RawFd, u64)];
/// Second phase of a contender: registers the active pair and the idle fds.
type Finish = Box<dyn FnOnce(Idle<'_>) -> Contender>;
/// First phase: creates the poller and the active pair (`None`: n/a).
type Prep = Box<dyn FnOnce(usize) -> Option<Finish>>;

fn active(pair: &Pair) -> [(RawFd, u64); 2] {
    [(pair.fd(0), 0), (pair.fd(1), 1)]
}

/// A waiter contender: `make` registers the active pair and the idle fds.
fn waiter<W: Waiter + 'static>(
    name: &'static str,
    make: impl FnOnce(&Pair, Idle<'_>) -> W + 'static,
) -> Prep {
    Box::new(move |k| {
        let pair = Pair::new();
        Some(Box::new(move |idle: Idle<'_>| {
            /// Field order: the waiter drops before the pair.
            struct Running<W> {
                w: W,
                pair: Pair,
            }
            let w = make(&pair, idle);
            let mut r = Running { w, pair };
            let run: Box<dyn FnMut()> = Box::new(move || pingpong(&mut r.w, &r.pair, HOPS));
            (format!("{name}/{k}"), run)
        }) as Finish)
    })
}

fn sys<P: Poller>(mode: Mode) -> Prep {
    Box::new(move |k| {
        let poller = P::new_owned().unwrap_or_else(|e| panic!("{}::new_owned: {e}", P::NAME));
        if !poller.supports(mode) {
            return None;
        }
        let pair = Pair::new();
        let id = format!("{}/{k}", mode_id("ioloop-sys", P::NAME, mode));
        Some(Box::new(move |idle: Idle<'_>| {
            struct Running<P> {
                w: SysWaiter<P>,
                pair: Pair,
            }
            let fds = active(&pair).into_iter().chain(idle.iter().copied());
            let w = SysWaiter::new(poller, fds, mode, CAPACITY);
            let mut r = Running { w, pair };
            let run: Box<dyn FnMut()> = Box::new(move || pingpong(&mut r.w, &r.pair, HOPS));
            (id, run)
        }) as Finish)
    })
}

/// The reactor: the ping-pong as `IoLoop` handlers (as in `benches/pingpong.rs`), plus a
/// handler per idle fd that is never called.
fn reactor<P: Poller>(mode: Mode) -> Prep {
    Box::new(move |k| {
        use std::cell::Cell;
        use std::rc::Rc;
        let lp = IoLoop::<P>::with_backend().unwrap_or_else(|e| panic!("IoLoop: {e}"));
        if !lp.poller().supports(mode) {
            return None;
        }
        let pair = Pair::new();
        let id = format!("{}/{k}", mode_id("ioloop", P::NAME, mode));
        Some(Box::new(move |idle: Idle<'_>| {
            let left = Rc::new(Cell::new(0u64));
            for (fd, _) in active(&pair) {
                let left = left.clone();
                lp.add_handler_with(fd, Interest::READABLE, mode, move |lp, fd, _| {
                    common::recv_byte(fd);
                    let l = left.get() - 1;
                    left.set(l);
                    if l > 0 {
                        common::send_byte(fd);
                    } else {
                        lp.stop();
                    }
                })
                .expect("add_handler");
            }
            for &(fd, _) in idle {
                lp.add_handler_with(fd, Interest::READABLE, mode, |_, fd, r| {
                    panic!("idle fd {fd} reported {r:?}")
                })
                .expect("add_handler (idle)");
            }
            let run: Box<dyn FnMut()> = Box::new(move || {
                left.set(HOPS);
                common::send_byte(pair.fd(0));
                lp.run().expect("run");
            });
            (id, run)
        }) as Finish)
    })
}

/// Every contender, in two lists: those that need low fd numbers (select) and the rest.
fn preps() -> (Vec<Prep>, Vec<Prep>) {
    let low = vec![
        sys::<ioloop_sys::Select>(Mode::Level),
        reactor::<ioloop_sys::Select>(Mode::Level),
    ];
    let mut rest: Vec<Prep> = Vec::new();
    #[cfg(ioloop_has_epoll)]
    rest.push(waiter("floor-level", |pair, idle| {
        let ep = RawEpoll::new(CAPACITY);
        for (fd, token) in active(pair).into_iter().chain(idle.iter().copied()) {
            ep.add(fd, token, libc::EPOLLIN | libc::EPOLLRDHUP);
        }
        ep
    }));
    rest.push(waiter("mio", |pair, idle| {
        MioWaiter::new(
            active(pair).into_iter().chain(idle.iter().copied()),
            CAPACITY,
        )
    }));
    rest.push(waiter("polling-level", |pair, idle| {
        PollingWaiter::new(
            active(pair).into_iter().chain(idle.iter().copied()),
            CAPACITY,
        )
    }));
    #[cfg(ioloop_has_epoll)]
    rest.push(sys::<ioloop_sys::Epoll>(Mode::Level));
    #[cfg(ioloop_has_uring)]
    rest.push(sys::<ioloop_sys::Uring>(Mode::Level));
    #[cfg(ioloop_has_kqueue)]
    rest.push(sys::<ioloop_sys::Kqueue>(Mode::Level));
    rest.push(sys::<ioloop_sys::Poll>(Mode::Level));
    rest.push(reactor::<ioloop::DefaultPoller>(Mode::Level));
    #[cfg(ioloop_has_uring)]
    rest.push(reactor::<ioloop_sys::Uring>(Mode::Level));
    rest.push(reactor::<ioloop_sys::Poll>(Mode::Level));
    (low, rest)
}

/// The idle pool (both ends of `n / 2` socketpairs) and every contender of every size.
/// Returns the pool too: it must outlive the contenders.
fn contenders() -> (Vec<Pair>, Vec<Contender>, Vec<String>) {
    let max = SIZES[SIZES.len() - 1];
    common::raise_nofile(max as u64 + 4000);
    let mut notes = Vec::new();
    // select's pollers and pairs first, then the pool, then everything else.
    let mut low_done: Vec<(usize, Finish)> = Vec::new();
    for &k in SIZES.iter().filter(|&&k| k <= FD_SETSIZE as usize) {
        low_done.extend(preps().0.into_iter().filter_map(|p| Some((k, p(k)?))));
    }
    let pool: Vec<Pair> = (0..max / 2).map(|_| Pair::new()).collect();
    let idle: Vec<(RawFd, u64)> = pool
        .iter()
        .flat_map(|p| [p.fd(0), p.fd(1)])
        .zip(2u64..)
        .collect();
    let mut done: Vec<(usize, Finish)> = Vec::new();
    for &k in &SIZES {
        done.extend(preps().1.into_iter().filter_map(|p| Some((k, p(k)?))));
    }
    let mut list = Vec::new();
    for (k, f) in low_done {
        let fds = &idle[..k];
        if fds.iter().any(|&(fd, _)| fd >= FD_SETSIZE) {
            notes.push(format!(
                "select/{k}: n/a, idle fds reach past FD_SETSIZE in this process"
            ));
            continue;
        }
        list.push(f(fds));
    }
    for (k, f) in done {
        list.push(f(&idle[..k]));
    }
    notes.push(format!(
        "select: n/a with {} idle fds (fds >= FD_SETSIZE = 1024 cannot be watched; registering one is InvalidInput).",
        SIZES[2]
    ));
    // Sort by name, then size, so the table reads per contender.
    let key = |id: &str| {
        let (name, k) = id.rsplit_once('/').unwrap_or((id, "0"));
        (name.to_owned(), k.parse::<usize>().unwrap_or(0))
    };
    list.sort_by_key(|(id, _)| key(id));
    (pool, list, notes)
}

fn same_size(base: &'static str) -> impl Fn(&str) -> Option<String> {
    move |id| id.rsplit_once('/').map(|(_, k)| format!("{base}/{k}"))
}

fn spec(notes: Vec<String>) -> Spec {
    let mut s = Spec::new("idle_scale", "hop", HOPS)
        .base(Base::map(
            "floor-level (same size)",
            same_size("floor-level"),
        ))
        .base(Base::map("mio (same size)", same_size("mio")))
        .base(Base::map("own/10", |id| {
            id.rsplit_once('/').map(|(n, _)| format!("{n}/10"))
        }));
    for n in notes {
        s = s.note(n);
    }
    s
}

fn bench<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    let (_pool, list, _) = contenders();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(HOPS))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (id, mut run) in list {
        g.bench_function(id, |b| b.iter(&mut run));
    }
    g.finish();
}

fn main() {
    if let Some(rounds) = common::env_rounds("IDLE_SCALE_ROUNDS") {
        let (pool, list, notes) = contenders();
        let spec = spec(notes);
        let rows = common::measure(common::filtered("IDLE_SCALE", list), rounds, &spec);
        common::report(&spec, &rows, rounds);
        drop(pool);
        return;
    }
    if common::cpu_clock() {
        let mut c = Criterion::default()
            .with_measurement(common::ThreadCpu)
            .configure_from_args();
        bench(&mut c, "idle_scale-cpu");
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c, "idle_scale");
        c.final_summary();
    }
}
