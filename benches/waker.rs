//! Waker: cross-thread wake-up round trips. Thread A (the bench thread) wakes thread B, which
//! is blocked in its poller's wait; B wakes up and wakes A back, which was blocked in its own
//! wait. [`TRIPS`] round trips per iteration; one element is one round trip (two wake-ups,
//! two blocking waits).
//!
//! | id | wake | wait |
//! |---|---|---|
//! | `floor` | `write(eventfd)` (registered `EPOLLET`, never read, as mio does) | `epoll_wait` |
//! | `floor-inline` | the same | `epoll_wait` with the system call instruction inlined into the loop (no libc wrapper) |
//! | `floor-uring` | `write(eventfd)` | `io_uring_enter(GETEVENTS)` on a ring set up as ioloop's owned mode, with a multishot poll of the eventfd (never read) |
//! | `mio` | `mio::Waker::wake` | `Poll::poll` |
//! | `mio-poll` | the same, with mio built on `poll(2)` (a separate build, see [`MIO_ON_POLL`]) | `Poll::poll` |
//! | `floor-poll`, `floor-select` | `write(eventfd)` (mio-poll build only) | raw `poll(2)` / `select(2)` on the eventfd, then `read` it (level-triggered) |
//! | `polling` | `Poller::notify` | `Poller::wait` |
//! | `ioloop-sys-<backend>` | `Notifier::notify` | `Poller::wait` |
//! | `ioloop-<backend>` | `Handle::add_callback` (B's callback adds A's, which stops A's `run`) | `IoLoop::run` |
//!
//! CPU time is the whole process's (both threads); wall time is the round-trip latency.
//!
//! # Running
//!
//! * `cargo bench --bench waker`: criterion, wall clock.
//! * `WAKER_ROUNDS=100 [WAKER_FILTER=a,b,..] cargo bench --bench waker`: interleaved runner
//!   (process CPU time).
//! * `WAKER_SELF=1` with either: one thread wakes itself and waits (which returns at once;
//!   no reactor contenders), [`TRIPS`] times per iteration: the user-space instructions of one
//!   wake-up and one wait, for `valgrind --tool=callgrind`, which cannot run a thread blocked
//!   in `io_uring_enter(2)` while another thread wakes it.
//! * With `WAKER_FILTER` set, the contenders it leaves out are not set up at all (no peer
//!   thread, in criterion's mode too), so callgrind can also count a threaded contender
//!   that does not use io_uring: `WAKER_FILTER==ioloop-epoll WAKER_ROUNDS=2`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use ioloop::IoLoop;
use ioloop_sys::{Events, Poller};

mod common;
use common::{Clock, Contender, Spec};

/// Round trips per iteration.
const TRIPS: u64 = 200;

/// One side's blocking wait (returns once woken).
trait Side: Send + 'static {
    fn wait(&mut self);
}

/// What wakes a side from another thread.
trait Wake: Send + Sync + 'static {
    fn wake(&self);
}

/// `WAKER_SELF=1`: every side wakes itself (see the module docs).
fn self_wake() -> bool {
    std::env::var("WAKER_SELF").is_ok_and(|v| v == "1")
}

/// B's thread, stopped and joined on drop.
struct Peer {
    stop: Arc<AtomicBool>,
    wake_b: Arc<dyn Wake>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.wake_b.wake();
        if let Some(t) = self.thread.take() {
            t.join().expect("peer thread");
        }
    }
}

