//! select(2), for every Unix; the last resort.
//!
//! The platform notes are on [`Select`].

use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Duration;

use crate::common::{self, Round};
use crate::registry::{self, Registry};
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use crate::syscall::cvt;
use crate::{Events, Interest, Mode, Notifier, Poller, Ready};

/// The select backend: [`Poller`] over `select(2)`, for every Unix; the last resort.
///
/// # Platform notes
///
/// * `FD_SETSIZE` (1024 on most systems, 256 on NetBSD, 65 536 on 64-bit illumos; the
///   `libc` crate's `FD_SETSIZE` for the target): an `fd_set` is a fixed bitmap, and
///   setting a bit past it is memory corruption in C. Registering an fd `>= FD_SETSIZE` fails
///   with `InvalidInput`, and [`Select::new`](Poller::new) fails if its own notifier fds land
///   that high (a process with many fds open).
/// * O(n) per wait, like poll: the sets are rebuilt from the registrations every wait (in
///   buffers reused across waits, so no allocation).
/// * Timeouts: `pselect(2)` takes a `timespec` on Linux, Android, FreeBSD, DragonFly, NetBSD
///   and OpenBSD; elsewhere `select(2)` takes a `timeval`, rounded *up* to whole microseconds
///   so a wait never ends early.
/// * [`Interest::PRIORITY`] is the exception set (Linux puts `POLLPRI` there), passed only
///   while some registration asks for it.
/// * No [`Ready::HUP`]: select has no such set; a closed peer shows as [`Ready::READABLE`]
///   with `read` returning 0. Registrations with an empty interest are in no set and report
///   nothing.
/// * An fd closed without [`deregister`](Poller::deregister) makes select fail with `EBADF`;
///   the backend then finds the closed fds (`fcntl(F_GETFD)` on each) and reports them as
///   [`Ready::ERROR`] instead of failing the wait (if another thread has reopened the number
///   by then, nothing is closed any more and the wait goes on). Only fds in some set count:
///   a registration with an empty interest is never reported, closed or not.
/// * [`Mode::Oneshot`] is emulated (the fd is left out of the sets after a report, until
///   [`modify`](Poller::modify)); there is no [`Mode::Edge`].
/// * A registration made from another thread while a wait is blocked interrupts the system call
///   through an internal notifier; the wait rebuilds its sets and goes on, within the same
///   deadline.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
/// use std::time::Duration;
/// use ioloop_sys::{Events, Interest, Mode, Poller, Select};
///
/// let poller = Select::new()?;
/// let (a, mut b) = UnixStream::pair()?;
/// poller.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)?;
/// b.write_all(b"x")?;
/// let mut events = Events::with_capacity(8);
/// assert_eq!(poller.wait(&mut events, Some(Duration::from_secs(5)))?, 1);
/// // An fd select cannot hold is refused, never written past the set.
/// let too_high = i32::try_from(libc::FD_SETSIZE).unwrap();
/// let err = poller.register(too_high, 2, Interest::READABLE, Mode::Level).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
/// # std::io::Result::Ok(())
/// ```
#[derive(Debug)]
pub struct Select {
    /// The registrations and the notifiers. Invariant: every fd in it (notifier fds included)
    /// is below `FD_SETSIZE`.
    reg: Registry,
    /// The sets and the slot list, reused by every wait (locked by the one waiter for the
    /// whole wait).
    buf: Mutex<SelectBuf>,
}

struct SelectBuf {
    sets: FdSets,
    /// The fds of this round, in the order `begin_round` gave them.
    slots: Vec<Slot>,
    /// Where reporting starts (see `InRound::finish`).
    cursor: usize,
}

/// The sets select takes, in its argument order (read, write, exception), with the
/// interest that puts an fd in each and what each reports.
const KINDS: [(Interest, Ready); 3] = [
    (Interest::READABLE, Ready::READABLE),
    (Interest::WRITABLE, Ready::WRITABLE),
    (Interest::PRIORITY, Ready::PRIORITY),
];

/// The read, write and exception ([`Interest::PRIORITY`]) sets of a round, as [`KINDS`]. A
/// set no slot of the round asks for is passed to select as a null pointer (the kernel then
/// copies and scans one set less) and left as it was: `used` says which sets hold this
/// round's fds.
struct FdSets {
    sets: [libc::fd_set; 3],
    used: Interest,
}

impl FdSets {
    fn new() -> Self {
        Self {
            sets: [empty_set(), empty_set(), empty_set()],
            used: Interest::empty(),
        }
    }

