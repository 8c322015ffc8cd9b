//! kqueue(2), for macOS, iOS, FreeBSD, NetBSD, OpenBSD and DragonFly.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::common::{self, Round};
use crate::notify::Receiver;
use crate::syscall::cvt;
use crate::{Events, Interest, Mode, Notifier, Poller, Ready};

// The C types of `struct kevent`'s fields and of kevent(2)'s counts differ between the BSDs
// (see each OS's <sys/event.h>): NetBSD uses `uint32_t` filter and flags and `size_t` counts,
// the others `short`/`u_short` and `int`. `udata` (also different on old NetBSD) is never set
// by this backend: every kevent starts zeroed.
#[cfg(target_os = "netbsd")]
type Filter = u32;
#[cfg(not(target_os = "netbsd"))]
type Filter = i16;
#[cfg(target_os = "netbsd")]
type Flags = u32;
#[cfg(not(target_os = "netbsd"))]
type Flags = u16;
#[cfg(target_os = "netbsd")]
type Count = libc::size_t;
#[cfg(not(target_os = "netbsd"))]
type Count = libc::c_int;

/// The `ident` of the notifier's `EVFILT_USER` event (user events have their own namespace).
#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly"
))]
const WAKE_IDENT: libc::uintptr_t = 0;

/// The most changes one operation submits: delete and add, for each of the two filters.
const MAX_CHANGES: usize = 4;

/// The kqueue backend, for macOS, iOS, FreeBSD, NetBSD, OpenBSD and DragonFly: all three
/// [`Mode`]s, nanosecond timeouts, one [`Event`](crate::Event) per fd per wait (kqueue's
/// separate read and write reports merged), an `EVFILT_USER` notifier where the OS has one.
///
/// # Platform notes
///
/// * Timeouts: `kevent(2)` takes a `timespec`, so waits keep nanosecond precision.
/// * kqueue watches reading and writing with two separate filters (`EVFILT_READ`,
///   `EVFILT_WRITE`) and reports them as separate kernel events; this backend merges the two
///   reports of one fd in one wait into one [`Event`](crate::Event).
/// * Tokens are kept in the backend's registered-fd table, not in the kernel's `udata`, which
///   is pointer-sized (32 bits on some BSD targets) while tokens are `u64`. The table also makes
///   `AlreadyExists`/`NotFound` match epoll (kqueue itself would silently re-add or say
///   `ENOENT` per filter).
/// * [`Mode::Level`] is a plain `EV_ADD`, [`Mode::Edge`] is `EV_CLEAR`, [`Mode::Oneshot`] is
///   `EV_DISPATCH`: the kernel disables a filter after reporting it and
///   [`modify`](Poller::modify) re-arms it with `EV_ENABLE`. `EV_DISPATCH` rather than
///   `EV_ONESHOT` because it keeps the kernel's knotes (no delete and re-allocation per
///   report) so the kernel always holds exactly the filters the table says, and a re-arm or a
///   deregister never meets a filter the kernel dropped by itself. As the two filters of an fd
///   are disabled one by one, the backend also marks a Oneshot fd disarmed after its first
///   report and drops a later report of its other filter until `modify`: one report per arm,
///   as with epoll's `EPOLLONESHOT`.
/// * A change of mode in `modify` deletes and re-adds the filters: the BSD kernels do not
///   update `EV_CLEAR`/`EV_DISPATCH` of an existing knote.
/// * Changes are submitted with `EV_RECEIPT`, so each change's error comes back on its own and
///   no pending event is consumed. Two errors are ignored: `ENOENT` from deleting a filter the
///   kernel no longer has, and `EPIPE` from adding a filter to a pipe whose other end is closed
///   (macOS; the fd still reports, see [mio#582]).
/// * `EV_EOF` is [`Ready::HUP`]; `EV_EOF` with a non-zero `fflags` (the socket error) or
///   `EV_ERROR` is [`Ready::ERROR`]. With an empty interest no filter is registered, so such
///   an fd reports nothing (epoll would still report `EPOLLERR`/`EPOLLHUP`).
/// * The notifier is an `EVFILT_USER` event triggered with `NOTE_TRIGGER` on macOS, iOS,
///   FreeBSD and DragonFly; NetBSD (before 10) and OpenBSD lack `EVFILT_USER`, so there it is a
///   non-blocking pipe watched with `EVFILT_READ`. The notifier shares the kqueue fd through an
///   `Arc`, so a [`Notifier`] that outlives the poller never triggers a reused fd number.
/// * Closing an fd drops its knotes, but not its entry in the table: deregister before
///   closing (as the [`Poller`] docs ask), or a new fd that reuses the number is
///   `AlreadyExists` (epoll forgets a closed fd by itself).
/// * kqueue fds are not inherited across `fork(2)`; the fd is also close-on-exec.
///
/// [mio#582]: https://github.com/tokio-rs/mio/issues/582
pub struct Kqueue {
    /// Invariant: a kqueue this value owns, shared only with this poller's notifier (which
    /// triggers `EVFILT_USER` on it), so it stays open while either lives.
    kq: Arc<OwnedFd>,
    /// The registered fds. register/modify/deregister hold the lock across their kevent call,
    /// so the table and the kernel's knotes change together.
    table: Mutex<Table>,
    /// The kernel's output buffer, reused by every wait (locked by the one waiter).
    buf: Mutex<KeventBuf>,
    wake: Receiver,
}

