//! epoll(7), for Linux and Android.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::common::{self, Round};
use crate::notify::Receiver;
use crate::syscall::{cvt, retry};
use crate::{Events, Interest, Mode, Notifier, Poller, RESERVED_TOKEN};

/// The most events one `epoll_wait` may ask for: the kernel refuses more than
/// `INT_MAX / sizeof(struct epoll_event)` with `EINVAL`; a larger [`Events`] buffer is
/// filled over several waits.
const MAX_EVENTS: usize = libc::c_int::MAX as usize / std::mem::size_of::<libc::epoll_event>();

/// The epoll backend, for Linux and Android.
///
/// # Platform notes
///
/// * Timeouts: `epoll_pwait2(2)` (Linux 5.11+) takes a `timespec`, so waits keep nanosecond
///   precision; on older kernels (`ENOSYS`, or `EPERM` from a seccomp filter) the backend falls
///   back to `epoll_wait(2)` once and for good, with the timeout rounded *up* to whole
///   milliseconds so it never ends early.
/// * Android: only `epoll_pwait(2)` (milliseconds, rounded up), with no signal mask. The
///   seccomp filter of app processes kills a process for a system call bionic does not make
///   itself: `epoll_wait` on 64-bit ABIs, and `epoll_pwait2` before Android 15.
/// * epoll registers open file descriptions, not fd numbers: an fd closed without
///   [`deregister`](Poller::deregister) stops reporting once the last duplicate of it is closed.
/// * Regular files cannot be registered (`EPERM`).
/// * [`Mode::Edge`] is `EPOLLET`, [`Mode::Oneshot`] is `EPOLLONESHOT`.
pub struct Epoll {
    /// Invariant: an epoll instance this value owns.
    epfd: OwnedFd,
    wake: Receiver,
    /// The notifier's eventfd (`wake.fd()`), which `modify` and `deregister` refuse.
    wake_fd: RawFd,
    /// [`is_stale`](Poller::is_stale)'s probes, one at a time: a probe adds the fd to the set
    /// for an instant, so a `register` or `modify` of the same number by another thread
    /// meanwhile would meet the probe's entry (a spurious `AlreadyExists`; a `modify` that
    /// succeeds on it and is then undone by the probe). Such a call is redone holding this.
    ///
    /// What it holds: the fd numbers whose probe entry was gone when the probe went to
    /// remove it, with that probe's (odd) `probe_seq`. A `deregister` of another thread that
    /// removed the entry owes its caller `NotFound`; it overlapped that probe, so it read
    /// `probe_seq` at or before the tag. (The entry also goes when the number is closed and
    /// reused meanwhile: then nobody claims it; a few such are kept, the oldest dropped.)
    probe_lock: Mutex<Vec<(RawFd, u32)>>,
    /// Counts probe edges: odd while a probe's entry is in the set (changed under
    /// `probe_lock`). A call that read it even and unchanged around its `epoll_ctl` met no
    /// probe.
    probe_seq: AtomicU32,
}

impl std::fmt::Debug for Epoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoll").field("epfd", &self.epfd).finish()
    }
}

/// Whether the running kernel has epoll_pwait2: 0 not yet known, 1 yes, 2 no.
static PWAIT2: AtomicU8 = AtomicU8::new(0);

impl Poller for Epoll {
    const NAME: &'static str = "epoll";

    fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative return is a new fd.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just created and nothing else owns it.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let wake = Receiver::new_fd()?;
        let wake_fd = wake.fd().expect("eventfd notifier");
        let poller = Self {
            epfd,
            wake,
            wake_fd,
            probe_lock: Mutex::new(Vec::new()),
            probe_seq: AtomicU32::new(0),
        };
        poller.ctl(
            libc::EPOLL_CTL_ADD,
            wake_fd,
            RESERVED_TOKEN,
            // Edge-triggered: every notify is a new edge, so a wake-up costs no read.
            (libc::EPOLLIN | libc::EPOLLET) as u32,
        )?;
        Ok(poller)
    }

    fn supports(&self, _mode: Mode) -> bool {
        true
    }

    fn priority_exact(&self) -> bool {
        true
    }

    // register/deregister: the checks and the error paths are out of line (cold), so the
    // fast path is the system call and two comparisons, inlined into the caller.
    #[inline]
    fn register(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        if fd < 0 || token == RESERVED_TOKEN {
            return refuse_registration(fd, token, mode);
        }
        let seq = self.probe_seq.load(Ordering::SeqCst);
        let flags = epoll_flags(interest, mode);
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, flags)
            .or_else(|e| self.add_failed(e, seq, fd, token, flags))
    }

    fn modify(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        common::check_registration(fd, token, mode, true)?;
        if fd == self.wake_fd {
            // The notifier's, not the user's: modifying it would take the notifier over.
            return Err(common::not_found(fd));
        }
        let seq = self.probe_seq.load(Ordering::SeqCst);
        let flags = epoll_flags(interest, mode);
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, flags)
            .and_then(|()| {
                // It may have modified a probe's entry, which the probe then removed.
                if self.probed(seq) {
                    self.redo(libc::EPOLL_CTL_MOD, fd, token, flags)
                } else {
                    Ok(())
                }
            })
            .map_err(|e| self.not_registered(e, fd))
    }

    #[inline]
    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        if fd < 0 || fd == self.wake_fd {
            return refuse_deregister(fd);
        }
        let seq = self.probe_seq.load(Ordering::SeqCst);
        match self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0) {
            // It may have removed a probe's entry (the number was not registered).
            Ok(()) if self.probed(seq) => self.del_probed(fd, seq),
            Ok(()) => Ok(()),
            Err(e) => Err(self.not_registered(e, fd)),
        }
    }

    /// epoll forgets an fd when its open file is closed, so the probe asks whether the file
    /// open at `fd` now is in the set, without touching a registration: an `EPOLL_CTL_ADD`
    /// (empty interest, the notifier's token) that fails with `EEXIST` means "watched"; one
    /// that succeeds (undone at once), or `EPERM` (a file epoll cannot watch) or `EBADF`,
    /// means stale. (Unlike `modify`, this re-arms no [`Mode::Oneshot`] registration and
    /// makes no new [`Mode::Edge`] report.) epoll keeps no table: an fd never registered is
    /// also `true`. Probes run one at a time, and a `register` or `modify` of the number by
    /// another thread that meets a probe's entry is made again once the probe is done, and a
    /// `deregister` that removed it answers `NotFound`, so each answers as if no probe had
    /// run.
    fn is_stale(&self, fd: RawFd) -> io::Result<bool> {
        common::check_fd(fd)?;
        if fd == self.wake_fd || fd == self.epfd.as_raw_fd() {
            return Ok(false);
        }
        let mut taken = self.probe_lock.lock().unwrap_or_else(|p| p.into_inner());
        let tag = self
            .probe_seq
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add(1);
        let stale = match self.ctl(libc::EPOLL_CTL_ADD, fd, RESERVED_TOKEN, 0) {
            Ok(()) => {
                #[cfg(test)]
                tests::in_probe();
                // ENOENT: a `deregister` of the number in another thread removed the
                // probe's entry (it answers `NotFound` once this probe is done), or the
                // number was closed and reused meanwhile.
                match self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        if taken.len() >= 16 {
                            taken.remove(0);
                        }
                        taken.push((fd, tag));
                        Ok(true)
                    }
                    Err(e) => Err(e),
                    Ok(()) => Ok(true),
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EEXIST) => Ok(false),
                Some(libc::EPERM | libc::EBADF) => Ok(true),
                _ => Err(e),
            },
        };
        self.probe_seq.fetch_add(1, Ordering::SeqCst);
        stale
    }

    #[inline]
    fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        common::wait_loop(events, timeout, |events, left| self.wait_once(events, left))
    }

    fn notify(&self) -> io::Result<()> {
        self.wake.notifier().notify()
    }

    fn notifier(&self) -> Notifier {
        self.wake.notifier().clone()
    }
}

