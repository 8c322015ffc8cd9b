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

/// Reads the one byte sent to the socket `fd` with `recv(2)`, into a 64-byte buffer; panics
/// unless exactly one byte came in.
///
/// `recv`, not `read`: it is what std's sockets read with, so what a mio user's
/// `mio::net::UnixStream::read` and the task layer's reads through `Async<UnixStream>`
/// make; and `read(2)` on a socket costs ~6 % more per event in fanin on this machine (its
/// VFS layers), which would make every contender that reads here slower than the task
/// layer for a reason that is not the loop's.
///
/// A 64-byte buffer, not a 1-byte one: a reader that does not know how much has arrived
/// asks for more than it expects, and takes a short read to mean the socket is drained
/// (what an edge-triggered mio loop must know before it waits again, and what fanin's task
/// contender does through `AsyncRead::read` with its own 64-byte buffer). It is also not
/// the same request to the kernel: a Unix stream `recv` that has copied fewer bytes than
/// asked looks at the receive queue once more before it returns, ~40-60 ns per call here,
/// so every contender asks for the same 64 bytes.
#[inline]
pub fn recv_byte(fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes for the whole call;
    // `fd` is open.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert_eq!(n, 1, "recv: {}", io::Error::last_os_error());
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
        /// Wait with the system call instruction inlined ([`RawEpoll::inline_syscall`]).
        inline: bool,
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
            Self {
                epfd,
                events,
                inline: false,
            }
        }

        /// Makes [`wait`](Self::wait) issue `epoll_wait` with the `syscall` instruction
        /// inlined into the caller (Linux on x86_64 and aarch64; elsewhere libc's as before):
        /// the floor written with no libc wrapper, whose `ret` after the system call costs
        /// ~46 ns on a CPU with AMD's SRSO "safe RET" mitigation (see BENCHMARKS.md).
        pub fn inline_syscall(mut self) -> Self {
            self.inline = true;
            self
        }

        /// `EPOLL_CTL_ADD` of `fd` with `flags` (e.g. `EPOLLIN | EPOLLET`) and `token`.
        #[inline]
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

        /// `EPOLL_CTL_DEL` of `fd`.
        #[inline]
        pub fn del(&self, fd: RawFd) {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: `ev` is a valid epoll_event for the call; `epfd` is open (invariant).
            let r =
                unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
            assert_eq!(r, 0, "epoll_ctl: {}", io::Error::last_os_error());
        }

        /// The epoll fd.
        pub fn fd(&self) -> RawFd {
            self.epfd.as_raw_fd()
        }

        /// One `epoll_wait(-1)` (retried on `EINTR`); the events it stored.
        #[inline]
        pub fn wait(&mut self) -> &[libc::epoll_event] {
            let max = libc::c_int::try_from(self.events.len()).unwrap_or(libc::c_int::MAX);
            loop {
                let (epfd, out) = (self.epfd.as_raw_fd(), self.events.as_mut_ptr());
                let n = if self.inline {
                    // SAFETY: as below.
                    unsafe { inline_epoll_wait(epfd, out, max) }
                } else {
                    // SAFETY: `events` has room for `max` entries; `epfd` is open (invariant).
                    unsafe { libc::epoll_wait(epfd, out, max, -1) as isize }
                };
                if n >= 0 {
                    return &self.events[..n.unsigned_abs()];
                }
                let e = if n == -1 && !self.inline {
                    io::Error::last_os_error()
                } else {
                    io::Error::from_raw_os_error(-n as i32)
                };
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "epoll_wait: {e}");
            }
        }
    }

    /// `epoll_wait(epfd, out, max, -1)` with the system call instruction inlined; the raw
    /// result (`-errno` on failure).
    ///
    /// # Safety
    ///
    /// `out` has room for `max` events.
    #[inline(always)]
    unsafe fn inline_epoll_wait(
        epfd: libc::c_int,
        out: *mut libc::epoll_event,
        max: libc::c_int,
    ) -> isize {
        #[cfg(target_arch = "x86_64")]
        {
            let ret: isize;
            // SAFETY: x86_64 Linux convention (rax number, rdi/rsi/rdx/r10 arguments; rcx and
            // r11 clobbered); `out` has room for `max` events (the caller's contract).
            unsafe {
                std::arch::asm!("syscall",
                    inlateout("rax") libc::SYS_epoll_wait as isize => ret,
                    in("rdi") epfd as isize, in("rsi") out, in("rdx") max as isize,
                    in("r10") -1isize, lateout("rcx") _, lateout("r11") _, options(nostack));
            }
            ret
        }
        #[cfg(target_arch = "aarch64")]
        {
            let ret: isize;
            // SAFETY: aarch64 Linux convention (x8 number, x0-x5 arguments, x0 result);
            // epoll_pwait with a null sigmask; `out` has room for `max` events.
            unsafe {
                std::arch::asm!("svc 0", in("x8") libc::SYS_epoll_pwait,
                    inlateout("x0") epfd as isize => ret, in("x1") out, in("x2") max as isize,
                    in("x3") -1isize, in("x4") 0usize, in("x5") 0usize, options(nostack));
            }
            ret
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            // SAFETY: `out` has room for `max` events.
            let n = unsafe { libc::epoll_wait(epfd, out, max, -1) };
            if n < 0 {
                -(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINTR) as isize)
            } else {
                n as isize
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
#[allow(unused_imports)]
pub use raw_epoll::RawEpoll;

/// Calls `$f::<P>(args...)` once for every ioloop-sys backend `P` this OS has: the one list
/// of backends the benches share.
#[allow(unused_macros)]
macro_rules! every_sys_backend {
    ($f:ident($($arg:expr),*)) => {{
        #[cfg(ioloop_has_epoll)]
        $f::<ioloop_sys::Epoll>($($arg),*);
        #[cfg(ioloop_has_uring)]
        $f::<ioloop_sys::Uring>($($arg),*);
        #[cfg(ioloop_has_kqueue)]
        $f::<ioloop_sys::Kqueue>($($arg),*);
        $f::<ioloop_sys::Poll>($($arg),*);
        $f::<ioloop_sys::Select>($($arg),*);
    }};
}
#[allow(unused_imports)]
pub(crate) use every_sys_backend;

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
/// every contender runs one iteration (in a random order per round), timed by wall clock
/// and by thread CPU time. Prints, per contender, the median ns per element (`elems` per
/// iteration) and the median of the *paired* per-round CPU-time ratios against `floor-level`,
/// `floor-edge`, `mio` and `floor-edge-inline` (each round's runs are back to back, so a load
/// change outside the process hits both sides of a ratio alike).
///
/// With `IOLOOP_BENCH_MD=<file>` (and `IOLOOP_BENCH_TSV=<file>`) it also appends the results
/// to that file as a markdown table (as tab-separated lines), see [`report`]; the title is the
/// bench's name.
pub fn interleaved(list: Vec<Contender>, rounds: usize, elems: u64) {
    let spec = Spec::new(&bench_name(), "el", elems).bases([
        "floor-level",
        "floor-edge",
        "mio",
        "floor-edge-inline",
    ]);
    let rows = measure(list, rounds, &spec);
    report(&spec, &rows, rounds);
}

// ---- the generalised interleaved runner ------------------------------------------------------

/// Which clock the paired ratios of a [`Spec`] compare.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Clock {
    /// The measuring thread's CPU time (single-threaded workloads).
    Thread,
    /// The whole process's CPU time (workloads with helper threads, e.g. cross-thread wake-ups).
    Process,
}

/// Maps a contender id to the id of its baseline in a ratio column.
pub type BaseOf = Box<dyn Fn(&str) -> Option<String>>;

/// One column of paired ratios: its label and, per contender id, the id of the contender it
/// is divided by (`None`: the column stays empty for that row).
pub struct Base {
    /// Column header, e.g. `"mio"`.
    pub label: String,
    /// Maps a contender id to the id of its baseline in this column.
    pub of: BaseOf,
}

impl Base {
    /// Every contender against the one contender `id`.
    pub fn fixed(id: &str) -> Self {
        let id = id.to_owned();
        Self {
            label: id.clone(),
            of: Box::new(move |_| Some(id.clone())),
        }
    }

    /// Every contender against the contender `of(id)` names.
    pub fn map(label: &str, of: impl Fn(&str) -> Option<String> + 'static) -> Self {
        Self {
            label: label.to_owned(),
            of: Box::new(of),
        }
    }
}

/// What an interleaved run measures and how [`report`] prints it.
pub struct Spec {
    /// Table title (the workload, e.g. `"fanin"`).
    pub title: String,
    /// What one element is (`"hop"`, `"event"`, `"op"`, `"timer"`, `"round trip"`).
    pub unit: String,
    /// Elements per iteration.
    pub elems: u64,
    /// The clock of the CPU column and of the ratios.
    pub clock: Clock,
    /// Ratio columns.
    pub bases: Vec<Base>,
    /// Lines printed under the table (n/a cases, caveats).
    pub notes: Vec<String>,
}

impl Spec {
    /// A spec with thread CPU time and no ratio columns.
    pub fn new(title: &str, unit: &str, elems: u64) -> Self {
        Self {
            title: title.to_owned(),
            unit: unit.to_owned(),
            elems,
            clock: Clock::Thread,
            bases: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds one fixed-baseline column per id.
    pub fn bases<'a>(mut self, ids: impl IntoIterator<Item = &'a str>) -> Self {
        self.bases.extend(ids.into_iter().map(Base::fixed));
        self
    }

    /// Adds a column.
    pub fn base(mut self, b: Base) -> Self {
        self.bases.push(b);
        self
    }

    /// Uses `clock` for the CPU column and the ratios.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Adds a note line.
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.notes.push(n.into());
        self
    }
}

/// The measured medians of one contender.
#[derive(Clone, Debug)]
pub struct Row {
    /// Contender id.
    pub id: String,
    /// Median wall-clock ns per element.
    pub wall: f64,
    /// Median CPU ns per element (the [`Spec`]'s clock).
    pub cpu: f64,
    /// Per [`Spec::bases`] column: the median of the paired per-round CPU ratios.
    pub ratios: Vec<Option<f64>>,
    /// Per column, a 95 % confidence interval of that median ([`median_ci`]).
    pub ci: Vec<Option<(f64, f64)>>,
}

/// This process's CPU time (all threads, user + system), `CLOCK_PROCESS_CPUTIME_ID`.
pub fn process_cpu_now() -> std::time::Duration {
    let mut ts = std::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `ts` is a writable timespec; the clock id is valid on Linux and the BSDs.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, ts.as_mut_ptr()) };
    assert_eq!(r, 0, "clock_gettime: {}", io::Error::last_os_error());
    // SAFETY: clock_gettime returned 0, so it filled `ts`.
    let ts = unsafe { ts.assume_init() };
    std::time::Duration::new(ts.tv_sec.unsigned_abs(), ts.tv_nsec.unsigned_abs() as u32)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A distribution-free 95 % confidence interval of the median of `v`: the order statistics