impl std::fmt::Debug for Kqueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kqueue").field("kq", &self.kq).finish()
    }
}

/// The registered-fd table.
struct Table {
    fds: HashMap<RawFd, Entry>,
    /// Counts the batches of kernel events converted, to spot an fd's second report in one
    /// batch (`Entry::round`).
    round: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    token: u64,
    interest: Interest,
    mode: Mode,
    /// Oneshot: not reported since the last register/modify.
    armed: bool,
    /// The batch in which this fd was last reported, and the index of that event.
    round: u64,
    slot: usize,
}

/// `Vec<libc::kevent>`, which is not `Send` because `kevent::udata` is a raw pointer.
struct KeventBuf(Vec<libc::kevent>);

// SAFETY: the backend never sets `udata` (every kevent starts zeroed) and never dereferences
// it; the buffer is plain data owned by the poller and only touched under its mutex.
unsafe impl Send for KeventBuf {}

impl Poller for Kqueue {
    const NAME: &'static str = "kqueue";

    fn new() -> io::Result<Self> {
        // SAFETY: kqueue takes no arguments; a non-negative return is a new fd.
        let fd = cvt(unsafe { libc::kqueue() })?;
        // SAFETY: `fd` was just created and nothing else owns it.
        let kq = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: fcntl with F_SETFD takes only integers; `fd` is open (owned by `kq`).
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
        let wake = new_wake(&kq)?;
        Ok(Self {
            kq,
            table: Mutex::new(Table {
                fds: HashMap::new(),
                round: 0,
            }),
            buf: Mutex::new(KeventBuf(Vec::new())),
            wake,
        })
    }

    fn supports(&self, _mode: Mode) -> bool {
        true
    }

    fn register(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        common::check_registration(fd, token, mode, true)?;
        refuse_priority(interest)?;
        let mut table = self.table();
        if table.fds.contains_key(&fd) || Some(fd) == self.wake.fd() {
            return Err(common::already_exists(fd));
        }
        let mut changes = Changes::default();
        for (want, filter) in filters(interest) {
            if want {
                changes.push(fd, filter, libc::EV_ADD | mode_flags(mode));
            }
        }
        if changes.is_empty() {
            // No filter to add, so no kevent to tell an fd that is not open: ask fcntl.
            // SAFETY: fcntl with F_GETFD takes only integers; a bad fd is EBADF.
            cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
        } else if let Err(e) = submit(self.kq.as_raw_fd(), changes.as_slice()) {
            // Undo the filters that were added before the failing one.
            let mut undo = Changes::default();
            for (want, filter) in filters(interest) {
                if want {
                    undo.push(fd, filter, libc::EV_DELETE);
                }
            }
            let _ = submit(self.kq.as_raw_fd(), undo.as_slice());
            return Err(e);
        }
        table.fds.insert(fd, Entry::new(token, interest, mode));
        Ok(())
    }

    fn modify(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        common::check_registration(fd, token, mode, true)?;
        refuse_priority(interest)?;
        let mut table = self.table();
        let old = match table.fds.get(&fd) {
            Some(entry) => *entry,
            None => return Err(common::not_found(fd)),
        };
        let mut changes = Changes::default();
        for ((had, filter), (want, _)) in filters(old.interest).into_iter().zip(filters(interest)) {
            // Delete before (re-)adding: a changed mode needs a new knote.
            if had && (!want || old.mode != mode) {
                changes.push(fd, filter, libc::EV_DELETE);
            }
            if want {
                // EV_ENABLE re-arms a filter EV_DISPATCH disabled; EV_ADD re-checks readiness.
                changes.push(
                    fd,
                    filter,
                    libc::EV_ADD | libc::EV_ENABLE | mode_flags(mode),
                );
            }
        }
        // On an error the kernel may hold part of the change; the table keeps the old entry.
        submit(self.kq.as_raw_fd(), changes.as_slice())?;
        table.fds.insert(fd, Entry::new(token, interest, mode));
        Ok(())
    }

    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        common::check_fd(fd)?;
        let mut table = self.table();
        let old = table.fds.remove(&fd).ok_or_else(|| common::not_found(fd))?;
        let mut changes = Changes::default();
        for (had, filter) in filters(old.interest) {
            if had {
                changes.push(fd, filter, libc::EV_DELETE);
            }
        }
        submit(self.kq.as_raw_fd(), changes.as_slice())
    }

    fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        if buf.0.capacity() < events.capacity() {
            buf.0.clear();
            buf.0.reserve_exact(events.capacity());
        }
        common::wait_loop(events, timeout, |events, left| {
            self.wait_once(&mut buf.0, events, left)
        })
    }

    fn notify(&self) -> io::Result<()> {
        self.wake.notifier().notify()
    }

    fn notifier(&self) -> Notifier {
        self.wake.notifier().clone()
    }
}