impl Epoll {
    #[inline]
    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, flags: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: flags,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the call.
        match unsafe { epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) } {
            Ok(_) => Ok(()),
            Err(e) => self.ctl_failed(e, op, fd, &mut ev),
        }
    }

    /// `ctl` after a failed `epoll_ctl`: retries on `EINTR` (out of line, so the inlined fast
    /// path is the system call and one comparison), else reports the error.
    #[cold]
    #[inline(never)]
    fn ctl_failed(
        &self,
        err: io::Error,
        op: libc::c_int,
        fd: RawFd,
        ev: &mut libc::epoll_event,
    ) -> io::Result<()> {
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
        // SAFETY: as in `ctl` (`ev` is the same valid epoll_event).
        retry(|| unsafe { epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut *ev) })?;
        Ok(())
    }

    /// Whether an `is_stale` probe may have overlapped an `epoll_ctl` made after
    /// `probe_seq` read `seq`: one was in its window then, or one began since.
    #[inline]
    fn probed(&self, seq: u32) -> bool {
        seq & 1 == 1 || self.probe_seq.load(Ordering::SeqCst) != seq
    }

    /// `register`'s `EPOLL_CTL_ADD` failed with `e` (`probe_seq` read `seq` before it): made
    /// again if `EEXIST` may be the entry of a probe. Out of line, so that `register` stays
    /// small enough to inline with its system call.
    #[cold]
    #[inline(never)]
    fn add_failed(
        &self,
        e: io::Error,
        seq: u32,
        fd: RawFd,
        token: u64,
        flags: u32,
    ) -> io::Result<()> {
        if e.raw_os_error() == Some(libc::EEXIST) && self.probed(seq) {
            return self.redo(libc::EPOLL_CTL_ADD, fd, token, flags);
        }
        Err(e)
    }

    /// An `epoll_ctl` that met an `is_stale` probe's entry, made again with no probe in its
    /// window.
    #[cold]
    #[inline(never)]
    fn redo(&self, op: libc::c_int, fd: RawFd, token: u64, flags: u32) -> io::Result<()> {
        #[cfg(test)]
        tests::redone();
        let _no_probe = self.probe_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.ctl(op, fd, token, flags)
    }

    /// A `deregister` whose `EPOLL_CTL_DEL` succeeded while an `is_stale` probe may have had
    /// its entry in the set (`probe_seq` read `seq` before it): once no probe runs,
    /// `NotFound` if a probe of `fd` that this call overlapped (tagged `seq` or later)
    /// found its entry gone (the number was not registered), else `Ok`. With two such
    /// deregisters of one number at once (one that took a probe's entry, one of a
    /// registration made after the entry went), which of them answers `NotFound` is not
    /// known; one does.
    #[cold]
    #[inline(never)]
    fn del_probed(&self, fd: RawFd, seq: u32) -> io::Result<()> {
        #[cfg(test)]
        tests::redone();
        let mut taken = self.probe_lock.lock().unwrap_or_else(|p| p.into_inner());
        // `tag` at or after `seq`, in wrapping order.
        let overlapped = |tag: u32| (tag.wrapping_sub(seq) as i32) >= 0;
        match taken
            .iter()
            .position(|&(t, tag)| t == fd && overlapped(tag))
        {
            Some(i) => {
                taken.swap_remove(i);
                Err(common::not_found(fd))
            }
            None => Ok(()),
        }
    }

    /// [`not_found_if_enoent`], and `EINVAL` for the epoll fd itself (which epoll refuses to
    /// hold): never registered either.
    #[cold]
    fn not_registered(&self, e: io::Error, fd: RawFd) -> io::Error {
        if fd == self.epfd.as_raw_fd() && e.raw_os_error() == Some(libc::EINVAL) {
            return common::not_found(fd);
        }
        not_found_if_enoent(e, fd)
    }

    /// One `epoll_pwait2`/`epoll_wait` call, straight into `events` (an [`Event`] is an
    /// `epoll_event`; flags are decoded only when read).
    ///
    /// [`Event`]: crate::Event
    #[inline]
    fn wait_once(&self, events: &mut Events, left: Option<Duration>) -> io::Result<Round> {
        let notified = events.fill_epoll(|out, room| {
            // The kernel refuses more than INT_MAX / sizeof(epoll_event) (EINVAL).
            let max = room.min(MAX_EVENTS) as libc::c_int;
            self.sys_wait(out, max, left)
        })?;
        if notified {
            self.wake.reset_edge();
        }
        Ok(Round { notified })
    }

    /// One wait for at most `left`; returns the count. No limit and no wait are exact with
    /// plain `epoll_wait` (-1, 0), so only a finite timeout takes the `epoll_pwait2` path.
    #[inline]
    fn sys_wait(
        &self,
        out: *mut libc::epoll_event,
        max: libc::c_int,
        left: Option<Duration>,
    ) -> io::Result<usize> {
        let ms = match left {
            None => -1,
            Some(d) if d.is_zero() => 0,
            Some(d) => return self.sys_wait_timed(out, max, d),
        };
        // SAFETY: `out` has room for `max` events (the caller's array).
        unsafe { epoll_wait(self.epfd.as_raw_fd(), out, max, ms) }
    }

    /// A finite, non-zero timeout: `epoll_pwait2` (nanoseconds) when the kernel has it, else
    /// `epoll_wait` with the timeout rounded up to milliseconds. Kept out of line so the
    /// untimed path stays short.
    #[inline(never)]
    fn sys_wait_timed(
        &self,
        out: *mut libc::epoll_event,
        max: libc::c_int,
        left: Duration,
    ) -> io::Result<usize> {
        let epfd = self.epfd.as_raw_fd();
        // Never on Android: see the platform notes (a seccomp kill, not `ENOSYS`).
        if cfg!(not(target_os = "android")) && PWAIT2.load(Ordering::Relaxed) != 2 {
            // `struct __kernel_timespec` (64-bit fields), not `libc::timespec`: on 32-bit
            // targets their layouts differ.
            let ts = common::kernel_timespec(left);
            let args = [
                epfd as usize,
                out as usize,
                max as usize,
                &ts as *const common::KernelTimespec as usize,
                0,
                0,
            ];
            // SAFETY: `out` has room for `max` events (the caller's array); `ts` is a live
            // __kernel_timespec; the null (0) sigmask means "leave it alone".
            match unsafe { crate::syscall::syscall6(libc::SYS_epoll_pwait2, args) } {
                Ok(n) => {
                    if PWAIT2.load(Ordering::Relaxed) == 0 {
                        PWAIT2.store(1, Ordering::Relaxed);
                    }
                    return Ok(n);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    PWAIT2.store(2, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let ms = common::millis_round_up(Some(left));
        // SAFETY: `out` has room for `max` events (the caller's array).
        unsafe { epoll_wait(epfd, out, max, ms) }
    }
}

/// The system call behind [`epoll_wait`]: `epoll_wait` where the architecture has one, else
/// `epoll_pwait` with no signal mask (aarch64 and the other newer ports have only that, and
/// Android allows apps only that: see [`Epoll`]'s platform notes). On x86-64, `epoll_pwait`
/// measured about 1 % slower per wait than `epoll_wait` in the ping-pong bench.
#[cfg(ioloop_legacy_wait)]
const SYS_EPOLL_WAIT: libc::c_long = libc::SYS_epoll_wait;
#[cfg(not(ioloop_legacy_wait))]
const SYS_EPOLL_WAIT: libc::c_long = libc::SYS_epoll_pwait;

/// `epoll_wait(2)` as a raw system call ([`SYS_EPOLL_WAIT`], through
/// [`syscall6`](crate::syscall::syscall6), inlined into the waiting loop where it can be):
/// glibc's `epoll_wait` is a pthread cancellation point, and in a process with more than one
/// thread each call pays for switching asynchronous cancellation on and off (about 60
/// instructions) for a feature Rust code cannot use. Returns the count.
///
/// # Safety
///
/// `out` must be valid for writes of `max` events.
#[inline(always)]
unsafe fn epoll_wait(
    epfd: RawFd,
    out: *mut libc::epoll_event,
    max: libc::c_int,
    ms: libc::c_int,
) -> io::Result<usize> {
    // Integer arguments are passed sign-extended; the kernel reads the low 32 bits.
    let args = [epfd as usize, out as usize, max as usize, ms as usize, 0, 0];
    // SAFETY: `out` has room for `max` events (this function's contract); a bad `epfd` is
    // an error return, not undefined behaviour. For `epoll_pwait` the null (0) sigmask means
    // "leave the mask alone" (its size is then not read); `epoll_wait` ignores both.
    unsafe { crate::syscall::syscall6(SYS_EPOLL_WAIT, args) }
}

/// `epoll_ctl(2)` as a raw system call ([`syscall6`](crate::syscall::syscall6)).
///
/// # Safety
///
/// `ev` must point to a valid `epoll_event` (the kernel ignores it for `EPOLL_CTL_DEL` since
/// Linux 2.6.9, but it must be non-null on older ones).
#[inline(always)]
unsafe fn epoll_ctl(
    epfd: RawFd,
    op: libc::c_int,
    fd: RawFd,
    ev: *mut libc::epoll_event,
) -> io::Result<usize> {
    let args = [epfd as usize, op as usize, fd as usize, ev as usize, 0, 0];
    // SAFETY: `ev` is valid (this function's contract); a bad `epfd` or `fd` is an error
    // return, not undefined behaviour.
    unsafe { crate::syscall::syscall6(libc::SYS_epoll_ctl, args) }
}

/// `register`'s refusals (a negative fd, the reserved token), out of line.
#[cold]
#[inline(never)]
fn refuse_registration(fd: RawFd, token: u64, mode: Mode) -> io::Result<()> {
    common::check_registration(fd, token, mode, true)
}

/// `deregister`'s refusals: a negative fd (`InvalidInput`) and the notifier's own eventfd
/// (`NotFound`: it is not a registration of the caller's).
#[cold]
#[inline(never)]
fn refuse_deregister(fd: RawFd) -> io::Result<()> {
    common::check_fd(fd)?;
    Err(common::not_found(fd))
}

/// `modify`/`deregister` of an fd epoll does not hold: `ENOENT`, or `EBADF`/`EPERM` for an fd
/// that is not open or could never have been registered. All mean "not registered".
fn not_found_if_enoent(e: io::Error, fd: RawFd) -> io::Error {
    if matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::EBADF | libc::EPERM)
    ) {
        common::not_found(fd)
    } else {
        e
    }
}

fn epoll_flags(interest: Interest, mode: Mode) -> u32 {
    let mut f = 0;
    if interest.contains(Interest::READABLE) {
        f |= libc::EPOLLIN | libc::EPOLLRDHUP;
    }
    if interest.contains(Interest::WRITABLE) {
        f |= libc::EPOLLOUT;
    }
    if interest.contains(Interest::PRIORITY) {
        f |= libc::EPOLLPRI;
    }
    f |= match mode {
        Mode::Level => 0,
        Mode::Oneshot => libc::EPOLLONESHOT,
        Mode::Edge => libc::EPOLLET,
    };
    f as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::thread;

    thread_local! {
        /// Run by an `is_stale` probe of this thread while its entry is in the set.
        static IN_PROBE: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
    }

    /// How many `epoll_ctl`s were redone for meeting a probe (any thread, any poller).
    static REDONE: AtomicUsize = AtomicUsize::new(0);

    pub(super) fn in_probe() {
        IN_PROBE.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f();
            }
        });
    }

    pub(super) fn redone() {
        REDONE.fetch_add(1, Ordering::SeqCst);
    }

    /// A `register`, `modify` or `deregister` of an fd number by another thread while an
    /// `is_stale` probe of the same number has its entry in the set: the register succeeds
    /// (it was `AlreadyExists`) and the fd reports; the modify and the deregister of the
    /// unregistered fd are `NotFound` (they succeeded on the probe's entry: the modify's
    /// change was then removed by the probe, the deregister removed the entry itself).
    #[test]
    fn a_probe_disturbs_no_call_of_another_thread() {
        let p = Arc::new(Epoll::new().unwrap());
        let (a, b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        for op in ["modify", "deregister", "register"] {
            let register = op == "register";
            let done = std::rc::Rc::new(RefCell::new(None));
            let (p2, done2) = (p.clone(), done.clone());
            IN_PROBE.with(|h| {
                *h.borrow_mut() = Some(Box::new(move || {
                    let before = REDONE.load(Ordering::SeqCst);
                    let p = p2.clone();
                    let call = thread::spawn(move || match op {
                        "register" => p.register(fd, 7, Interest::READABLE, Mode::Level),
                        "modify" => p.modify(fd, 7, Interest::READABLE, Mode::Level),
                        _ => p.deregister(fd),
                    });
                    // Until the call met the probe's entry and waits for the probe to end
                    // (or, without that, returned).
                    while REDONE.load(Ordering::SeqCst) == before && !call.is_finished() {
                        thread::yield_now();
                    }
                    *done2.borrow_mut() = Some(call);
                }));
            });
            assert!(p.is_stale(fd).unwrap(), "{op}");
            IN_PROBE.with(|h| h.borrow_mut().take());
            let call = done.borrow_mut().take().expect("the probe ran the call");
            let res = call.join().unwrap();
            if register {
                res.unwrap();
                (&b).write_all(b"x").unwrap();
                let mut events = Events::with_capacity(4);
                assert_eq!(
                    p.wait(&mut events, Some(Duration::from_secs(5))).unwrap(),
                    1
                );
                assert_eq!(events.iter().next().unwrap().token(), 7);
                p.deregister(fd).unwrap();
            } else {
                assert_eq!(res.unwrap_err().kind(), io::ErrorKind::NotFound, "{op}");
            }
        }
        // Nothing is left owed: a deregister that meets no probe's entry answers as usual,
        // also one that overlaps a probe of another number.
        p.register(fd, 7, Interest::READABLE, Mode::Level).unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        deregister_during_probe(&p, fd, c.as_raw_fd()).unwrap();
        assert!(p.probe_lock.lock().unwrap().is_empty());
        assert_eq!(
            p.deregister(fd).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    /// Another thread's `deregister(fd)` made while an `is_stale` probe of `probed` (a live
    /// number that is not registered) has its entry in the set; its answer. It overlaps
    /// the probe, so it waits for the probe to end before it answers.
    fn deregister_during_probe(p: &Arc<Epoll>, fd: RawFd, probed: RawFd) -> io::Result<()> {
        let done = std::rc::Rc::new(RefCell::new(None));
        let (p2, done2) = (p.clone(), done.clone());
        IN_PROBE.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                let before = REDONE.load(Ordering::SeqCst);
                let p = p2.clone();
                let call = thread::spawn(move || p.deregister(fd));
                while REDONE.load(Ordering::SeqCst) == before {
                    thread::yield_now();
                }
                *done2.borrow_mut() = Some(call);
            }));
        });
        assert!(p.is_stale(probed).unwrap());
        IN_PROBE.with(|h| h.borrow_mut().take());
        let call = done.borrow_mut().take().expect("the probe ran the call");
        call.join().unwrap()
    }

    /// A probe whose entry went because another thread closed and reused the number (not a
    /// `deregister`) leaves a `NotFound` nobody is owed: a later `deregister` of a
    /// registration of that number, which overlaps a probe of another number, still
    /// answers `Ok`.
    #[test]
    fn a_reused_number_owes_no_not_found() {
        let p = Arc::new(Epoll::new().unwrap());
        let (a, _a2) = UnixStream::pair().unwrap();
        let (c, _c2) = UnixStream::pair().unwrap();
        let (d, _d2) = UnixStream::pair().unwrap();
        let (fd, cfd) = (a.as_raw_fd(), c.as_raw_fd());
        IN_PROBE.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                // SAFETY: both are open; `fd`'s number stays owned by `a`, which closes
                // whatever is there when it drops.
                let t = thread::spawn(move || unsafe { libc::dup2(cfd, fd) });
                assert_eq!(t.join().unwrap(), fd);
            }));
        });
        assert!(p.is_stale(fd).unwrap());
        IN_PROBE.with(|h| h.borrow_mut().take());
        p.register(fd, 7, Interest::READABLE, Mode::Level).unwrap();
        let res = deregister_during_probe(&p, fd, d.as_raw_fd());
        assert!(res.is_ok(), "a registered fd's deregister answered {res:?}");
        let err = p.deregister(fd).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "it was removed");
    }

    /// [`MAX_EVENTS`] is the kernel's limit: a wait for that many is taken (nothing is ready,
    /// so the one-entry buffer is never written past), one more is `EINVAL`. A larger
    /// [`Events`] buffer is asked for `MAX_EVENTS` at a time.
    #[test]
    fn max_events_is_the_kernels_limit() {
        let p = Epoll::new().unwrap();
        let mut one = vec![libc::epoll_event { events: 0, u64: 0 }];
        let max = MAX_EVENTS as libc::c_int;
        let zero = Some(Duration::ZERO);
        assert_eq!(p.sys_wait(one.as_mut_ptr(), max, zero).unwrap(), 0);
        let err = p.sys_wait(one.as_mut_ptr(), max + 1, zero).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }
}
