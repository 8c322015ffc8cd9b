//! Helpers shared by the benches: socketpair setup, one-byte I/O and the raw-libc epoll
//! "floor" that every other contender is measured against.
//!
//! The floor is the least a readiness loop can do on Linux: one `epoll_wait` into a reused
//! array, no locks, no clock reads, no flag conversion. Its `unsafe` blocks are bench code, not
//! library code (the "no unsafe outside sys/" rule is for the library); each still carries a
//! `// SAFETY:` line.
#![allow(dead_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// A connected, non-blocking `AF_UNIX` `SOCK_STREAM` pair: end 0 (A) and end 1 (B).
pub struct Pair {
    ends: [UnixStream; 2],
}

impl Pair {
    /// A fresh pair, both ends non-blocking.
    pub fn new() -> Self {
        let (a, b) = UnixStream::pair().expect("socketpair");
        a.set_nonblocking(true).expect("O_NONBLOCK");
        b.set_nonblocking(true).expect("O_NONBLOCK");
        Self { ends: [a, b] }
    }

    /// The fd of end `i` (0 = A, 1 = B); the token of an end is its index.
    #[inline]
    pub fn fd(&self, i: u64) -> RawFd {
        self.ends[usize::from(i != 0)].as_raw_fd()
    }
}

/// Writes one byte to `fd`; panics unless exactly one byte went out.
#[inline]
pub fn send_byte(fd: RawFd) {
    let b = 0x5au8;
    // SAFETY: `b` is a live 1-byte buffer for the whole call; `fd` is an open socket end.
    let n = unsafe { libc::write(fd, std::ptr::addr_of!(b).cast(), 1) };
    assert_eq!(n, 1, "write: {}", io::Error::last_os_error());
}

/// Reads one byte from `fd`; panics unless exactly one byte came in.
#[inline]
pub fn recv_byte(fd: RawFd) {
    let mut b = 0u8;
    // SAFETY: `b` is a live, writable 1-byte buffer for the whole call; `fd` is open.
    let n = unsafe { libc::read(fd, std::ptr::addr_of_mut!(b).cast(), 1) };
    assert_eq!(n, 1, "read: {}", io::Error::last_os_error());
}

/// One readiness loop under test: waits once, then calls `on_readable(token)` for each
/// readable event the wait reported.
pub trait Waiter {
    /// One wait (no time limit) and the dispatch of what it reported.
    fn wait_readable(&mut self, on_readable: impl FnMut(u64));
}

/// One ping-pong iteration of `hops` hops on `pair`: A writes a byte; then each hop is one
/// wait, one read at the end that became readable and one write back from that end (the last
/// hop only reads, so the pair is empty again afterwards). Both ends must be registered with
/// `w` for reading, with tokens 0 (A) and 1 (B).
#[inline]
pub fn pingpong<W: Waiter>(w: &mut W, pair: &Pair, hops: u64) {
    send_byte(pair.fd(0));
    let mut left = hops;
    while left > 0 {
        w.wait_readable(|token| {
            let fd = pair.fd(token);
            recv_byte(fd);
            left -= 1;
            if left > 0 {
                send_byte(fd);
            }
        });
    }
}

/// The raw-libc epoll floor (Linux/Android only; elsewhere the comparison is mio, polling
/// and ioloop-sys on the OS's own poller).
#[cfg(ioloop_has_epoll)]
mod raw_epoll {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// The raw-libc epoll floor: `epoll_wait` with no timeout into an events array reused by
    /// every wait.
    pub struct RawEpoll {
        /// Invariant: an epoll instance this value owns.
        epfd: OwnedFd,
        /// The kernel's output array; `len()` is the `maxevents` passed to `epoll_wait`.
        events: Vec<libc::epoll_event>,
    }

    impl RawEpoll {
        /// A new epoll instance with room for `capacity` events per wait.
        pub fn new(capacity: usize) -> Self {
            // SAFETY: epoll_create1 takes no pointers.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            assert!(fd >= 0, "epoll_create1: {}", io::Error::last_os_error());
            // SAFETY: `fd` was just created and nothing else owns it.
            let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
            let events = vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)];
            Self { epfd, events }
        }

        /// `EPOLL_CTL_ADD` of `fd` with `flags` (e.g. `EPOLLIN | EPOLLET`) and `token`.
        pub fn add(&self, fd: RawFd, token: u64, flags: libc::c_int) {
            let mut ev = libc::epoll_event {
                events: flags as u32,
                u64: token,
            };
            // SAFETY: `ev` is a valid epoll_event for the call; `epfd` is open (invariant).
            let r =
                unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
            assert_eq!(r, 0, "epoll_ctl: {}", io::Error::last_os_error());
        }

        /// One `epoll_wait(-1)` (retried on `EINTR`); the events it stored.
        #[inline]
        pub fn wait(&mut self) -> &[libc::epoll_event] {
            let max = libc::c_int::try_from(self.events.len()).unwrap_or(libc::c_int::MAX);
            loop {
                // SAFETY: `events` has room for `max` entries; `epfd` is open (invariant).
                let n = unsafe {
                    libc::epoll_wait(self.epfd.as_raw_fd(), self.events.as_mut_ptr(), max, -1)
                };
                if n >= 0 {
                    return &self.events[..n.unsigned_abs() as usize];
                }
                let e = io::Error::last_os_error();
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "epoll_wait: {e}");
            }
        }
    }

    impl Waiter for RawEpoll {
        #[inline]
        fn wait_readable(&mut self, mut on_readable: impl FnMut(u64)) {
            for ev in self.wait() {
                if ev.events & libc::EPOLLIN as u32 != 0 {
                    on_readable(ev.u64);
                }
            }
        }
    }
}
#[cfg(ioloop_has_epoll)]
pub use raw_epoll::RawEpoll;