    /// Fills the sets with the slots' fds (bad ones left out), emptying each set before its
    /// first fd; returns `nfds`.
    fn fill(&mut self, slots: &[Slot]) -> io::Result<libc::c_int> {
        self.used = Interest::empty();
        let mut nfds = 0;
        for s in slots.iter().filter(|s| !s.bad && !s.interest.is_empty()) {
            for (set, (which, _)) in self.sets.iter_mut().zip(KINDS) {
                if s.interest.contains(which) {
                    if !self.used.contains(which) {
                        fd_zero(set);
                        self.used |= which;
                    }
                    fd_set(set, s.fd)?;
                }
            }
            nfds = nfds.max(s.fd + 1);
        }
        Ok(nfds)
    }

    /// The sets as select's arguments: null for a set not in use.
    fn ptrs(&mut self) -> [*mut libc::fd_set; 3] {
        let mut ptrs = [std::ptr::null_mut(); 3];
        for ((ptr, set), (which, _)) in ptrs.iter_mut().zip(&mut self.sets).zip(KINDS) {
            if self.used.contains(which) {
                *ptr = set;
            }
        }
        ptrs
    }

    /// What select reported for `fd`: the sets in use that it left `fd` in.
    fn ready(&self, fd: RawFd) -> Ready {
        let mut r = Ready::empty();
        for (set, (which, ready)) in self.sets.iter().zip(KINDS) {
            if self.used.contains(which) && fd_isset(set, fd) {
                r |= ready;
            }
        }
        r
    }
}

impl std::fmt::Debug for SelectBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectBuf")
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// One fd of a round.
#[derive(Debug, Clone, Copy)]
struct Slot {
    fd: RawFd,
    tag: u64,
    interest: Interest,
    /// Found closed after `EBADF`: left out of the sets, reported as [`Ready::ERROR`].
    bad: bool,
}

impl Poller for Select {
    const NAME: &'static str = "select";

    fn new() -> io::Result<Self> {
        let reg = Registry::new()?;
        let fd = reg.wake_fd();
        check_settable(fd).map_err(|_| {
            io::Error::new(
                io::ErrorKind::Other,
                format!(
                    "select cannot watch its own notifier: fd {fd} is >= FD_SETSIZE ({}); \
                     too many fds are open for the select backend",
                    libc::FD_SETSIZE
                ),
            )
        })?;
        Ok(Self {
            reg,
            buf: Mutex::new(SelectBuf {
                sets: FdSets::new(),
                slots: Vec::new(),
                cursor: 0,
            }),
        })
    }

    fn supports(&self, mode: Mode) -> bool {
        mode != Mode::Edge
    }

    fn priority_exact(&self) -> bool {
        true
    }

    fn modify_deferred(&self) -> bool {
        true
    }

    fn register(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        common::check_fd(fd)?;
        check_settable(fd)?;
        self.reg
            .register(fd, token, interest, mode, self.supports(mode))
    }

    fn modify(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        self.reg
            .modify(fd, token, interest, mode, self.supports(mode))
    }

    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.reg.deregister(fd)
    }

    /// Inlined into the caller with the round and the system call, as `Poll`'s.
    #[inline(always)]
    fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        common::wait_loop(
            events,
            timeout,
            #[inline(always)]
            |events, left| self.wait_once(&mut buf, events, left),
        )
    }

    fn notify(&self) -> io::Result<()> {
        self.reg.notifier().notify()
    }

    fn notifier(&self) -> Notifier {
        self.reg.notifier().clone()
    }
}

impl Select {
    /// One round: builds the sets from the table, selects, maps the results into `events`.
    #[inline(always)]
    fn wait_once(
        &self,
        buf: &mut SelectBuf,
        events: &mut Events,
        left: Option<Duration>,
    ) -> io::Result<Round> {
        buf.slots.clear();
        let round = self.reg.begin_round(|fd, interest, tag| {
            buf.slots.push(Slot {
                fd,
                tag,
                interest,
                bad: false,
            });
            Ok(())
        })?;
        let n = match buf.select(registry::round_timeout(left)) {
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => buf.recover_ebadf()?,
            other => other?,
        };
        let SelectBuf {
            sets,
            slots,
            cursor,
        } = buf;
        let count = if n == 0 { 0 } else { slots.len() };
        Ok(round.finish(events, cursor, count, |i| {
            let s = slots[i];
            (s.fd, s.tag, s.ready(sets))
        }))
    }
}