/// A contender from two sides and their wakers: B runs on its own thread and answers every
/// wake-up with one of A. With `WAKER_SELF=1`, A wakes itself instead (see the module docs).
fn pair_contender(
    list: &mut Vec<Contender>,
    id: &str,
    (mut a, wake_a): (impl Side, impl Wake),
    (mut b, wake_b): (impl Side, impl Wake),
) {
    if !common::wanted("WAKER", id) {
        return; // no peer thread for a contender filtered out (see the module docs)
    }
    if self_wake() {
        // One thread: A wakes itself and waits, which returns at once.
        drop((b, wake_b));
        list.push((
            id.to_owned(),
            Box::new(move || {
                for _ in 0..TRIPS {
                    wake_a.wake();
                    a.wait();
                }
            }),
        ));
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || loop {
        b.wait();
        if stop2.load(Ordering::Acquire) {
            return;
        }
        wake_a.wake();
    });
    let wake_b: Arc<dyn Wake> = Arc::new(wake_b);
    let peer = Peer {
        stop,
        wake_b: wake_b.clone(),
        thread: Some(thread),
    };
    list.push((
        id.to_owned(),
        Box::new(move || {
            let _peer = &peer;
            for _ in 0..TRIPS {
                wake_b.wake();
                a.wait();
            }
        }),
    ));
}

// ---- the floors' eventfd --------------------------------------------------------------------

/// The eventfd each floor waits on, and the waker that writes to it.
#[cfg(any(target_os = "linux", target_os = "android"))]
mod eventfd {
    use super::Wake;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::Arc;

    /// A non-blocking eventfd, shared by a side (which waits on it) and its waker.
    pub fn new() -> Arc<OwnedFd> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just created and nothing else owns it.
        Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Wakes by adding 1 to the eventfd.
    pub struct EventFdWake(pub Arc<OwnedFd>);

    impl Wake for EventFdWake {
        #[inline]
        fn wake(&self) {
            let one = 1u64;
            // SAFETY: `one` is a live 8-byte buffer; the eventfd is open (owned here).
            let n = unsafe { libc::write(self.0.as_raw_fd(), std::ptr::addr_of!(one).cast(), 8) };
            assert_eq!(n, 8, "eventfd write: {}", std::io::Error::last_os_error());
        }
    }
}

// ---- raw epoll + eventfd -------------------------------------------------------------------

#[cfg(ioloop_has_epoll)]
mod floor {
    use super::eventfd::{self, EventFdWake};
    use super::Side;
    use std::os::fd::AsRawFd;

    pub struct FloorSide(super::common::RawEpoll);

    /// An epoll instance watching a new eventfd, edge-triggered, and the eventfd's waker;
    /// `inline`: its wait with the system call instruction inlined
    /// ([`RawEpoll::inline_syscall`](super::common::RawEpoll::inline_syscall)).
    pub fn side(inline: bool) -> (FloorSide, EventFdWake) {
        let efd = eventfd::new();
        let ep = super::common::RawEpoll::new(1);
        let ep = if inline { ep.inline_syscall() } else { ep };
        ep.add(efd.as_raw_fd(), 0, libc::EPOLLIN | libc::EPOLLET);
        (FloorSide(ep), EventFdWake(efd))
    }

    impl Side for FloorSide {
        #[inline]
        fn wait(&mut self) {
            while self.0.wait().is_empty() {}
        }
    }
}

// ---- raw io_uring + eventfd ---------------------------------------------------------------

/// The io_uring floor: one ring per side, set up as ioloop's owned mode is
/// (`SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`, enabled by the thread that waits), with a
/// multishot poll of an eventfd that is never read, through the `io-uring` crate: the cost
/// of a wake-up through io_uring itself, against `floor` (epoll). Where the `io-uring` crate
/// has kernel bindings (the dev-dependency's cfg in Cargo.toml; build.rs sets the cfg).
#[cfg(ioloop_bench_uring_floor)]
mod uring_floor {
    use super::eventfd::{self, EventFdWake};
    use super::Side;
    use io_uring::{cqueue, opcode, types, IoUring};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::sync::Arc;

    pub struct UringSide {
        ring: IoUring,
        efd: Arc<OwnedFd>,
        armed: bool,
        enabled: bool,
    }

    /// A disabled ring and a new eventfd (the ring is enabled and the poll armed by the
    /// first wait, on the waiting thread).
    pub fn side() -> (UringSide, EventFdWake) {
        let efd = eventfd::new();
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_r_disabled()
            .build(8)
            .expect("io_uring setup (Linux 6.1+)");
        (
            UringSide {
                ring,
                efd: efd.clone(),
                armed: false,
                enabled: false,
            },
            EventFdWake(efd),
        )
    }

