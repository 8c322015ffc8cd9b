//! Fan-in: [`PAIRS`] socketpairs, all active. Each iteration writes one byte into end A of
//! every pair, then waits until end B of every pair was reported readable and read its byte:
//! [`PAIRS`] events per iteration, most of them delivered by one wait (every contender has
//! room for [`CAPACITY`] events per wait). Throughput is in events delivered per second.
//!
//! | id | what |
//! |---|---|
//! | `floor-level` / `floor-edge` | raw libc `epoll_wait` into a reused array |
//! | `mio` | mio 1.x `Poll` + reused `Events` (edge-triggered) |
//! | `mio-control-<g>` | the same code again, on its own pairs, in every group `g`: its ratio to `mio` is the noise floor of that group |
//! | `polling-level` | polling 3.x, `PollMode::Level` |
//! | `ioloop-sys-<backend>-<mode>` | the ioloop-sys backends |
//! | `ioloop-<backend>-<mode>` | the reactor: one `IoLoop` handler per fd, `run` per iteration |
//! | `ioloop-task-<backend>` | the task layer: one task per fd, `AsyncRead::read` into a 64-byte buffer in a loop (on the default backend, io_uring and poll) |
//!
//! select is not a contender: 2 000 fds per contender go past `FD_SETSIZE` (1024).
//!
//! Every contender owns its [`PAIRS`] pairs (2 000 fds), so not all of them fit under the
//! 20 000-fd hard limit at once: contenders run in groups, each with `floor-level`,
//! `floor-edge`, `mio` and its own control `mio-control-<g>` (the paired ratios are taken
//! within a group).
//!
//! Which socket objects a contender gets matters: a mio control, the same code as `mio` on
//! other pairs, measured 0.98-1.03 x `mio` in single runs. So the interleaved runner spreads
//! its rounds over [`EPOCHS`] fresh sets of pairs (every contender rebuilt on new fds), and
//! the control's row shows what is left of that noise.
//!
//! # Running
//!
//! * `cargo bench --bench fanin`: criterion, wall-clock time (`IOLOOP_BENCH_CLOCK=cpu`: this
//!   thread's CPU time).
//! * `FANIN_ROUNDS=40 [FANIN_FILTER=a,b,..] cargo bench --bench fanin`: the interleaved runner
//!   (see `common::measure`).

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{Criterion, SamplingMode, Throughput};
use ioloop::{Async, IoLoop};
use ioloop_sys::{Interest, Mode, Poller};

mod common;
#[cfg(ioloop_has_epoll)]
use common::RawEpoll;
use common::{
    mode_id, recv_byte, send_byte, Contender, MioWaiter, Pair, PollingWaiter, Spec, SysWaiter,
    Waiter,
};

/// Active socketpairs per contender.
const PAIRS: usize = 1000;
/// Events per wait, for every contender (the reactor's own capacity is 1024 too).
const CAPACITY: usize = 1024;
/// Contenders per group besides the three baselines and the group's control (4 + 5
/// contenders = 18 000 fds).
const GROUP: usize = 5;

/// How many fresh sets of socketpairs the interleaved runner spreads its rounds over.
const EPOCHS: usize = 30;

/// Builds one contender into the list.
type Maker = Box<dyn FnOnce(&mut Vec<Contender>)>;

fn pairs() -> Vec<Pair> {
    (0..PAIRS).map(|_| Pair::new()).collect()
}

/// `(fd of end B, token = index)` of every pair.
fn b_ends(pairs: &[Pair]) -> impl Iterator<Item = (i32, u64)> + '_ {
    pairs.iter().enumerate().map(|(i, p)| (p.fd(1), i as u64))
}

/// One iteration: a byte into every A end, then waits until every B end has been read once.
#[inline]
fn fanin_round<W: Waiter>(w: &mut W, pairs: &[Pair]) {
    for p in pairs {
        send_byte(p.fd(0));
    }
    let mut left = pairs.len();
    while left > 0 {
        w.wait_readable(|token| {
            recv_byte(pairs[token as usize].fd(1));
            left -= 1;
        });
    }
}

/// Adds a contender whose waiter `make` builds over fresh pairs (watching the B ends).
fn contender<W: Waiter + 'static>(
    list: &mut Vec<Contender>,
    id: &str,
    make: impl FnOnce(&[Pair]) -> W,
) {
    /// Field order matters: the waiter (and its registrations) drops before the fds.
    struct Running<W> {
        w: W,
        pairs: Vec<Pair>,
    }
    let pairs = pairs();
    let w = make(&pairs);
    let mut r = Running { w, pairs };
    list.push((
        id.to_owned(),
        Box::new(move || fanin_round(&mut r.w, &r.pairs)),
    ));
}

