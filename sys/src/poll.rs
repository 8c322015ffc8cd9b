//! poll(2), for every Unix.
//!
//! The platform notes are on [`Poll`].

use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Duration;

use crate::common::{self, Round};
use crate::registry::{self, Registry};
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use crate::syscall::cvt;
use crate::{Events, Interest, Mode, Notifier, Poller, Ready};

/// The poll backend: [`Poller`] over `poll(2)`, for every Unix.
///
/// # Platform notes
///
/// * O(n) per wait: poll keeps no state in the kernel, so every wait hands it all the
///   registered fds again (from a buffer reused across waits, so no allocation). Prefer epoll
///   or kqueue for many fds.
/// * Timeouts: `ppoll(2)` takes a `timespec` (nanoseconds) on Linux, Android, FreeBSD,
///   DragonFly and OpenBSD, as does `pollts(2)` on NetBSD (whose `ppoll` is only in 10 and
///   later); elsewhere (macOS, illumos, ...) `poll(2)` takes whole milliseconds, rounded *up*
///   so a wait never ends early.
/// * macOS, iOS and the other Apple systems: [`Interest::PRIORITY`] is refused
///   (`Unsupported`), as by kqueue. Their `poll(2)` is built on kqueue's read filter: it
///   reports `POLLPRI` on every hang-up, and for an fd asked for `POLLPRI` without `POLLIN` it
///   drops the report of ordinary data, so out-of-band data could go unreported. Also there:
///   an fd kqueue cannot watch (some character devices) comes back as `POLLNVAL`, so it
///   reports [`Ready::ERROR`] while open; and a registration with an empty interest puts
///   nothing in the kernel, so its hang-up is not reported.
/// * [`Mode::Oneshot`] is emulated: after a report the registration is left out of the set
///   until [`modify`](Poller::modify) re-arms it. There is no [`Mode::Edge`]:
///   [`supports`](Poller::supports) says so and [`register`](Poller::register) fails with
///   `Unsupported`.
/// * poll watches fd numbers, not open files: an fd closed without
///   [`deregister`](Poller::deregister) is reported as [`Ready::ERROR`] (`POLLNVAL`) on every
///   wait until it is deregistered.
/// * `POLLHUP` (and on Linux and Android `POLLRDHUP`, asked for with
///   [`Interest::READABLE`]) is [`Ready::HUP`]; a pipe or socket with data left and a closed
///   peer reports `READABLE | HUP`.
/// * A registration made from another thread while a wait is blocked interrupts the system call
///   through an internal notifier; the wait rebuilds its set and goes on, within the same
///   deadline.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
/// use std::time::Duration;
/// use ioloop_sys::{Events, Interest, Mode, Poll, Poller, Ready};
///
/// let poller = Poll::new()?;
/// assert!(!poller.supports(Mode::Edge));
/// let (a, mut b) = UnixStream::pair()?;
/// poller.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Oneshot)?;
/// b.write_all(b"x")?;
/// let mut events = Events::with_capacity(8);
/// assert_eq!(poller.wait(&mut events, Some(Duration::from_secs(5)))?, 1);
/// // Oneshot: disarmed until `modify`, although still readable.
/// assert_eq!(poller.wait(&mut events, Some(Duration::ZERO))?, 0);
/// poller.modify(a.as_raw_fd(), 1, Interest::READABLE, Mode::Oneshot)?;
/// assert_eq!(poller.wait(&mut events, Some(Duration::ZERO))?, 1);
/// # std::io::Result::Ok(())
/// ```
#[derive(Debug)]
pub struct Poll {
    /// The registrations and the notifiers.
    reg: Registry,
    /// The kernel's in/out array, reused by every wait (locked by the one waiter for the whole
    /// wait). Invariant: `gens[i]` is the slot tag of `fds[i]`.
    buf: Mutex<PollBuf>,
}

