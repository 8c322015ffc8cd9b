//! Churn: register and deregister one fd (an end of a socketpair), [`OPS`] times per
//! iteration; one element is one register + deregister pair.
//!
//! | id | what |
//! |---|---|
//! | `floor` | raw libc `epoll_ctl(ADD)` + `epoll_ctl(DEL)` |
//! | `mio` | `Registry::register` + `deregister` (`SourceFd`) |
//! | `polling` | `Poller::add` + `delete` |
//! | `ioloop-sys-<backend>` | `Poller::register` + `deregister` (`Mode::Level`) |
//! | `ioloop-<backend>` | `IoLoop::add_handler` + `remove_handler` |
//! | `ioloop-task-<backend>` | `Async::with_loop_nonblocking(&lp, &stream)` + drop (the fd is set non-blocking once, as mio requires) |
//!
//! io_uring, poll and select keep registrations in a table: io_uring queues a POLL_ADD and a
//! POLL_REMOVE per pair and submits them in batches at the next wait (or when its SQ fills),
//! poll and select only change their table; so their numbers are not kernel round trips.
//!
//! # Running
//!
//! * `cargo bench --bench churn`: criterion (`IOLOOP_BENCH_CLOCK=cpu`: thread CPU time).
//! * `CHURN_ROUNDS=100 [CHURN_FILTER=a,b,..] cargo bench --bench churn`: interleaved runner.

use std::os::fd::BorrowedFd;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{Criterion, SamplingMode, Throughput};
use ioloop::{Async, IoLoop};
use ioloop_sys::{Interest, Mode, Poller};

mod common;
#[cfg(ioloop_has_epoll)]
use common::RawEpoll;
use common::{Contender, Pair, Spec};

/// Register + deregister pairs per iteration.
const OPS: u64 = 1000;

fn push(list: &mut Vec<Contender>, id: impl Into<String>, run: impl FnMut() + 'static) {
    list.push((id.into(), Box::new(run)));
}

fn sys<P: Poller>(list: &mut Vec<Contender>) {
    let poller = P::new_owned().unwrap_or_else(|e| panic!("{}::new_owned: {e}", P::NAME));
    let pair = Pair::new();
    push(list, format!("ioloop-sys-{}", P::NAME), move || {
        let fd = pair.fd(0);
        for _ in 0..OPS {
            poller
                .register(fd, 0, Interest::READABLE, Mode::Level)
                .expect("register");
            poller.deregister(fd).expect("deregister");
        }
    });
}

fn reactor<P: Poller>(list: &mut Vec<Contender>) {
    let lp = IoLoop::<P>::with_backend().unwrap_or_else(|e| panic!("IoLoop: {e}"));
    let pair = Pair::new();
    push(list, format!("ioloop-{}", P::NAME), move || {
        let fd = pair.fd(0);
        for _ in 0..OPS {
            lp.add_handler(fd, Interest::READABLE, |_, _, _| {})
                .expect("add_handler");
            lp.remove_handler(fd).expect("remove_handler");
        }
    });
}

fn tasks<P: Poller>(list: &mut Vec<Contender>) {
    let lp = IoLoop::<P>::with_backend().unwrap_or_else(|e| panic!("IoLoop: {e}"));
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    // Non-blocking once, as mio requires of its sources; `with_loop` would check it per op.
    a.set_nonblocking(true).expect("O_NONBLOCK");
    push(list, format!("ioloop-task-{}", P::NAME), move || {
        let _keep = &_b;
        for _ in 0..OPS {
            drop(Async::with_loop_nonblocking(&lp, &a).expect("Async"));
        }
    });
}

fn contenders() -> Vec<Contender> {
    let mut list = Vec::new();
    #[cfg(ioloop_has_epoll)]
    {
        let ep = RawEpoll::new(1);
        let pair = Pair::new();
        push(&mut list, "floor", move || {
            let fd = pair.fd(0);
            for _ in 0..OPS {
                ep.add(fd, 0, libc::EPOLLIN);
                ep.del(fd);
            }
        });
    }
    {
        let poll = mio::Poll::new().expect("mio Poll");
        let pair = Pair::new();
        push(&mut list, "mio", move || {
            let fd = pair.fd(0);
            let reg = poll.registry();
            for _ in 0..OPS {
                reg.register(
                    &mut mio::unix::SourceFd(&fd),
                    mio::Token(0),
                    mio::Interest::READABLE,
                )
                .expect("mio register");
                reg.deregister(&mut mio::unix::SourceFd(&fd))
                    .expect("mio deregister");
            }
        });
    }
    {
        let poller = polling::Poller::new().expect("polling Poller");
        let pair = Pair::new();
        push(&mut list, "polling", move || {
            let fd = pair.fd(0);
            for _ in 0..OPS {
                // SAFETY: `fd` (owned by `pair`, captured with the poller) is deleted right
                // after, and stays open meanwhile, as `add` requires.
                unsafe { poller.add(fd, polling::Event::readable(0)) }.expect("polling add");
                // SAFETY: `fd` is open: `pair` owns it for the whole closure.
                let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
                poller.delete(bfd).expect("polling delete");
            }
        });
    }
    common::every_sys_backend!(sys(&mut list));
    reactor::<ioloop::DefaultPoller>(&mut list);
    #[cfg(ioloop_has_uring)]
    reactor::<ioloop_sys::Uring>(&mut list);
    reactor::<ioloop_sys::Poll>(&mut list);
    tasks::<ioloop::DefaultPoller>(&mut list);
    list
}

fn spec() -> Spec {
    Spec::new("churn", "op", OPS).bases(["floor", "mio"]).note(
        "One op = register + deregister of one socketpair end. io_uring batches its POLL_ADD/POLL_REMOVE \
         submissions (nothing waits in between); poll and select only update their table (plus an fcntl \
         check that the fd is open).",
    )
}

fn bench<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(OPS))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (id, mut run) in contenders() {
        g.bench_function(id, |b| b.iter(&mut run));
    }
    g.finish();
}

fn main() {
    if common::env_run("CHURN", contenders, &spec()) {
        return;
    }
    if common::cpu_clock() {
        let mut c = Criterion::default()
            .with_measurement(common::ThreadCpu)
            .configure_from_args();
        bench(&mut c, "churn-cpu");
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c, "churn");
        c.final_summary();
    }
}