/// of ranks `n/2 -+ 0.98 sqrt(n)` (the binomial's normal approximation, which holds for the
/// tens of rounds and more that the runners take). It says how well this run pins the
/// median down; a later run on a machine in another state may still land outside it.
fn median_ci(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let half = 0.98 * n.sqrt();
    let lo = (n / 2.0 - half).floor().max(0.0) as usize;
    let hi = ((n / 2.0 + half).ceil() as usize).min(v.len() - 1);
    (v[lo], v[hi])
}

/// The per-round samples of an interleaved measurement ([`sample`]): round `r` of every
/// contender was measured in the same round, so ratios can be paired by index.
pub struct Samples {
    ids: Vec<String>,
    wall: Vec<Vec<f64>>,
    cpu: Vec<Vec<f64>>,
}

impl Samples {
    /// The contenders' ids, in the order they were built.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Appends the rounds of `more`, a later measurement of the same contenders (for
    /// example on freshly made fds).
    pub fn extend(&mut self, more: Samples) {
        assert_eq!(self.ids, more.ids, "the same contenders in the same order");
        for (a, b) in self.wall.iter_mut().zip(more.wall) {
            a.extend(b);
        }
        for (a, b) in self.cpu.iter_mut().zip(more.cpu) {
            a.extend(b);
        }
    }