    impl Side for UringSide {
        #[inline]
        fn wait(&mut self) {
            if !self.enabled {
                self.ring
                    .submitter()
                    .register_enable_rings()
                    .expect("enable ring");
                self.enabled = true;
            }
            loop {
                if !self.armed {
                    let poll =
                        opcode::PollAdd::new(types::Fd(self.efd.as_raw_fd()), libc::POLLIN as u32)
                            .multi(true)
                            .build()
                            .user_data(1);
                    // SAFETY: the poll refers to the eventfd, which this side keeps open
                    // for as long as the ring lives.
                    unsafe { self.ring.submission().push(&poll) }.expect("SQ full");
                    self.armed = true;
                }
                self.ring.submit_and_wait(1).expect("io_uring_enter");
                let mut woken = false;
                for cqe in self.ring.completion() {
                    assert!(cqe.result() > 0, "poll: {}", cqe.result());
                    woken = true;
                    if !cqueue::more(cqe.flags()) {
                        self.armed = false;
                    }
                }
                if woken {
                    return;
                }
            }
        }
    }
}

// ---- raw poll(2) / select(2) + eventfd (the mio-poll build) --------------------------------

/// The level-triggered floors: one eventfd, waited for with `poll(2)` or `select(2)` and
/// read on every wake-up (a level-triggered notifier must be reset), as mio on poll(2) and
/// ioloop's poll and select backends do, with nothing else around the system calls.
#[cfg(any(target_os = "linux", target_os = "android"))]
mod level_floor {
    use super::eventfd::{self, EventFdWake};
    use super::Side;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::sync::Arc;

    pub struct LevelSide {
        efd: Arc<OwnedFd>,
        select: bool,
    }

    /// A new eventfd, waited for with select(2) if `select`, else poll(2), and its waker.
    pub fn side(select: bool) -> (LevelSide, EventFdWake) {
        let efd = eventfd::new();
        let fd = efd.as_raw_fd();
        assert!(
            (fd as usize) < libc::FD_SETSIZE,
            "eventfd {fd} past FD_SETSIZE"
        );
        (
            LevelSide {
                efd: efd.clone(),
                select,
            },
            EventFdWake(efd),
        )
    }

    impl LevelSide {
        fn wait_once(&self) -> i32 {
            let fd = self.efd.as_raw_fd();
            if self.select {
                // SAFETY: an all-zero fd_set is the empty set.
                let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
                // SAFETY: `fd` < FD_SETSIZE (checked at creation); `set` is a valid fd_set.
                unsafe { libc::FD_SET(fd, &mut set) };
                // SAFETY: `set` is a valid fd_set holding `fd` only; the other sets and the
                // timeout may be null.
                unsafe {
                    libc::select(
                        fd + 1,
                        &mut set,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                }
            } else {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: `pfd` is one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, -1) }
            }
        }
    }

    impl Side for LevelSide {
        #[inline]
        fn wait(&mut self) {
            while self.wait_once() <= 0 {}
            let mut count = 0u64;
            // SAFETY: `count` is a live 8-byte buffer; the eventfd is open (owned here).
            let n = unsafe {
                libc::read(
                    self.efd.as_raw_fd(),
                    std::ptr::addr_of_mut!(count).cast(),
                    8,
                )
            };
            assert_eq!(n, 8, "eventfd read: {}", std::io::Error::last_os_error());
        }
    }
}

// ---- mio -----------------------------------------------------------------------------------

struct MioSide(mio::Poll, mio::Events);
impl Side for MioSide {
    #[inline]
    fn wait(&mut self) {
        self.0.poll(&mut self.1, None).expect("mio poll");
    }
}
impl Wake for mio::Waker {
    #[inline]
    fn wake(&self) {
        mio::Waker::wake(self).expect("mio wake");
    }
}
fn mio_side() -> (MioSide, mio::Waker) {
    let poll = mio::Poll::new().expect("mio Poll");
    let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("mio Waker");
    (MioSide(poll, mio::Events::with_capacity(8)), waker)
}