#[cfg(ioloop_has_epoll)]
fn floor(pairs: &[Pair], extra: libc::c_int) -> RawEpoll {
    let ep = RawEpoll::new(CAPACITY);
    for (fd, token) in b_ends(pairs) {
        ep.add(fd, token, libc::EPOLLIN | libc::EPOLLRDHUP | extra);
    }
    ep
}

/// The baselines of group `g` (0-based), and its control: mio again, on its own pairs.
fn baselines(list: &mut Vec<Contender>, g: usize) {
    #[cfg(ioloop_has_epoll)]
    {
        contender(list, "floor-level", |p| floor(p, 0));
        contender(list, "floor-edge", |p| floor(p, libc::EPOLLET));
    }
    contender(list, "mio", |p| MioWaiter::new(b_ends(p), CAPACITY));
    contender(list, &format!("mio-control-{}", g + 1), |p| {
        MioWaiter::new(b_ends(p), CAPACITY)
    });
}

fn sys<P: Poller>(mode: Mode) -> Maker {
    Box::new(move |list| {
        let poller = P::new_owned().unwrap_or_else(|e| panic!("{}::new_owned: {e}", P::NAME));
        if poller.supports(mode) {
            contender(list, &mode_id("ioloop-sys", P::NAME, mode), |p| {
                SysWaiter::new(poller, b_ends(p), mode, CAPACITY)
            });
        }
    })
}

/// The reactor: one handler per B end reads its byte; the last one stops the loop.
fn reactor<P: Poller>(mode: Mode) -> Maker {
    Box::new(move |list| {
        struct Running<P: Poller> {
            lp: IoLoop<P>,
            left: Rc<Cell<usize>>,
            pairs: Vec<Pair>,
        }
        let lp = IoLoop::<P>::with_backend().unwrap_or_else(|e| panic!("IoLoop: {e}"));
        if !lp.poller().supports(mode) {
            return;
        }
        let pairs = pairs();
        let left = Rc::new(Cell::new(0usize));
        for p in &pairs {
            let left = left.clone();
            lp.add_handler_with(p.fd(1), Interest::READABLE, mode, move |lp, fd, _| {
                recv_byte(fd);
                left.set(left.get() - 1);
                if left.get() == 0 {
                    lp.stop();
                }
            })
            .expect("add_handler");
        }
        let r = Running { lp, left, pairs };
        list.push((
            mode_id("ioloop", P::NAME, mode),
            Box::new(move || {
                r.left.set(r.pairs.len());
                for p in &r.pairs {
                    send_byte(p.fd(0));
                }
                r.lp.run().expect("run");
            }),
        ));
    })
}

/// The task layer: one task per B end, `AsyncRead::read` in a loop; `run_until` all read.
fn tasks<P: Poller>() -> Maker {
    Box::new(move |list| {
        let lp = IoLoop::<P>::with_backend().unwrap_or_else(|e| panic!("IoLoop: {e}"));
        let done = Rc::new(Cell::new(0usize));
        let mut writers = Vec::with_capacity(PAIRS);
        for _ in 0..PAIRS {
            let (a, b) = UnixStream::pair().expect("socketpair");
            a.set_nonblocking(true).expect("O_NONBLOCK");
            writers.push(a);
            let b = Async::with_loop(&lp, b).expect("Async");
            let done = done.clone();
            lp.spawn(async move {
                // A buffer larger than what arrives: a short read tells the task the
                // socket is drained (tokio's rule), so it parks without a read that would
                // only say `WouldBlock`.
                let mut buf = [0u8; 64];
                loop {
                    let n = futures_lite::AsyncReadExt::read(&mut &b, &mut buf)
                        .await
                        .expect("read");
                    assert_eq!(n, 1);
                    done.set(done.get() + 1);
                }
            })
            .detach();
        }
        list.push((
            format!("ioloop-task-{}", P::NAME),
            Box::new(move || {
                done.set(0);
                for a in &writers {
                    send_byte(a.as_raw_fd());
                }
                lp.run_until(|_| done.get() == PAIRS).expect("run_until");
            }),
        ));
    })
}