    /// Medians and paired ratios.
    pub fn rows(&self, spec: &Spec) -> Vec<Row> {
        let pos = |id: &str| self.ids.iter().position(|x| x == id);
        (0..self.ids.len())
            .map(|i| {
                let paired: Vec<Option<Vec<f64>>> = spec
                    .bases
                    .iter()
                    .map(|b| {
                        let j = pos(&(b.of)(&self.ids[i])?)?;
                        Some(
                            self.cpu[i]
                                .iter()
                                .zip(&self.cpu[j])
                                .map(|(c, f)| c / f)
                                .collect(),
                        )
                    })
                    .collect();
                Row {
                    id: self.ids[i].clone(),
                    wall: median(&self.wall[i]),
                    cpu: median(&self.cpu[i]),
                    ratios: paired.iter().map(|r| r.as_deref().map(median)).collect(),
                    ci: paired.iter().map(|r| r.as_deref().map(median_ci)).collect(),
                }
            })
            .collect()
    }
}

/// The interleaved measurement behind [`interleaved`]: one warm-up iteration per contender,
/// then `rounds` rounds of one iteration each (a random order per round); medians and paired
/// ratios.
/// Empty if `rounds == 0`.
pub fn measure(list: Vec<Contender>, rounds: usize, spec: &Spec) -> Vec<Row> {
    if rounds == 0 {
        return Vec::new();
    }
    sample(list, rounds, spec).rows(spec)
}