// ---- polling -------------------------------------------------------------------------------

struct PollingSide(Arc<polling::Poller>, polling::Events);
struct PollingWake(Arc<polling::Poller>);
impl Side for PollingSide {
    #[inline]
    fn wait(&mut self) {
        self.1.clear();
        self.0.wait(&mut self.1, None).expect("polling wait");
    }
}
impl Wake for PollingWake {
    #[inline]
    fn wake(&self) {
        self.0.notify().expect("polling notify");
    }
}
fn polling_side() -> (PollingSide, PollingWake) {
    let p = Arc::new(polling::Poller::new().expect("polling Poller"));
    (
        PollingSide(p.clone(), polling::Events::new()),
        PollingWake(p),
    )
}

// ---- ioloop-sys ----------------------------------------------------------------------------

struct SysSide<P>(P, Events);
impl<P: Poller> Side for SysSide<P> {
    #[inline]
    fn wait(&mut self) {
        self.0.wait(&mut self.1, None).expect("wait");
    }
}
impl Wake for ioloop_sys::Notifier {
    #[inline]
    fn wake(&self) {
        self.notify().expect("notify");
    }
}
fn sys_side<P: Poller>() -> (SysSide<P>, ioloop_sys::Notifier) {
    let p = P::new_owned().unwrap_or_else(|e| panic!("{}::new_owned: {e}", P::NAME));
    let n = p.notifier();
    (SysSide(p, Events::with_capacity(8)), n)
}

fn sys<P: Poller>(list: &mut Vec<Contender>) {
    pair_contender(
        list,
        &format!("ioloop-sys-{}", P::NAME),
        sys_side::<P>(),
        sys_side::<P>(),
    );
}

// ---- the reactor ---------------------------------------------------------------------------

/// Two loops: B runs on its thread; each round trip, A's thread adds a callback to B, whose
/// callback adds one to A that stops A's `run`.
fn reactor<P: Poller>(list: &mut Vec<Contender>) {
    if !common::wanted("WAKER", &format!("ioloop-{}", P::NAME)) {
        return;
    }
    let lp_a = IoLoop::<P>::with_backend().unwrap_or_else(|e| panic!("IoLoop: {e}"));
    let ha = lp_a.handle();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let lp_b = IoLoop::<P>::with_backend().expect("IoLoop");
        tx.send(lp_b.handle()).expect("send handle");
        lp_b.run().expect("run B");
    });
    let hb = rx.recv().expect("B's handle");
    /// Stops and joins B on drop.
    struct Running<P: Poller> {
        hb: ioloop::Handle<P>,
        thread: Option<JoinHandle<()>>,
    }
    impl<P: Poller> Drop for Running<P> {
        fn drop(&mut self) {
            let _ = self.hb.stop();
            if let Some(t) = self.thread.take() {
                t.join().expect("loop B");
            }
        }
    }
    let r = Running {
        hb,
        thread: Some(thread),
    };
    list.push((
        format!("ioloop-{}", P::NAME),
        Box::new(move || {
            for _ in 0..TRIPS {
                let ha = ha.clone();
                r.hb.add_callback(move |_| {
                    ha.add_callback(|lp| lp.stop()).expect("add_callback A");
                })
                .expect("add_callback B");
                lp_a.run().expect("run A");
            }
        }),
    ));
}

/// Set (at build time) by `benches/run.sh` when it builds this bench with mio on `poll(2)`
/// (`RUSTFLAGS="--cfg mio_unsupported_force_poll_poll"`): mio's `Waker` is then the one it
/// has where the OS has no epoll or kqueue, the like-with-like base for ioloop's poll and
/// select backends, which are the only contenders of that build.
const MIO_ON_POLL: bool = option_env!("IOLOOP_MIO_POLL").is_some();