#[derive(Debug, Default)]
struct PollBuf {
    fds: Vec<libc::pollfd>,
    gens: Vec<u64>,
    /// Where reporting starts (see `InRound::finish`).
    cursor: usize,
}

impl Poller for Poll {
    const NAME: &'static str = "poll";

    fn new() -> io::Result<Self> {
        Ok(Self {
            reg: Registry::new()?,
            buf: Mutex::new(PollBuf::default()),
        })
    }

    fn supports(&self, mode: Mode) -> bool {
        mode != Mode::Edge
    }

    fn priority_exact(&self) -> bool {
        // Where PRIORITY is refused (Apple), no report carries it; see the platform notes.
        !NO_PRIORITY
    }

    fn modify_deferred(&self) -> bool {
        true
    }

    fn register(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        check_priority(interest)?;
        self.reg
            .register(fd, token, interest, mode, self.supports(mode))
    }

    fn modify(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        check_priority(interest)?;
        self.reg
            .modify(fd, token, interest, mode, self.supports(mode))
    }

    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.reg.deregister(fd)
    }

    /// Inlined into the caller with the round and the system call, so that the `poll`
    /// instruction sits in the caller's loop: no frame returns across it (see
    /// `syscall::syscall6` for what such a return costs).
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

/// Apple's `poll(2)` cannot be trusted with `POLLPRI` (see [`Poll`]'s platform notes).
const NO_PRIORITY: bool = cfg!(target_vendor = "apple");

/// `Unsupported` for [`Interest::PRIORITY`] where [`NO_PRIORITY`].
fn check_priority(interest: Interest) -> io::Result<()> {
    if NO_PRIORITY && interest.contains(Interest::PRIORITY) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "poll(2) on Apple systems cannot watch for priority data (Interest::PRIORITY)",
        ));
    }
    Ok(())
}

impl Poll {
    /// One round: builds the array from the table, polls, maps the results into `events`.
    #[inline(always)]
    fn wait_once(
        &self,
        buf: &mut PollBuf,
        events: &mut Events,
        left: Option<Duration>,
    ) -> io::Result<Round> {
        buf.fds.clear();
        buf.gens.clear();
        let round = self.reg.begin_round(|fd, interest, gen| {
            buf.fds.push(libc::pollfd {
                fd,
                events: poll_flags(interest),
                revents: 0,
            });
            buf.gens.push(gen);
            Ok(())
        })?;
        let n = sys_poll(&mut buf.fds, registry::round_timeout(left))?;
        let (fds, gens) = (&buf.fds, &buf.gens);
        let slots = if n == 0 { 0 } else { fds.len() };
        Ok(round.finish(events, &mut buf.cursor, slots, |i| {
            (fds[i].fd, gens[i], ready_from(fds[i].revents))
        }))
    }
}

/// Linux: `poll`/`ppoll` through `syscall(2)`, because glibc's wrappers are pthread
/// cancellation points, which cost about 60 instructions per call in a multi-threaded
/// process. An untimed or zero wait uses `poll` itself where the architecture has it (x86):
/// `ppoll`'s timespec and signal-mask handling measured slower in the waker bench. A finite
/// timeout takes `ppoll` (nanoseconds). Returns how many entries have `revents`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline(always)]
fn sys_poll(fds: &mut [libc::pollfd], left: Option<Duration>) -> io::Result<usize> {
    let nfds = nfds(fds)?;
    // Where `poll` exists and may be used (not Android: see `ioloop_legacy_wait` in
    // sys/targets.rs).
    #[cfg(ioloop_legacy_wait)]
    {
        let ms: Option<libc::c_int> = match left {
            None => Some(-1),
            Some(d) if d.is_zero() => Some(0),
            Some(_) => None,
        };
        if let Some(ms) = ms {
            let args = [
                fds.as_mut_ptr() as usize,
                nfds as usize,
                ms as usize,
                0,
                0,
                0,
            ];
            // SAFETY: `fds` is valid and writable for `nfds` entries; `poll` takes
            // (struct pollfd *, nfds_t, int).
            return unsafe { crate::syscall::syscall6(libc::SYS_poll, args) };
        }
    }
    // The kernel's old timespec, not `libc::timespec`: see `common::OldTimespec`.
    let mut ts = left.map(common::old_timespec);
    let ts_ptr = common::old_timespec_mut_ptr(&mut ts);
    let args = [
        fds.as_mut_ptr() as usize,
        nfds as usize,
        ts_ptr as usize,
        0,
        0,
        0,
    ];
    // SAFETY: `fds` is valid and writable for `nfds` entries; `ts_ptr` is null (no limit) or
    // points to a live, writable timespec (the kernel writes the time left into it); the
    // null (0) sigmask leaves the signal mask alone (its size is then not read).
    unsafe { crate::syscall::syscall6(libc::SYS_ppoll, args) }
}