/// [`measure`]'s rounds, as samples (one warm-up iteration per contender first).
pub fn sample(mut list: Vec<Contender>, rounds: usize, spec: &Spec) -> Samples {
    let n = list.len();
    for (_, run) in list.iter_mut() {
        run();
    }
    let clock = match spec.clock {
        Clock::Thread => thread_cpu_now,
        Clock::Process => process_cpu_now,
    };
    let elems = spec.elems as f64;
    let mut wall = vec![Vec::with_capacity(rounds); n];
    let mut cpu = vec![Vec::with_capacity(rounds); n];
    // Each round runs the contenders in a fresh random order, so no contender always follows
    // the same one: what a run leaves behind in the caches and the kernel (a poll(2) of
    // 1 000 fds, an io_uring's task work) falls on every other contender alike. (A rotating
    // start keeps the cyclic order: each contender always ran right after the same one.)
    // Seeded: a rerun repeats the orders; each call continues the sequence.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut rng = fastrand::Rng::with_seed(0x10_100b ^ call.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..rounds {
        rng.shuffle(&mut order);
        for &i in &order {
            let (w0, c0) = (std::time::Instant::now(), clock());
            (list[i].1)();
            let (c1, w1) = (clock(), std::time::Instant::now());
            cpu[i].push((c1 - c0).as_nanos() as f64 / elems);
            wall[i].push((w1 - w0).as_nanos() as f64 / elems);
        }
    }
    Samples {
        ids: list.into_iter().map(|(id, _)| id).collect(),
        wall,
        cpu,
    }
}

/// Prints `rows` as a text table and, if `IOLOOP_BENCH_MD=<file>` is set, appends them to that
/// file as a markdown table (title, then one row per contender: CPU and wall ns per element,
/// elements per second from the CPU median, and the ratio columns), then the spec's notes.
/// With `IOLOOP_BENCH_TSV=<file>` it appends one line per row: title, id, CPU ns, wall ns,
/// then `label=ratio`, `label~lo=..` and `label~hi=..` (the median's 95 % interval) per
/// ratio column (what `benches/run.sh` checks the goals with).
pub fn report(spec: &Spec, rows: &[Row], rounds: usize) {
    if rows.is_empty() {
        return;
    }
    let clock = match spec.clock {
        Clock::Thread => "cpu",
        Clock::Process => "proc cpu",
    };
    let unit = &spec.unit;
    println!("== {} ==", spec.title);
    print!(
        "{:<30}{:>12}{:>16}",
        "contender",
        "wall ns/el",
        format!("{clock} ns/el")
    );
    for b in &spec.bases {
        print!("{:>18}", format!("x {}", b.label));
    }
    println!("   ({rounds} rounds, 1 el = 1 {unit})");
    for r in rows {
        print!("{:<30}{:>12.1}{:>16.1}", r.id, r.wall, r.cpu);
        for x in &r.ratios {
            match x {
                Some(x) => print!("{x:>18.3}"),
                None => print!("{:>18}", "-"),
            }
        }
        println!();
    }
    for n in &spec.notes {
        println!("note: {n}");
    }
    if let Ok(path) = std::env::var("IOLOOP_BENCH_TSV") {
        let mut tsv = String::new();
        for r in rows {
            tsv += &format!("{}\t{}\t{}\t{}", spec.title, r.id, r.cpu, r.wall);
            for ((b, x), ci) in spec.bases.iter().zip(&r.ratios).zip(&r.ci) {
                if let (Some(x), Some((lo, hi))) = (x, ci) {
                    tsv += &format!("\t{l}={x}\t{l}~lo={lo}\t{l}~hi={hi}", l = b.label);
                }
            }
            tsv += "\n";
        }
        append(&path, &tsv);
    }
    let Ok(path) = std::env::var("IOLOOP_BENCH_MD") else {
        return;
    };
    let mut md = format!(
        "### {}\n\n{rounds} interleaved rounds, {} {unit}s per round; medians; ratios are medians of paired per-round {clock}-time ratios (lower = faster).\n\n",
        spec.title, spec.elems
    );
    md += &format!("| contender | {clock} ns/{unit} | wall ns/{unit} | {unit}s/s ({clock}) |");
    for b in &spec.bases {
        md += &format!(" x {} |", b.label);
    }
    md += "\n|---|---:|---:|---:|";
    md += &"---:|".repeat(spec.bases.len());
    md += "\n";
    for r in rows {
        md += &format!(
            "| {} | {:.1} | {:.1} | {} |",
            r.id,
            r.cpu,
            r.wall,
            per_second(r.cpu)
        );
        for x in &r.ratios {
            match x {
                Some(x) => md += &format!(" {x:.3} |"),
                None => md += " |",
            }
        }
        md += "\n";
    }
    for n in &spec.notes {
        md += &format!("\n{n}\n");
    }
    md += "\n";
    append(&path, &md);
}