/// The events capacity every contender uses.
pub const CAPACITY: usize = 64;

/// A benchmark contender: its id and one iteration of its workload (boxed so one list holds
/// every type; the one indirect call per iteration is noise next to an iteration's work).
pub type Contender = (String, Box<dyn FnMut()>);

/// Whether `IOLOOP_BENCH_CLOCK=cpu` asks criterion to measure [`ThreadCpu`].
pub fn cpu_clock() -> bool {
    std::env::var("IOLOOP_BENCH_CLOCK").is_ok_and(|v| v == "cpu")
}

/// The round count in env var `name`, if set (the interleaved runner instead of criterion).
pub fn env_rounds(name: &str) -> Option<usize> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a count")),
    )
}

/// This thread's CPU time (user + system), `CLOCK_THREAD_CPUTIME_ID`.
pub fn thread_cpu_now() -> std::time::Duration {
    let mut ts = std::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `ts` is a writable timespec; the clock id is valid on Linux and the BSDs.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, ts.as_mut_ptr()) };
    assert_eq!(r, 0, "clock_gettime: {}", io::Error::last_os_error());
    // SAFETY: clock_gettime returned 0, so it filled `ts`.
    let ts = unsafe { ts.assume_init() };
    std::time::Duration::new(ts.tv_sec.unsigned_abs(), ts.tv_nsec.unsigned_abs() as u32)
}

/// A criterion [`Measurement`](criterion::measurement::Measurement): the CPU time (user +
/// system) of the benchmarking thread. Time spent descheduled while other processes run is
/// not counted, so single-threaded benches stay comparable on a loaded machine.
pub struct ThreadCpu;

impl criterion::measurement::Measurement for ThreadCpu {
    type Intermediate = std::time::Duration;
    type Value = std::time::Duration;

    fn start(&self) -> Self::Intermediate {
        thread_cpu_now()
    }
    fn end(&self, start: Self::Intermediate) -> Self::Value {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, v1: &Self::Value, v2: &Self::Value) -> Self::Value {
        *v1 + *v2
    }
    fn zero(&self) -> Self::Value {
        std::time::Duration::ZERO
    }
    fn to_f64(&self, value: &Self::Value) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        static WALL: criterion::measurement::WallTime = criterion::measurement::WallTime;
        criterion::measurement::Measurement::formatter(&WALL)
    }
}

/// Runs `list` without criterion: one warm-up iteration each, then `rounds` rounds in which
/// every contender runs one iteration (the starting contender rotates), timed by wall clock
/// and by thread CPU time. Prints, per contender, the median ns per element (`elems` per
/// iteration) and the median of the *paired* per-round CPU-time ratios against `floor-level`,
/// `floor-edge` and `mio` (each round's runs are back to back, so a load change outside the
/// process hits both sides of a ratio alike).
pub fn interleaved(mut list: Vec<Contender>, rounds: usize, elems: u64) {
    let n = list.len();
    for (_, run) in list.iter_mut() {
        run();
    }
    let mut wall = vec![Vec::with_capacity(rounds); n];
    let mut cpu = vec![Vec::with_capacity(rounds); n];
    for r in 0..rounds {
        for k in 0..n {
            let i = (r + k) % n;
            let (w0, c0) = (std::time::Instant::now(), thread_cpu_now());
            (list[i].1)();
            let (c1, w1) = (thread_cpu_now(), std::time::Instant::now());
            cpu[i].push((c1 - c0).as_nanos() as f64 / elems as f64);
            wall[i].push((w1 - w0).as_nanos() as f64 / elems as f64);
        }
    }
    if rounds == 0 {
        return;
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let bases: Vec<(usize, &str)> = ["floor-level", "floor-edge", "mio"]
        .iter()
        .filter_map(|b| list.iter().position(|(id, _)| id == b).map(|i| (i, *b)))
        .collect();
    print!("{:<28}{:>12}{:>12}", "contender", "wall ns/el", "cpu ns/el");
    for (_, b) in &bases {
        print!("{:>18}", format!("cpu x {b}"));
    }
    println!("   ({rounds} rounds)");
    for i in 0..n {
        print!(
            "{:<28}{:>12.1}{:>12.1}",
            list[i].0,
            median(&wall[i]),
            median(&cpu[i])
        );
        for &(b, _) in &bases {
            let ratios: Vec<f64> = cpu[i].iter().zip(&cpu[b]).map(|(c, f)| c / f).collect();
            print!("{:>18.3}", median(&ratios));
        }
        println!();
    }
}