/// `ppoll` with a `timespec` where the OS has it (NetBSD: `pollts`, the same call under the
/// name it has had since NetBSD 3; `ppoll` is only in 10); returns how many entries have
/// `revents`.
#[cfg(all(
    ioloop_timespec_poll,
    not(any(target_os = "linux", target_os = "android"))
))]
fn sys_poll(fds: &mut [libc::pollfd], left: Option<Duration>) -> io::Result<usize> {
    #[cfg(target_os = "netbsd")]
    use libc::pollts as ppoll;
    #[cfg(not(target_os = "netbsd"))]
    use libc::ppoll;
    let nfds = nfds(fds)?;
    let ts = left.map(common::timespec);
    let ts_ptr = common::timespec_ptr(&ts);
    // SAFETY: `fds` is valid and writable for `nfds` entries; `ts_ptr` is null (no limit) or
    // points to a live timespec; a null sigmask leaves the signal mask alone.
    let n = cvt(unsafe { ppoll(fds.as_mut_ptr(), nfds, ts_ptr, std::ptr::null()) })?;
    Ok(n.unsigned_abs() as usize)
}

/// `poll` with milliseconds rounded up, where the OS has no `ppoll` (macOS, illumos, ...).
#[cfg(not(ioloop_timespec_poll))]
fn sys_poll(fds: &mut [libc::pollfd], left: Option<Duration>) -> io::Result<usize> {
    let nfds = nfds(fds)?;
    // SAFETY: `fds` is valid and writable for `nfds` entries.
    let n = cvt(unsafe { libc::poll(fds.as_mut_ptr(), nfds, common::millis_round_up(left)) })?;
    Ok(n.unsigned_abs() as usize)
}

fn nfds(fds: &[libc::pollfd]) -> io::Result<libc::nfds_t> {
    libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many fds for one poll"))
}

/// What to ask poll for. `POLLERR`, `POLLHUP` and `POLLNVAL` come unasked.
fn poll_flags(interest: Interest) -> libc::c_short {
    let mut f = 0;
    if interest.contains(Interest::READABLE) {
        f |= libc::POLLIN;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            f |= libc::POLLRDHUP;
        }
    }
    if interest.contains(Interest::WRITABLE) {
        f |= libc::POLLOUT;
    }
    if interest.contains(Interest::PRIORITY) {
        f |= libc::POLLPRI;
    }
    f
}

fn ready_from(revents: libc::c_short) -> Ready {
    let mut r = Ready::empty();
    if revents & libc::POLLIN != 0 {
        r |= Ready::READABLE;
    }
    if revents & libc::POLLOUT != 0 {
        r |= Ready::WRITABLE;
    }
    if revents & libc::POLLPRI != 0 {
        r |= Ready::PRIORITY;
    }
    if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        r |= Ready::ERROR;
    }
    if revents & libc::POLLHUP != 0 {
        r |= Ready::HUP;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if revents & libc::POLLRDHUP != 0 {
        r |= Ready::HUP;
    }
    r
}