/// Appends `text` to the file at `path` (created if missing).
fn append(path: &str, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// `1e9 / ns`, printed with an SI suffix (`12.3 M`).
fn per_second(ns: f64) -> String {
    let v = 1e9 / ns;
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// The bench's name: the executable's file stem without cargo's `-<hash>` suffix.
pub fn bench_name() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let stem = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
        _ => stem,
    }
}

/// Runs the interleaved runner if env var `<BENCH>_ROUNDS` is set (with `<BENCH>_FILTER`, see
/// [`filtered`]): returns `true` if it ran.
pub fn env_run(bench: &str, list: impl FnOnce() -> Vec<Contender>, spec: &Spec) -> bool {
    let Some(rounds) = env_rounds(&format!("{bench}_ROUNDS")) else {
        return false;
    };
    let list = filtered(bench, list());
    let rows = measure(list, rounds, spec);
    report(spec, &rows, rounds);
    true
}

/// `list` without the contenders whose id contains none of the comma-separated substrings
/// of `$<BENCH>_FILTER` (if set), e.g. `PINGPONG_FILTER=floor,mio,epoll-edge`; `=id` keeps
/// that id only (`WAKER_FILTER==floor`: not `floor-uring`).
pub fn filtered(bench: &str, list: Vec<Contender>) -> Vec<Contender> {
    list.into_iter()
        .filter(|(id, _)| wanted(bench, id))
        .collect()
}

/// Whether `$<BENCH>_FILTER` (see [`filtered`]) keeps contender `id`; true if it is unset.
pub fn wanted(bench: &str, id: &str) -> bool {
    let filter = std::env::var(format!("{bench}_FILTER")).unwrap_or_default();
    filter.split(',').any(|f| match f.strip_prefix('=') {
        Some(exact) => id == exact,
        None => id.contains(f),
    })
}

/// Raises the soft `RLIMIT_NOFILE` to at least `n` (capped at the hard limit); returns the
/// new soft limit.
pub fn raise_nofile(n: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a writable rlimit for the call.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    assert_eq!(r, 0, "getrlimit: {}", io::Error::last_os_error());
    #[allow(clippy::unnecessary_cast)]
    let want = (n as libc::rlim_t).min(rl.rlim_max);
    if rl.rlim_cur < want {
        rl.rlim_cur = want;
        // SAFETY: `rl` is a valid rlimit for the call.
        let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
        assert_eq!(r, 0, "setrlimit: {}", io::Error::last_os_error());
    }
    // rlim_t is u64 on Linux, i64 on some BSDs.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let cur = rl.rlim_cur as u64;
    cur
}