impl SelectBuf {
    /// Fills the sets from the slots (leaving out bad ones) and selects; returns the count.
    #[inline(always)]
    fn select(&mut self, left: Option<Duration>) -> io::Result<usize> {
        let nfds = self.sets.fill(&self.slots)?;
        sys_select(nfds, &mut self.sets, left)
    }

    /// After `EBADF`: marks the slots whose fd is closed, then selects the others without
    /// blocking. Returns a count that is non-zero when anything is to be reported. If no
    /// closed fd is found (another thread reopened the number since), 0: the round reports
    /// nothing and the wait goes on with a new round.
    fn recover_ebadf(&mut self) -> io::Result<usize> {
        loop {
            let mut found = 0;
            for s in self.slots.iter_mut().filter(|s| !s.bad) {
                if !crate::is_open(s.fd) {
                    s.bad = true;
                    found += 1;
                }
            }
            if found == 0 {
                return Ok(0);
            }
            match self.select(Some(Duration::ZERO)) {
                // More fds closed meanwhile: look again.
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => {}
                Ok(n) => return Ok(n + found),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Slot {
    fn ready(&self, sets: &FdSets) -> Ready {
        if self.bad {
            return Ready::ERROR;
        }
        sets.ready(self.fd)
    }
}

/// Linux: `select`/`pselect6` through `syscall(2)`, because glibc's wrappers are pthread
/// cancellation points (about 60 instructions per call in a multi-threaded process). An
/// untimed or zero wait uses `select` itself on x86_64, as `poll` does (see `poll.rs`; 32-bit
/// x86's `select` number is the old one-argument call); a finite timeout, and every wait on
/// the other architectures, takes `pselect6` (nanoseconds).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline(always)]
fn sys_select(nfds: libc::c_int, sets: &mut FdSets, left: Option<Duration>) -> io::Result<usize> {
    // Null, or `sets`' own live sets, holding only fds below FD_SETSIZE (and `nfds`, which
    // is at most FD_SETSIZE: the kernel reads no further than the end of a set).
    let [read, write, except] = sets.ptrs();
    /// One raw `select` or `pselect6` call (`nr`): they share their first five arguments,
    /// and the sixth (pselect6's sigmask argument, a pointer to {sigset, size}) is null,
    /// which `select` ignores.
    ///
    /// # Safety
    ///
    /// Each set is null or points to a live, writable `fd_set`. `timeout` is null or points
    /// to a live, writable `timeval` (`select`) or `timespec` (`pselect6`): the kernel
    /// writes the time left into it.
    #[inline(always)]
    unsafe fn raw(
        nr: libc::c_long,
        nfds: libc::c_int,
        [read, write, except]: [*mut libc::fd_set; 3],
        timeout: *mut libc::c_void,
    ) -> io::Result<usize> {
        let args = [
            nfds as usize,
            read as usize,
            write as usize,
            except as usize,
            timeout as usize,
            0,
        ];
        // SAFETY: each set is null or a valid, writable fd_set (from `FdSets::ptrs`, as the
        // caller requires); `timeout` is as this function requires; the sixth argument may
        // be null (0).
        unsafe { crate::syscall::syscall6(nr, args) }
    }
    // Where `select` exists and may be used (see `ioloop_legacy_wait` in sys/targets.rs), but
    // not on 32-bit x86: its `SYS_select` (82) is the old one-argument `sys_old_select`.
    #[cfg(all(ioloop_legacy_wait, target_arch = "x86_64"))]
    {
        // SAFETY: an all-zero timeval is a valid zero duration.
        let mut zero: libc::timeval = unsafe { std::mem::zeroed() };
        let tv_ptr = match left {
            None => Some(std::ptr::null_mut()),
            Some(d) if d.is_zero() => Some(&mut zero as *mut libc::timeval),
            Some(_) => None,
        };
        if let Some(tv_ptr) = tv_ptr {
            // SAFETY: the sets are null or `sets`' own; `tv_ptr` is null or points to
            // `zero`, a live, writable timeval.
            return unsafe { raw(libc::SYS_select, nfds, [read, write, except], tv_ptr.cast()) };
        }
    }
    // The kernel's old timespec, not `libc::timespec`: see `common::OldTimespec`.
    let mut ts = left.map(common::old_timespec);
    let ts_ptr = common::old_timespec_mut_ptr(&mut ts);
    // SAFETY: the sets are null or `sets`' own; the timeout pointer is null or points to
    // `ts`, a live, writable timespec.
    unsafe {
        raw(
            libc::SYS_pselect6,
            nfds,
            [read, write, except],
            ts_ptr.cast(),
        )
    }
}

/// `pselect` with a `timespec` where the OS has it natively.
#[cfg(all(
    ioloop_timespec_poll,
    not(any(target_os = "linux", target_os = "android"))
))]
fn sys_select(nfds: libc::c_int, sets: &mut FdSets, left: Option<Duration>) -> io::Result<usize> {
    // Null, or `sets`' own live sets, holding only fds below FD_SETSIZE (and `nfds`, which
    // is at most FD_SETSIZE: the kernel reads no further than the end of a set).
    let [read, write, except] = sets.ptrs();
    let ts = left.map(common::timespec);
    let ts_ptr = common::timespec_ptr(&ts);
    // SAFETY: the sets are null or `sets`' own live fd_sets; `ts_ptr` is null or points
    // to a live timespec; the sigmask may be null.
    let n = cvt(unsafe { libc::pselect(nfds, read, write, except, ts_ptr, std::ptr::null()) })?;
    Ok(n.unsigned_abs() as usize)
}

/// `select` with a `timeval` rounded up to whole microseconds (macOS's `pselect` is a
/// wrapper around it anyway).
#[cfg(not(ioloop_timespec_poll))]
fn sys_select(nfds: libc::c_int, sets: &mut FdSets, left: Option<Duration>) -> io::Result<usize> {
    // Null, or `sets`' own live sets, holding only fds below FD_SETSIZE (and `nfds`, which
    // is at most FD_SETSIZE: the kernel reads no further than the end of a set).
    let [read, write, except] = sets.ptrs();
    let mut tv = left.map(timeval_round_up);
    let tv_ptr = tv
        .as_mut()
        .map_or(std::ptr::null_mut(), |t| t as *mut libc::timeval);
    // SAFETY: the sets are null or `sets`' own live fd_sets; `tv_ptr` is null or points
    // to a live timeval.
    let n = cvt(unsafe { libc::select(nfds, read, write, except, tv_ptr) })?;
    Ok(n.unsigned_abs() as usize)
}

/// A duration as a `timeval`, rounded *up* to whole microseconds (seconds saturate at
/// `i32::MAX`, which every `time_t` holds; rounds are capped far below that anyway).
#[cfg_attr(ioloop_timespec_poll, allow(dead_code))]
// `suseconds_t` is i32 on macOS and i64 on Linux: the conversion is fallible on some targets
// only. The field types are inferred, not named: musl deprecates its `time_t` alias.
#[allow(clippy::unnecessary_fallible_conversions)]
fn timeval_round_up(d: Duration) -> libc::timeval {
    let mut secs = d.as_secs();
    let mut micros = (d.subsec_nanos() + 999) / 1000;
    if micros == 1_000_000 {
        secs = secs.saturating_add(1);
        micros = 0;
    }
    // SAFETY: timeval is plain data; all-zero is a valid value, and it hides the padding
    // fields some targets have.
    let mut tv: libc::timeval = unsafe { std::mem::zeroed() };
    tv.tv_sec = i32::try_from(secs).unwrap_or(i32::MAX).into();
    tv.tv_usec = micros.try_into().unwrap_or(0);
    tv
}

/// `InvalidInput` unless `0 <= fd < FD_SETSIZE`: the one check in front of every set access.
fn check_settable(fd: RawFd) -> io::Result<()> {
    match usize::try_from(fd) {
        Ok(i) if i < libc::FD_SETSIZE => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fd {fd} is outside 0..FD_SETSIZE (0..{}); select cannot watch it",
                libc::FD_SETSIZE
            ),
        )),
    }
}

fn empty_set() -> libc::fd_set {
    // SAFETY: fd_set is a plain array of integers; all-zero is the empty set.
    unsafe { std::mem::zeroed() }
}

fn fd_zero(set: &mut libc::fd_set) {
    // SAFETY: `set` is a valid, writable fd_set.
    unsafe { libc::FD_ZERO(set) };
}

/// `FD_SET`, only after [`check_settable`].
fn fd_set(set: &mut libc::fd_set, fd: RawFd) -> io::Result<()> {
    check_settable(fd)?;
    // SAFETY: `set` is a valid, writable fd_set and `0 <= fd < FD_SETSIZE` (checked above).
    unsafe { libc::FD_SET(fd, set) };
    Ok(())
}

/// `FD_ISSET`, only after [`check_settable`] (an fd outside the set is never in it).
fn fd_isset(set: &libc::fd_set, fd: RawFd) -> bool {
    // SAFETY: `set` is a valid fd_set and `0 <= fd < FD_SETSIZE` (checked first).
    check_settable(fd).is_ok() && unsafe { libc::FD_ISSET(fd, set) }
}