impl Kqueue {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One `kevent` call; converts what the kernel stored into `events`, one event per fd.
    fn wait_once(
        &self,
        buf: &mut Vec<libc::kevent>,
        events: &mut Events,
        left: Option<Duration>,
    ) -> io::Result<Round> {
        let max = events.remaining().min(buf.capacity()).max(1);
        let max_c = Count::try_from(max).unwrap_or(Count::MAX);
        let ts = left.map(common::timespec);
        let ts_ptr = common::timespec_ptr(&ts);
        buf.clear();
        // SAFETY: no changelist; `buf` has room for `max` events (max <= capacity); `ts_ptr`
        // is null or points to a live timespec; `kq` is open (invariant).
        let n = cvt(unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                std::ptr::null(),
                0,
                buf.as_mut_ptr(),
                max_c,
                ts_ptr,
            )
        })?;
        // SAFETY: the kernel initialised the first `n` entries, and `n <= max <= capacity`.
        unsafe { buf.set_len(n.unsigned_abs() as usize) };

        let mut notified = false;
        let mut table = self.table();
        table.round += 1;
        let round = table.round;
        for ev in buf.iter() {
            if self.is_wake(ev) {
                self.wake.reset();
                notified = true;
                continue;
            }
            let Ok(fd) = RawFd::try_from(ev.ident) else {
                continue;
            };
            // An fd deregistered since the kernel queued its event is not reported.
            let Some(entry) = table.fds.get_mut(&fd) else {
                continue;
            };
            let ready = ready_from(ev);
            if entry.round == round {
                // The fd's other filter, already reported in this batch.
                events.merge_at(entry.slot, ready);
            } else if entry.armed && events.remaining() > 0 {
                entry.round = round;
                entry.slot = events.len();
                entry.armed = entry.mode != Mode::Oneshot;
                events.push(entry.token, ready);
            }
        }
        Ok(Round { notified })
    }

    /// Whether `ev` is the notifier's wake-up.
    fn is_wake(&self, ev: &libc::kevent) -> bool {
        #[cfg(any(
            target_vendor = "apple",
            target_os = "freebsd",
            target_os = "dragonfly"
        ))]
        if ev.filter == libc::EVFILT_USER {
            return true;
        }
        let wake_fd = self.wake.fd();
        ev.filter == libc::EVFILT_READ
            && wake_fd.is_some()
            && RawFd::try_from(ev.ident).ok() == wake_fd
    }
}

impl Entry {
    fn new(token: u64, interest: Interest, mode: Mode) -> Self {
        Self {
            token,
            interest,
            mode,
            armed: true,
            round: 0,
            slot: 0,
        }
    }
}

/// Triggers the notifier's `EVFILT_USER` event on the kqueue `kq` (called by
/// [`Notifier::notify`]; `kq` is kept open by the notifier's `Arc<OwnedFd>`).
#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly"
))]
pub(crate) fn trigger_user(kq: RawFd) -> io::Result<()> {
    let mut changes = Changes::default();
    changes.push_raw(WAKE_IDENT, libc::EVFILT_USER, 0, libc::NOTE_TRIGGER);
    submit(kq, changes.as_slice())
}

/// The notifier: `EVFILT_USER` (`EV_CLEAR`: one report per trigger) on the kqueue itself.
#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly"
))]
fn new_wake(kq: &Arc<OwnedFd>) -> io::Result<Receiver> {
    let mut changes = Changes::default();
    changes.push_raw(
        WAKE_IDENT,
        libc::EVFILT_USER,
        libc::EV_ADD | libc::EV_CLEAR,
        0,
    );
    submit(kq.as_raw_fd(), changes.as_slice())?;
    Ok(Receiver::new_user(Arc::clone(kq)))
}

/// kqueue has no filter for priority (out-of-band) data: [`Interest::PRIORITY`] is
/// `Unsupported` rather than silently never reported.
fn refuse_priority(interest: Interest) -> io::Result<()> {
    if interest.contains(Interest::PRIORITY) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kqueue cannot watch for priority data (Interest::PRIORITY)",
        ));
    }
    Ok(())
}