/// Every contender besides the baselines.
fn others() -> Vec<Maker> {
    let mut v: Vec<Maker> = vec![Box::new(|list: &mut Vec<Contender>| {
        contender(list, "polling-level", |p| {
            PollingWaiter::new(b_ends(p), CAPACITY)
        })
    })];
    #[cfg(ioloop_has_epoll)]
    {
        v.push(sys::<ioloop_sys::Epoll>(Mode::Level));
        v.push(sys::<ioloop_sys::Epoll>(Mode::Edge));
    }
    #[cfg(ioloop_has_uring)]
    {
        v.push(sys::<ioloop_sys::Uring>(Mode::Level));
        v.push(sys::<ioloop_sys::Uring>(Mode::Edge));
    }
    #[cfg(ioloop_has_kqueue)]
    {
        v.push(sys::<ioloop_sys::Kqueue>(Mode::Level));
        v.push(sys::<ioloop_sys::Kqueue>(Mode::Edge));
    }
    v.push(sys::<ioloop_sys::Poll>(Mode::Level));
    v.push(reactor::<ioloop::DefaultPoller>(Mode::Level));
    v.push(reactor::<ioloop::DefaultPoller>(Mode::Edge));
    #[cfg(ioloop_has_uring)]
    {
        v.push(reactor::<ioloop_sys::Uring>(Mode::Level));
        v.push(reactor::<ioloop_sys::Uring>(Mode::Edge));
    }
    v.push(reactor::<ioloop_sys::Poll>(Mode::Level));
    v.push(tasks::<ioloop::DefaultPoller>());
    #[cfg(ioloop_has_uring)]
    v.push(tasks::<ioloop_sys::Uring>());
    v.push(tasks::<ioloop_sys::Poll>());
    v
}

/// The contender groups: the baselines, then [`GROUP`] others, per group. `with_baselines`
/// is called with the group's index and says whether to add the baselines to it.
fn groups(with_baselines: impl Fn(usize) -> bool) -> Vec<Box<dyn FnOnce() -> Vec<Contender>>> {
    let mut out: Vec<Box<dyn FnOnce() -> Vec<Contender>>> = Vec::new();
    let mut rest = others().into_iter().peekable();
    let mut g = 0;
    while rest.peek().is_some() {
        let chunk: Vec<Maker> = rest.by_ref().take(GROUP).collect();
        let base = with_baselines(g);
        out.push(Box::new(move || {
            let mut list = Vec::new();
            if base {
                baselines(&mut list, g);
            }
            for make in chunk {
                make(&mut list);
            }
            list
        }));
        g += 1;
    }
    out
}

fn spec() -> Spec {
    Spec::new("fanin", "event", PAIRS as u64)
        .bases(["floor-level", "floor-edge", "mio"])
        .note(format!(
            "{PAIRS} socketpairs per contender, all active: each round writes 1 byte into every pair and reads it back \
             at the other end. Contenders run in groups of up to {} (fd limit); each group carries floor-level, \
             floor-edge, mio and its own control mio-control-<group> (mio again, on its own pairs), and ratios are \
             paired within the group; the baselines' own rows are from the first group. \
             select: n/a (2 000 fds per contender, FD_SETSIZE = 1024).",
            GROUP + 4
        ))
}

fn bench<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    for make in groups(|g| g == 0) {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(PAIRS as u64))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for (id, mut run) in make() {
            g.bench_function(id, |b| b.iter(&mut run));
        }
        g.finish();
    }
}

fn main() {
    common::raise_nofile(20_000);
    if let Some(rounds) = common::env_rounds("FANIN_ROUNDS") {
        let mut spec = spec();
        // The rounds are split over EPOCHS sets of fresh socketpairs (and registrations), so
        // the luck of where one set landed in the kernel's memory averages out.
        let epochs = EPOCHS.min(rounds.max(1));
        let per_epoch = (rounds + epochs - 1) / epochs;
        let mut samples: Vec<Option<common::Samples>> = Vec::new();
        for _ in 0..epochs {
            for (g, make) in groups(|_| true).into_iter().enumerate() {
                let list = common::filtered("FANIN", make());
                let s = common::sample(list, per_epoch, &spec);
                if samples.len() <= g {
                    samples.push(None);
                }
                match &mut samples[g] {
                    Some(all) => all.extend(s),
                    none => *none = Some(s),
                }
            }
        }
        let groups: Vec<String> = samples
            .iter()
            .enumerate()
            .filter_map(|(g, s)| Some(format!("{}: {}", g + 1, s.as_ref()?.ids().join(", "))))
            .collect();
        spec = spec.note(format!("Groups: {}.", groups.join("; ")));
        let mut rows: Vec<common::Row> = Vec::new();
        for s in samples.iter().flatten() {
            for row in s.rows(&spec) {
                if !rows.iter().any(|r| r.id == row.id) {
                    rows.push(row);
                }
            }
        }
        common::report(&spec, &rows, per_epoch * epochs);
        return;
    }
    if common::cpu_clock() {
        let mut c = Criterion::default()
            .with_measurement(common::ThreadCpu)
            .configure_from_args();
        bench(&mut c, "fanin-cpu");
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c, "fanin");
        c.final_summary();
    }
}