/// The id of a contender in `mode`: `<prefix>-<backend>-<mode>`, e.g. `ioloop-sys-epoll-level`.
pub fn mode_id(prefix: &str, backend: &str, mode: ioloop_sys::Mode) -> String {
    format!("{prefix}-{backend}-{}", format!("{mode:?}").to_lowercase())
}

// ---- waiters shared by the single-threaded readiness benches ---------------------------------

/// mio 1.x: `Poll` + a reused `Events` (mio registers edge-triggered).
pub struct MioWaiter {
    /// The poll instance.
    pub poll: mio::Poll,
    events: mio::Events,
}

impl MioWaiter {
    /// A poll with room for `capacity` events per wait, watching each `(fd, token)` for reading.
    pub fn new(fds: impl IntoIterator<Item = (RawFd, u64)>, capacity: usize) -> Self {
        let poll = mio::Poll::new().expect("mio Poll");
        for (fd, token) in fds {
            poll.registry()
                .register(
                    &mut mio::unix::SourceFd(&fd),
                    mio::Token(token as usize),
                    mio::Interest::READABLE,
                )
                .expect("mio register");
        }
        Self {
            poll,
            events: mio::Events::with_capacity(capacity),
        }
    }
}

impl Waiter for MioWaiter {
    #[inline]
    fn wait_readable(&mut self, mut on_readable: impl FnMut(u64)) {
        self.poll.poll(&mut self.events, None).expect("mio poll");
        for ev in self.events.iter() {
            if ev.is_readable() {
                on_readable(ev.token().0 as u64);
            }
        }
    }
}

/// polling 3.x in `PollMode::Level` (its default, oneshot, would add a re-arm per event).
pub struct PollingWaiter {
    poller: polling::Poller,
    events: polling::Events,
}

impl PollingWaiter {
    /// A poller with room for `capacity` events per wait, watching each `(fd, token)` for
    /// reading, level-triggered. The fds must outlive the waiter.
    pub fn new(fds: impl IntoIterator<Item = (RawFd, u64)>, capacity: usize) -> Self {
        let poller = polling::Poller::new().expect("polling Poller");
        for (fd, token) in fds {
            // SAFETY: the benches drop the waiter before the fds it watches, as
            // `add_with_mode` requires.
            unsafe {
                poller
                    .add_with_mode(
                        fd,
                        polling::Event::readable(token as usize),
                        polling::PollMode::Level,
                    )
                    .expect("polling add");
            }
        }
        Self {
            poller,
            events: polling::Events::with_capacity(
                std::num::NonZeroUsize::new(capacity.max(1)).expect("capacity > 0"),
            ),
        }
    }
}

impl Waiter for PollingWaiter {
    #[inline]
    fn wait_readable(&mut self, mut on_readable: impl FnMut(u64)) {
        // polling appends to `events`; clear it first.
        self.events.clear();
        self.poller
            .wait(&mut self.events, None)
            .expect("polling wait");
        for ev in self.events.iter() {
            if ev.readable {
                on_readable(ev.key as u64);
            }
        }
    }
}

/// An ioloop-sys poller and its reused `Events`.
pub struct SysWaiter<P> {
    /// The poller.
    pub poller: P,
    events: ioloop_sys::Events,
}

impl<P: ioloop_sys::Poller> SysWaiter<P> {
    /// `poller` watching each `(fd, token)` for reading in `mode`, with room for `capacity`
    /// events per wait.
    pub fn new(
        poller: P,
        fds: impl IntoIterator<Item = (RawFd, u64)>,
        mode: ioloop_sys::Mode,
        capacity: usize,
    ) -> Self {
        for (fd, token) in fds {
            poller
                .register(fd, token, ioloop_sys::Interest::READABLE, mode)
                .unwrap_or_else(|e| panic!("{} register fd {fd}: {e}", P::NAME));
        }
        Self {
            poller,
            events: ioloop_sys::Events::with_capacity(capacity),
        }
    }
}

impl<P: ioloop_sys::Poller> Waiter for SysWaiter<P> {
    #[inline]
    fn wait_readable(&mut self, mut on_readable: impl FnMut(u64)) {
        self.poller.wait(&mut self.events, None).expect("wait");
        for ev in self.events.iter() {
            if ev.is_readable() {
                on_readable(ev.token());
            }
        }
    }
}
