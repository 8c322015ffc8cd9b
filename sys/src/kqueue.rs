//! kqueue(2), for macOS, iOS, FreeBSD, NetBSD, OpenBSD and DragonFly.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::common::{self, Round};
use crate::fdmap::FdMap;
use crate::notify::Receiver;
use crate::registry;
use crate::syscall::{cvt, cvt_retry};
use crate::{Events, Interest, Mode, Notifier, Poller, Ready};

// The C types of `struct kevent`'s fields and of kevent(2)'s counts differ between the BSDs
// (see each OS's <sys/event.h>): NetBSD uses `uint32_t` filter and flags and `size_t` counts,
// the others `short`/`u_short` and `int`. `udata` (a pointer, an integer on old NetBSD) only
// ever carries a registration's generation (see `Entry::gen`), cast with `as _`, and is never
// dereferenced; every kevent starts zeroed.
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
/// separate read and write reports merged), an `EVFILT_USER` notifier on macOS, iOS, FreeBSD
/// and DragonFly (a pipe on NetBSD and OpenBSD).
///
/// # Platform notes
///
/// * Timeouts: `kevent(2)` takes a `timespec`, so waits keep nanosecond precision. One
///   `kevent` call blocks at most 24 hours (XNU fails with `EINVAL` for a `tv_sec` above
///   `INT32_MAX`); a longer wait goes on in further calls until its deadline.
/// * kqueue watches reading and writing with two separate filters (`EVFILT_READ`,
///   `EVFILT_WRITE`) and reports them as separate kernel events; this backend merges the two
///   reports of one fd in one wait into one [`Event`](crate::Event).
/// * Tokens are kept in the backend's registered-fd table, not in the kernel's `udata`, which
///   is pointer-sized (32 bits on some BSD targets) while tokens are `u64`. The table also makes
///   `AlreadyExists`/`NotFound` match epoll (kqueue itself would silently re-add or say
///   `ENOENT` per filter). `udata` carries the registration's generation instead (set by
///   every `EV_ADD`, which also updates an existing filter's), so a report the kernel made
///   before a [`modify`](Poller::modify) or a re-registration of the number from another
///   thread, and that a wait takes from the kernel after it, is dropped rather than
///   reported with the new token (or disarming a new Oneshot registration).
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
/// * The backend needs a kernel with `EV_RECEIPT` and `EV_DISPATCH` (mio relies on
///   `EV_RECEIPT` too). Changes are submitted with `EV_RECEIPT`: the kernel applies every
///   change of the list, even after one fails, stores one receipt (`EV_ERROR`, the errno or 0
///   in `data`) per change in changelist order, and then returns without consuming a pending
///   event. Each receipt's count, flag, ident and filter are checked: a kernel that ignores
///   `EV_RECEIPT` (old NetBSD) is `Unsupported`, so [`new`](Poller::new) fails there rather
///   than misreading events as receipts. A change list interrupted by a signal (`EINTR`) is
///   submitted again, which is harmless. Only one error is ignored: `ENOENT` from deleting a
///   filter the kernel does not hold.
/// * `EVFILT_WRITE` on a pipe whose read end is closed: FreeBSD and DragonFly refuse it with
///   `EPIPE` and hold no filter, so [`register`](Poller::register) (or a `modify` that adds
///   the filter) fails with [`BrokenPipe`](io::ErrorKind::BrokenPipe) (other BSDs may refuse
///   it with another errno, returned as it is); macOS attaches it and reports `EV_EOF`.
/// * A failed change leaves the kernel as the table says. A failed `register` deletes both
///   filters of the fd (errors ignored) and records nothing; a failed `modify` keeps the old
///   registration and puts its filters back (deletes both, re-adds the old ones in the old
///   mode, disabled for a disarmed Oneshot; errors ignored, so a filter the kernel refuses
///   again stays missing); `deregister` deletes both filters whatever the interest was. A
///   filter left behind for an fd without an entry would make every wait return at once
///   (its reports are dropped) while it is ready. These cost a second `kevent` call only on
///   failure.
/// * `EV_EOF` is [`Ready::HUP`]; `EV_EOF` with a non-zero `fflags` (the socket error) or
///   `EV_ERROR` is [`Ready::ERROR`]. With an empty interest no filter is registered, so such
///   an fd reports nothing (epoll would still report `EPOLLERR`/`EPOLLHUP`).
/// * The notifier is an `EVFILT_USER` event triggered with `NOTE_TRIGGER` on macOS, iOS,
///   FreeBSD and DragonFly. On NetBSD and OpenBSD it is a non-blocking pipe watched with
///   `EVFILT_READ`: the libc crate defines `EVFILT_USER` there too, but those systems gained
///   the filter late (OpenBSD in 2025) and an older kernel refuses it, and the backend picks
///   its notifier at build time without probing the running kernel. The notifier shares the
///   kqueue fd through an `Arc`, so a [`Notifier`] that outlives the poller never triggers a
///   reused fd number.
/// * Concurrent waits serialise: a wait holds the event buffer's lock for its whole `kevent`
///   call, so a second thread's wait (even with a zero timeout) blocks until the first
///   returns. Registrations do not wait for it.
/// * Closing an fd drops its knotes, but not its entry in the table: deregister before
///   closing (as the [`Poller`] docs ask), or a new fd that reuses the number is
///   `AlreadyExists` (epoll forgets a closed fd by itself).
/// * kqueue fds are not inherited across `fork(2)`; the fd is also close-on-exec.
pub struct Kqueue {
    /// Invariant: a kqueue this value owns, shared only with this poller's notifier (which
    /// triggers `EVFILT_USER` on it), so it stays open while either lives.
    kq: Arc<OwnedFd>,
    /// The registered fds. register/modify/deregister hold the lock across their kevent calls
    /// (a failed change's roll-back included), so the table and the kernel's knotes change
    /// together.
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
    fds: FdMap<Entry>,
    /// The last generation handed out ([`Entry::gen`]; never 0, which is a zeroed
    /// kevent's `udata`).
    gen: usize,
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
    /// Set by each register/modify, and in the `udata` of the filters they add: a kernel
    /// event with another is from an earlier registration (an equal one after a wrap of
    /// `usize` is as unlikely as it is harmless: one extra report).
    gen: usize,
    /// The batch in which this fd was last reported, and the index of that event.
    round: u64,
    slot: usize,
}