/// The notifier: a pipe whose read end is watched (level-triggered) with `EVFILT_READ`.
#[cfg(not(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly"
)))]
fn new_wake(kq: &Arc<OwnedFd>) -> io::Result<Receiver> {
    let wake = Receiver::new_fd()?;
    let fd = wake.fd().expect("pipe notifier");
    let mut changes = Changes::default();
    changes.push(fd, libc::EVFILT_READ, libc::EV_ADD);
    submit(kq.as_raw_fd(), changes.as_slice())?;
    Ok(wake)
}

/// An all-zero kevent: null `udata`, zero `data` and, on FreeBSD 12+, zero `ext`.
fn zeroed_kevent() -> libc::kevent {
    // SAFETY: kevent is plain data (integers and a pointer); all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// A changelist of at most [`MAX_CHANGES`] kevents, on the stack.
struct Changes {
    list: [libc::kevent; MAX_CHANGES],
    len: usize,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            list: [zeroed_kevent(); MAX_CHANGES],
            len: 0,
        }
    }
}

impl Changes {
    /// Adds a change for the fd `fd` (non-negative: checked by the caller).
    fn push(&mut self, fd: RawFd, filter: Filter, flags: Flags) {
        self.push_raw(fd.unsigned_abs() as libc::uintptr_t, filter, flags, 0);
    }

    fn push_raw(&mut self, ident: libc::uintptr_t, filter: Filter, flags: Flags, fflags: u32) {
        let ev = &mut self.list[self.len];
        ev.ident = ident;
        ev.filter = filter;
        ev.flags = flags;
        ev.fflags = fflags;
        self.len += 1;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn as_slice(&self) -> &[libc::kevent] {
        &self.list[..self.len]
    }
}

/// Applies `changes` (at most [`MAX_CHANGES`]) to the kqueue `kq`, each with `EV_RECEIPT`,
/// and checks each change's receipt (they come back in changelist order, one per change).
/// `ENOENT` from a delete and `EPIPE` from an add are ignored (see the module's platform
/// notes).
fn submit(kq: RawFd, changes: &[libc::kevent]) -> io::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut list = [zeroed_kevent(); MAX_CHANGES];
    let mut receipts = [zeroed_kevent(); MAX_CHANGES];
    let n = changes.len().min(MAX_CHANGES);
    for (slot, change) in list.iter_mut().zip(changes) {
        *slot = *change;
        slot.flags |= libc::EV_RECEIPT;
    }
    let n_c = n as Count; // n <= MAX_CHANGES
    let zero_ts = common::timespec(Duration::ZERO);
    // SAFETY: `list` holds `n` initialised changes and `receipts` has room for `n` events;
    // `zero_ts` lives across the call; `kq` is open (the caller's invariant). With EV_RECEIPT
    // on every change the kernel stores one receipt per change and no pending event.
    let ret =
        cvt(unsafe { libc::kevent(kq, list.as_ptr(), n_c, receipts.as_mut_ptr(), n_c, &zero_ts) });
    let stored = match ret {
        Ok(stored) => stored.unsigned_abs() as usize,
        // FreeBSD's kevent(2): on EINTR "all changes in the changelist have been applied".
        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
        Err(e) => return Err(e),
    };
    for (receipt, change) in receipts.iter().zip(&list).take(stored.min(n)) {
        if receipt.flags & libc::EV_ERROR == 0 || receipt.data == 0 {
            continue;
        }
        let errno = i32::try_from(receipt.data).unwrap_or(libc::EINVAL);
        let ignored = (errno == libc::ENOENT && change.flags & libc::EV_DELETE != 0)
            || (errno == libc::EPIPE && change.flags & libc::EV_ADD != 0);
        if !ignored {
            return Err(io::Error::from_raw_os_error(errno));
        }
    }
    Ok(())
}

/// The two filters and whether `interest` wants each.
fn filters(interest: Interest) -> [(bool, Filter); 2] {
    [
        (interest.contains(Interest::READABLE), libc::EVFILT_READ),
        (interest.contains(Interest::WRITABLE), libc::EVFILT_WRITE),
    ]
}

fn mode_flags(mode: Mode) -> Flags {
    match mode {
        Mode::Level => 0,
        Mode::Oneshot => libc::EV_DISPATCH,
        Mode::Edge => libc::EV_CLEAR,
    }
}

fn ready_from(ev: &libc::kevent) -> Ready {
    let mut r = Ready::empty();
    if ev.filter == libc::EVFILT_READ {
        r |= Ready::READABLE;
    }
    if ev.filter == libc::EVFILT_WRITE {
        r |= Ready::WRITABLE;
    }
    if ev.flags & libc::EV_EOF != 0 {
        r |= Ready::HUP;
        if ev.fflags != 0 {
            r |= Ready::ERROR;
        }
    }
    if ev.flags & libc::EV_ERROR != 0 {
        r |= Ready::ERROR;
    }
    r
}