fn contenders() -> Vec<Contender> {
    let mut list = Vec::new();
    if MIO_ON_POLL {
        pair_contender(&mut list, "mio-poll", mio_side(), mio_side());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let (a, b) = (level_floor::side(false), level_floor::side(false));
            pair_contender(&mut list, "floor-poll", a, b);
            let (a, b) = (level_floor::side(true), level_floor::side(true));
            pair_contender(&mut list, "floor-select", a, b);
        }
        sys::<ioloop_sys::Poll>(&mut list);
        sys::<ioloop_sys::Select>(&mut list);
        if !self_wake() {
            reactor::<ioloop_sys::Poll>(&mut list);
        }
        return list;
    }
    #[cfg(ioloop_has_epoll)]
    pair_contender(&mut list, "floor", floor::side(false), floor::side(false));
    #[cfg(ioloop_has_epoll)]
    pair_contender(
        &mut list,
        "floor-inline",
        floor::side(true),
        floor::side(true),
    );
    #[cfg(ioloop_bench_uring_floor)]
    pair_contender(
        &mut list,
        "floor-uring",
        uring_floor::side(),
        uring_floor::side(),
    );
    pair_contender(&mut list, "mio", mio_side(), mio_side());
    pair_contender(&mut list, "polling", polling_side(), polling_side());
    common::every_sys_backend!(sys(&mut list));
    if self_wake() {
        return list;
    }
    reactor::<ioloop::DefaultPoller>(&mut list);
    #[cfg(ioloop_has_uring)]
    reactor::<ioloop_sys::Uring>(&mut list);
    reactor::<ioloop_sys::Poll>(&mut list);
    list
}

fn spec() -> Spec {
    if MIO_ON_POLL {
        return Spec::new("waker-mio-poll", "round trip", TRIPS)
            .clock(Clock::Process)
            .bases(["mio-poll", "floor-poll", "floor-select"])
            .note(
                "mio built with `--cfg mio_unsupported_force_poll_poll`: its `Poll` and `Waker` on \
                 poll(2), as on a system without epoll or kqueue. A level-triggered notifier is read \
                 on every wake-up, by mio as by ioloop. `floor-poll` and `floor-select`: one eventfd \
                 waited for with raw `poll(2)` / `select(2)` and read on each wake-up, nothing else. \
                 Threads pinned and CPU time as above.",
            );
    }
    Spec::new("waker", "round trip", TRIPS)
        .clock(Clock::Process)
        .bases(["floor", "mio", "floor-uring", "floor-inline"])
        .note(
            "A round trip: thread A wakes thread B (blocked in its wait), B wakes A (blocked in its own). \
             Both threads are pinned to one CPU (so a round trip includes two context switches, and no \
             cross-CPU wake-up whose latency depends on placement). CPU time is the process's (both threads).",
        )
}

/// Pins the calling thread (and so every thread it spawns later) to the last CPU: the round
/// trip then measures the wake-up path (syscalls, scheduler, library code), not where the
/// scheduler happens to place B's thread (cross-CPU wake-ups of an idle CPU on this VM vary
/// between about 5 and 60 us from one placement to the next). `WAKER_PIN=0` turns it off.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn pin() -> Option<usize> {
    if std::env::var("WAKER_PIN").is_ok_and(|v| v == "0") {
        return None;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpus - 1;
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE; `set` is a valid cpu_set_t.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    (r == 0).then_some(cpu)
}

/// Pinning uses Linux's `sched_setaffinity`; elsewhere the threads run where they are put.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn pin() -> Option<usize> {
    None
}

fn main() {
    let pinned = pin();
    if let Some(cpu) = pinned {
        eprintln!("waker: all threads pinned to CPU {cpu}");
    }
    if common::env_run("WAKER", contenders, &spec()) {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("waker");
    g.throughput(Throughput::Elements(TRIPS))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (id, mut run) in contenders() {
        g.bench_function(id, |b| b.iter(&mut run));
    }
    g.finish();
    c.final_summary();
}