/// `Vec<libc::kevent>`, which is not `Send` because `kevent::udata` is a raw pointer.
struct KeventBuf(Vec<libc::kevent>);

// SAFETY: `udata` only ever holds an integer (a registration's generation, or 0) that is
// never dereferenced; the buffer is plain data owned by the poller and only touched under its
// mutex.
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
                fds: FdMap::new(),
                gen: 0,
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
        if table.fds.contains_key(fd) || Some(fd) == self.wake.fd() {
            return Err(common::already_exists(fd));
        }
        let gen = table.next_gen();
        let mut changes = Changes::default();
        for (want, filter) in filters(interest) {
            if want {
                changes.push_gen(fd, filter, libc::EV_ADD | mode_flags(mode), gen);
            }
        }
        if changes.is_empty() {
            // No filter to add, so no kevent to tell an fd that is not open: ask fcntl.
            // SAFETY: fcntl with F_GETFD takes only integers; a bad fd is EBADF.
            cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
        } else if let Err(e) = submit(self.kq.as_raw_fd(), changes.as_slice()) {
            // The kernel applies every change of a list, so the others took effect: delete
            // both filters (best effort), so it holds none for an fd without an entry.
            let mut undo = Changes::default();
            undo.push_deletes(fd);
            let _ = submit(self.kq.as_raw_fd(), undo.as_slice());
            return Err(e);
        }
        table.fds.insert(fd, Entry::new(token, interest, mode, gen));
        Ok(())
    }

    fn modify(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        common::check_registration(fd, token, mode, true)?;
        refuse_priority(interest)?;
        let mut table = self.table();
        let old = match table.fds.get(fd) {
            Some(entry) => *entry,
            None => return Err(common::not_found(fd)),
        };
        let gen = table.next_gen();
        let mut changes = Changes::default();
        for ((had, filter), (want, _)) in filters(old.interest).into_iter().zip(filters(interest)) {
            // Delete before (re-)adding: a changed mode needs a new knote.
            if had && (!want || old.mode != mode) {
                changes.push(fd, filter, libc::EV_DELETE);
            }
            if want {
                // EV_ENABLE re-arms a filter EV_DISPATCH disabled; EV_ADD re-checks readiness
                // (and sets the new generation).
                changes.push_gen(
                    fd,
                    filter,
                    libc::EV_ADD | libc::EV_ENABLE | mode_flags(mode),
                    gen,
                );
            }
        }
        if let Err(e) = submit(self.kq.as_raw_fd(), changes.as_slice()) {
            // The kernel applies every change of a list, so the others took effect: put the
            // old entry's filters back (the table keeps it). Best effort: a filter the kernel
            // refuses again stays missing.
            let mut restore = Changes::default();
            restore.push_deletes(fd);
            // A disarmed Oneshot entry reports nothing until `modify`: keep its knotes quiet.
            let disable = if old.mode == Mode::Oneshot && !old.armed {
                libc::EV_DISABLE
            } else {
                0
            };
            for (had, filter) in filters(old.interest) {
                if had {
                    let flags = libc::EV_ADD | mode_flags(old.mode) | disable;
                    restore.push_gen(fd, filter, flags, old.gen);
                }
            }
            let _ = submit(self.kq.as_raw_fd(), restore.as_slice());
            return Err(e);
        }
        table.fds.insert(fd, Entry::new(token, interest, mode, gen));
        Ok(())
    }

    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        common::check_fd(fd)?;
        let mut table = self.table();
        table.fds.remove(fd).ok_or_else(|| common::not_found(fd))?;
        // Both filters, whatever the entry's interest: no filter the kernel still holds
        // (from a failed change) outlives the entry. The one missing is ENOENT, ignored.
        let mut changes = Changes::default();
        changes.push_deletes(fd);
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
        // Capped: XNU's kevent fails with EINVAL for tv_sec > INT32_MAX; `wait_loop` waits
        // again for the rest.
        let ts = registry::round_timeout(left).map(common::timespec);
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
        #[cfg(test)]
        tests::after_kevent();

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
            // An fd deregistered since the kernel queued its event is not reported, nor one
            // registered anew or modified since (another thread's call while this wait was
            // in `kevent`).
            let Some(entry) = table.fds.get_mut(fd).filter(|e| ev.udata as usize == e.gen) else {
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

impl Table {
    /// A new generation for a register or modify.
    fn next_gen(&mut self) -> usize {
        self.gen = self.gen.wrapping_add(1).max(1);
        self.gen
    }
}

impl Entry {
    fn new(token: u64, interest: Interest, mode: Mode, gen: usize) -> Self {
        Self {
            token,
            interest,
            mode,
            armed: true,
            gen,
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

    /// [`push`](Self::push) with `gen` in the change's `udata` (see [`Entry::gen`]).
    fn push_gen(&mut self, fd: RawFd, filter: Filter, flags: Flags, gen: usize) {
        self.push(fd, filter, flags);
        // An integer in a pointer-typed field (an integer one on old NetBSD): never
        // dereferenced, by the kernel or here.
        self.list[self.len - 1].udata = gen as _;
    }

    fn push_raw(&mut self, ident: libc::uintptr_t, filter: Filter, flags: Flags, fflags: u32) {
        let ev = &mut self.list[self.len];
        ev.ident = ident;
        ev.filter = filter;
        ev.flags = flags;
        ev.fflags = fflags;
        self.len += 1;
    }

    /// Adds `EV_DELETE` of both filters of the fd `fd`.
    fn push_deletes(&mut self, fd: RawFd) {
        for (_, filter) in filters(Interest::READABLE | Interest::WRITABLE) {
            self.push(fd, filter, libc::EV_DELETE);
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn as_slice(&self) -> &[libc::kevent] {
        &self.list[..self.len]
    }
}

/// Applies `changes` (at most [`MAX_CHANGES`]) to the kqueue `kq`, each with `EV_RECEIPT`,
/// and checks each change's receipt. `ENOENT` from a delete is ignored (see the module's
/// platform notes); any other error of a change is returned (the first, in changelist order).
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
    // Relied on (FreeBSD, DragonFly, OpenBSD, NetBSD with EV_RECEIPT, XNU): with EV_RECEIPT on
    // every change and room for `n` events, the kernel applies every change, stores one
    // receipt per change in changelist order and returns without scanning for pending
    // events. `check_receipts` verifies the count and each receipt. EINTR: submitted again,
    // which is harmless (EV_ADD of a filter that exists updates it, EV_DELETE of one that is
    // gone is ENOENT, ignored; a second NOTE_TRIGGER is one more wake-up).
    let stored = cvt_retry(|| {
        // SAFETY: `list` holds `n` initialised changes; `receipts` has room for `n` events
        // and the kernel stores at most `nevents` = `n`; `zero_ts` lives across the call;
        // `kq` is open (the caller's invariant).
        unsafe { libc::kevent(kq, list.as_ptr(), n_c, receipts.as_mut_ptr(), n_c, &zero_ts) }
    })?;
    check_receipts(&list[..n], &receipts, stored.unsigned_abs() as usize)
}

/// Checks the `stored` receipts in `receipts` for `changes`: exactly one per change, in
/// order, each with `EV_ERROR` and its change's ident and filter; else `Unsupported`. Then
/// returns the first error a receipt carries, except `ENOENT` from a delete.
fn check_receipts(
    changes: &[libc::kevent],
    receipts: &[libc::kevent],
    stored: usize,
) -> io::Result<()> {
    let Some(receipts) = receipts.get(..stored).filter(|r| r.len() == changes.len()) else {
        return Err(no_receipts());
    };
    let pairs = receipts.iter().zip(changes);
    if pairs.clone().any(|(receipt, change)| {
        receipt.flags & libc::EV_ERROR == 0
            || receipt.ident != change.ident
            || receipt.filter != change.filter
    }) {
        return Err(no_receipts());
    }
    for (receipt, change) in pairs {
        if receipt.data == 0 {
            continue;
        }
        let errno = i32::try_from(receipt.data).unwrap_or(libc::EINVAL);
        if errno == libc::ENOENT && change.flags & libc::EV_DELETE != 0 {
            continue;
        }
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(())
}

/// The error of a `kevent` call whose output is not one receipt per change.
fn no_receipts() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "kqueue: the kernel did not honour EV_RECEIPT (not one receipt per change)",
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn change(ident: libc::uintptr_t, filter: Filter, flags: Flags) -> libc::kevent {
        let mut ev = zeroed_kevent();
        ev.ident = ident;
        ev.filter = filter;
        ev.flags = flags;
        ev
    }

    /// The receipt the BSDs store for `change`: `EV_ERROR`, the errno in `data`.
    fn receipt(change: &libc::kevent, errno: i32) -> libc::kevent {
        let mut ev = *change;
        ev.flags = libc::EV_ERROR;
        ev.data = errno as _;
        ev
    }

    #[test]
    fn receipts_are_checked_one_per_change() {
        let changes = [
            change(5, libc::EVFILT_READ, libc::EV_DELETE),
            change(5, libc::EVFILT_WRITE, libc::EV_ADD),
        ];
        let ok = [receipt(&changes[0], 0), receipt(&changes[1], 0)];
        check_receipts(&changes, &ok, 2).unwrap();
        // ENOENT from a delete is ignored; EPIPE from an add is not.
        let r = [
            receipt(&changes[0], libc::ENOENT),
            receipt(&changes[1], libc::EPIPE),
        ];
        let e = check_receipts(&changes, &r, 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        let unsupported = |receipts: &[libc::kevent], stored| {
            check_receipts(&changes, receipts, stored)
                .unwrap_err()
                .kind()
                == io::ErrorKind::Unsupported
        };
        // Too few, no EV_ERROR (a pending event), another ident or filter.
        assert!(unsupported(&ok, 1));
        let mut event = ok;
        event[1].flags = 0;
        assert!(unsupported(&event, 2));
        let mut other = ok;
        other[0].ident = 6;
        assert!(unsupported(&other, 2));
        let swapped = [ok[1], ok[0]];
        assert!(unsupported(&swapped, 2));
    }

    /// A report the kernel made for an earlier registration and that a wait takes from the
    /// kernel after another thread's `modify` (here: the hook between the wait's `kevent`
    /// and its table lookup) is dropped: not reported with the new token, and the new
    /// Oneshot registration stays armed for its own report.
    #[test]
    fn a_report_of_the_old_registration_is_dropped() {
        let p = std::sync::Arc::new(Kqueue::new().unwrap());
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        p.register(fd, 1, Interest::WRITABLE, Mode::Oneshot)
            .unwrap();
        let p2 = p.clone();
        AFTER_KEVENT.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                p2.modify(fd, 2, Interest::READABLE, Mode::Oneshot).unwrap();
            }));
        });
        let mut events = Events::with_capacity(8);
        // The kernel reports writability (token 1's); the modify comes before the lookup.
        assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
        AFTER_KEVENT.with(|h| h.borrow_mut().take());
        std::io::Write::write_all(&mut &b, b"x").unwrap();
        assert_eq!(
            p.wait(&mut events, Some(Duration::from_secs(5))).unwrap(),
            1
        );
        let ev = events.iter().next().unwrap();
        assert_eq!((ev.token(), ev.ready()), (2, Ready::READABLE));
        p.deregister(fd).unwrap();
    }

    thread_local! {
        /// Run by a wait of this thread between its `kevent` and its table lookup.
        static AFTER_KEVENT: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
            std::cell::RefCell::new(None);
    }

    pub(super) fn after_kevent() {
        AFTER_KEVENT.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f();
            }
        });
    }

    /// FreeBSD and DragonFly refuse `EVFILT_WRITE` on a pipe whose reader is gone with
    /// `EPIPE` (other BSDs with their own errno); macOS accepts it. Either way nothing is left
    /// half-registered.
    #[test]
    fn write_interest_on_a_widowed_pipe() {
        let p = Kqueue::new().unwrap();
        let (r, w) = crate::notify::pipe_nonblocking().unwrap();
        drop(r);
        let fd = w.as_raw_fd();
        match p.register(fd, 1, Interest::READABLE | Interest::WRITABLE, Mode::Level) {
            Ok(()) => p.deregister(fd).unwrap(),
            Err(e) => {
                if cfg!(any(target_os = "freebsd", target_os = "dragonfly")) {
                    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
                }
                let e = p.deregister(fd).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::NotFound);
            }
        }
        // No filter is left in the kernel: nothing pending, not even unreported.
        let mut out = [zeroed_kevent(); 4];
        let zero = common::timespec(Duration::ZERO);
        // SAFETY: no changelist; `out` has room for 4 events; `zero` lives across the call;
        // `p.kq` is open.
        let n = cvt(unsafe {
            libc::kevent(
                p.kq.as_raw_fd(),
                std::ptr::null(),
                0,
                out.as_mut_ptr(),
                4,
                &zero,
            )
        })
        .unwrap();
        assert_eq!(n, 0);
    }
}
