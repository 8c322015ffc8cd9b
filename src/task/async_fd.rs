//! [`Async<T>`]: an fd-backed I/O object driven by the loop, on tokio's readiness model.
//!
//! Each direction (read, write) of a source caches its *readiness*: whether the last thing
//! known about it is "ready" (the reactor reported it, or nothing is known yet) or "would
//! block". An operation ([`read_with`](Async::read_with), `poll_read`...) runs the I/O right
//! away while the direction is ready; when the I/O returns `WouldBlock` it clears the
//! readiness and parks the task (stores its waker); the fd's handler sets the readiness again
//! and wakes the task when the reactor reports the direction.
//!
//! * Where the poller has [`Mode::Edge`] (epoll, kqueue) the fd is registered once,
//!   edge-triggered, with an empty interest; a direction is added to it on its first wait
//!   (one `modify` per direction in the source's life, none for a direction that never
//!   waits). From then on waiting costs no system call at all: the kernel reports each new
//!   edge (new data, freed buffer space).
//! * Elsewhere (poll, select, and io_uring, whose re-arm is queued for the next wait and
//!   whose priority reports are not exact: see [`IoSource::short_io_drains`]) it is
//!   registered in [`Mode::Oneshot`] with an empty interest, and a task that parks *arms*
//!   it for its direction (one `modify`); the handler re-arms only a direction still
//!   waited on.
//!
//! A lost wake-up would need a report to arrive between the `WouldBlock` and the clearing of
//! the readiness: each direction counts reports (`tick`), and an operation clears the
//! readiness only if no report came since it read the readiness (tokio's `clear_readiness`
//! with its tick). On one thread nothing runs in between today, but the check keeps the
//! invariant local: readiness is cleared only on evidence newer than the last report.
//!
//! Nothing polls in a loop, and a wait allocates nothing.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixDatagram, UnixListener, UnixStream};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, UnixAddr};

use super::{add_source, current, IoLoop, LoopOps, Poller};
use crate::{Interest, Mode, Ready};

/// One direction (read or write) of a source: its cached readiness, its waiting task and
/// its report count.
struct Direction {
    /// Ready as far as we know: set by a report (and at creation: nothing is known, so the
    /// first operation tries the I/O), cleared when the I/O returned `WouldBlock`.
    ready: Cell<bool>,
    /// The waiting task's waker while `parked`; kept after it woke the task, so that the
    /// task's next wait finds its own waker here ([`Waker::will_wake`]) and stores no clone
    /// (a clone and a drop are two atomic operations on the waker's count per report). A
    /// `Cell`, not a `RefCell`: a waker is only ever moved in or out, so none is dropped or
    /// woken while anything is borrowed.
    waker: Cell<Option<Waker>>,
    /// Who waits for this direction ([`PRIMARY`]: the task of `waker`; [`OTHERS`]: the tasks
    /// of `others`): the next report wakes them.
    parked: Cell<Waiting>,
    /// The wakers of further tasks waiting for this direction at the same time (tasks that
    /// share one `Async`, such as several accepting on one listener): the next report wakes
    /// them all, and those that find nothing wait again. A task whose wait was dropped
    /// meanwhile gets a spurious wake-up then. A task is listed once however often it waits.
    /// Woken and dropped with nothing borrowed (moved out first).
    others: RefCell<Vec<Waker>>,
    /// Bumped each time the reactor reports this direction ready.
    tick: Cell<u64>,
    /// For [`Async::readable`]-style waits: the tick when the current wait began (`None`: no
    /// such wait in progress).
    start: Cell<Option<u64>>,
}

impl Default for Direction {
    fn default() -> Self {
        Self {
            ready: Cell::new(true),
            waker: Cell::new(None),
            parked: Cell::new(0),
            others: RefCell::new(Vec::new()),
            tick: Cell::new(0),
            start: Cell::new(None),
        }
    }
}

/// Wake-ups run one after another whatever each does: a waker that panics (a foreign
/// executor's) does not keep the later ones from running; the first panic goes on once all
/// have run ([`finish`](Self::finish)).
#[derive(Default)]
struct Wakes(Option<Box<dyn std::any::Any + Send>>);

impl Wakes {
    fn run(&mut self, wake: impl FnOnce()) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(wake)) {
            self.0.get_or_insert(p);
        }
    }

    fn finish(self) {
        if let Some(p) = self.0 {
            resume_unwind(p);
        }
    }
}

/// What [`Direction::fire`] found waiting: nothing, the task of the kept waker
/// ([`PRIMARY`]), further tasks ([`OTHERS`]), or both.
type Waiting = u8;
const PRIMARY: Waiting = 1;
const OTHERS: Waiting = 2;

impl Direction {
    /// A report: marks the direction ready; returns who was waiting (no longer: the caller
    /// wakes them with [`wake`](Self::wake)).
    #[inline]
    fn fire(&self) -> Waiting {
        self.tick.set(self.tick.get().wrapping_add(1));
        self.ready.set(true);
        self.parked.replace(0)
    }

    /// Wakes the tasks [`fire`](Self::fire) found waiting (`who`). Called with nothing
    /// borrowed (a waker may run any code, which may even wait on this direction again or
    /// drop the `Async`).
    #[inline]
    fn wake(&self, who: Waiting, retired: &Cell<bool>) {
        if who == PRIMARY {
            self.wake_primary(retired);
        } else if who != 0 {
            self.wake_all(who, retired);
        }
    }

    /// Wakes the further waiting tasks too (and the kept waker's task if `who` says so). A
    /// waker that panics does not keep the others asleep: all are woken, then the first
    /// panic goes on.
    #[cold]
    #[inline(never)]
    fn wake_all(&self, who: Waiting, retired: &Cell<bool>) {
        let mut others = std::mem::take(&mut *self.others.borrow_mut());
        let mut wakes = Wakes::default();
        if who & PRIMARY != 0 {
            wakes.run(|| self.wake_primary(retired));
        }
        for waker in others.drain(..) {
            wakes.run(|| waker.wake());
        }
        // The list's memory back for the next time, unless new waits made a new list.
        let mut slot = self.others.borrow_mut();
        if slot.capacity() == 0 && !retired.get() {
            *slot = others;
        }
        drop(slot);
        wakes.finish();
    }

    /// Wakes the task of the kept waker. The waker is moved out for the call, and put back
    /// afterwards only if the wake-up's code left the slot empty and did not `retire` the
    /// source.
    #[inline]
    fn wake_primary(&self, retired: &Cell<bool>) {
        let Some(waker) = self.waker.take() else {
            return;
        };
        waker.wake_by_ref();
        match self.waker.take() {
            None if !retired.get() => self.waker.set(Some(waker)),
            // A newer wait's waker (kept), or a retired source (which keeps none): ours is
            // dropped, with nothing borrowed.
            newer => {
                self.waker.set(newer);
                drop(waker);
            }
        }
    }

    fn waiting(&self) -> bool {
        self.parked.get() != 0
    }

    /// Parks a task: `waker` is woken by the next report (with every other task waiting).
    #[inline]
    fn set_waker(&self, waker: &Waker) {
        let old = self.waker.take();
        match old {
            Some(old) if old.will_wake(waker) => self.waker.set(Some(old)),
            Some(old) if self.parked.get() & PRIMARY != 0 => {
                // Another task waits already: both are woken by the next report.
                self.waker.set(Some(old));
                self.add_other(waker);
                return;
            }
            // The waker of a task that no longer waits, dropped here with nothing borrowed.
            _ => self.waker.set(Some(waker.clone())),
        }
        self.parked.set(self.parked.get() | PRIMARY);
    }

    /// Lists a further waiting task, once.
    #[cold]
    #[inline(never)]
    fn add_other(&self, waker: &Waker) {
        if self.others.borrow().iter().any(|w| w.will_wake(waker)) {
            return;
        }
        // Cloned with nothing borrowed (a foreign waker's clone runs its own code).
        let waker = waker.clone();
        self.others.borrow_mut().push(waker);
        self.parked.set(self.parked.get() | OTHERS);
    }

    /// Forgets the waiting task of `waker` (its wait failed); other tasks still wait.
    fn clear_waker(&self, waker: &Waker) {
        let old = self.waker.take();
        match old {
            Some(old) if old.will_wake(waker) => {
                self.parked.set(self.parked.get() & !PRIMARY);
                drop(old);
            }
            old => {
                self.waker.set(old);
                let mut others = self.others.borrow_mut();
                let gone = others
                    .iter()
                    .position(|w| w.will_wake(waker))
                    .map(|i| others.swap_remove(i));
                if others.is_empty() {
                    self.parked.set(self.parked.get() & !OTHERS);
                }
                drop(others);
                drop(gone);
            }
        }
    }

    /// Moves the wakers out (for the caller to drop with nothing borrowed): nothing waits.
    fn take_wakers(&self) -> (Option<Waker>, Vec<Waker>) {
        self.parked.set(0);
        let others = std::mem::take(&mut *self.others.borrow_mut());
        (self.waker.take(), others)
    }

    /// Back to a new source's state: ready, no wait in progress. The waker is already gone
    /// ([`IoSource::retire`]).
    fn reset(&mut self) {
        debug_assert!(!self.waiting(), "a reused source still has a waiting task");
        debug_assert!(
            self.waker.get_mut().is_none() && self.others.get_mut().is_empty(),
            "a reused source still holds a waker"
        );
        *self.ready.get_mut() = true;
        *self.tick.get_mut() = 0;
        *self.start.get_mut() = None;
    }

    /// The I/O of an operation that saw readiness at `tick` returned `WouldBlock` (or showed
    /// the buffer drained): forget the readiness, unless a report came in the meantime.
    fn clear(&self, tick: u64) {
        if self.tick.get() == tick {
            self.ready.set(false);
        }
    }
}

/// Whether a short read or write shows the kernel buffer drained (read) or filled (write).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ShortIo {
    /// Not checked yet.
    Unknown,
    /// A pipe/FIFO, or a Unix stream socket outside Linux: a short transfer moved all there
    /// was (or all that fit).
    Drains,
    /// Any other stream socket (TCP; Unix on Linux): a short write filled the buffer; a short read
    /// drained it unless the read ended at an urgent mark (the peer sent out-of-band data
    /// with `MSG_OOB`, and the rest of the stream is queued behind the mark). Only a
    /// registration that reports priority data exactly shows when that can happen (see
    /// [`IoSource::short_io_drains`]).
    UrgentAware,
    /// A Unix stream socket with `SO_PASSCRED` set (Linux, Android): a read stops where data
    /// from another writer (another process) begins, with that data still queued, so a
    /// short read shows nothing; a short write still filled the buffer.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    WritesOnly,
    /// Anything else (datagram or seqpacket sockets, terminals in canonical mode...).
    Opaque,
}

/// The reactor-side state of an [`Async`]: shared with the fd's handler.
pub(crate) struct IoSource {
    /// The loop (weak, type-erased). Set when the source is allocated and kept when the
    /// executor reuses it (the sources table is per loop), so neither making nor dropping
    /// an `Async` touches its reference count.
    pub(crate) ops: Rc<dyn LoopOps>,
    pub(crate) fd: RawFd,
    /// The reactor's generation of the registration made for this source
    /// (what `IoLoop::add_registration` returned): a registration of the same fd number with
    /// another generation is not this source's to remove.
    pub(crate) gen: u32,
    /// Registered edge-triggered; else Oneshot.
    pub(crate) edge: Cell<bool>,
    /// Edge, on a poller whose [`Ready::PRIORITY`] is exact
    /// ([`Poller::priority_exact`]): waits for reading ask for
    /// [`Interest::PRIORITY`] too, so that a report shows when urgent data is pending.
    pri: Cell<bool>,
    /// Oneshot: what the registration is armed for right now. Edge: the directions
    /// registered so far (each is added on its first wait, and stays).
    pub(crate) armed: Cell<Interest>,
    read: Direction,
    write: Direction,
    short_io: Cell<ShortIo>,
    /// A short read no longer shows the buffer drained. Set once the reactor has reported
    /// a hang-up or an error (the read side is at end of file, or has an error to return, or
    /// soon will, with no further report to come: the end of file or error is still to be
    /// read), or priority data (a read stops at the urgent mark with the rest of the stream
    /// queued, and no further report to come).
    read_blind: Cell<bool>,
    /// Its `Async` is gone ([`retire`](Self::retire)): the source keeps no waker until it is
    /// [`reset`](Self::reset) for a new registration.
    retired: Cell<bool>,
}

impl IoSource {
    /// A source for `fd`'s registration of generation `gen`, edge-triggered if `edge` (else
    /// Oneshot).
    pub(crate) fn new(ops: Rc<dyn LoopOps>, fd: RawFd, gen: u32, edge: bool, pri: bool) -> Self {
        Self {
            ops,
            fd,
            gen,
            edge: Cell::new(edge),
            pri: Cell::new(pri),
            armed: Cell::new(Interest::empty()),
            read: Direction::default(),
            write: Direction::default(),
            short_io: Cell::new(ShortIo::Unknown),
            read_blind: Cell::new(false),
            retired: Cell::new(false),
        }
    }

    /// Takes the wakers out of a source whose `Async` is going away (its registration is
    /// removed), so that the copy the executor keeps for reuse holds no task. The caller
    /// drops them.
    #[inline]
    pub(crate) fn retire(&self) -> [(Option<Waker>, Vec<Waker>); 2] {
        self.retired.set(true);
        [self.read.take_wakers(), self.write.take_wakers()]
    }

    /// Makes a retired source (its wakers taken) new again for the registration of
    /// generation `gen` of the same fd number on the same loop: as [`new`](Self::new), in
    /// place.
    #[inline]
    pub(crate) fn reset(&mut self, gen: u32, edge: bool, pri: bool) {
        self.gen = gen;
        *self.edge.get_mut() = edge;
        *self.pri.get_mut() = pri;
        *self.armed.get_mut() = Interest::empty();
        self.read.reset();
        self.write.reset();
        *self.short_io.get_mut() = ShortIo::Unknown;
        *self.read_blind.get_mut() = false;
        *self.retired.get_mut() = false;
    }

    /// Called by the fd's handler, with nothing borrowed (it holds its own reference to the
    /// source: the tasks it wakes may drop the `Async`): marks ready the directions `ready`
    /// covers (errors and hang-ups cover both, so the next operation reports them) and wakes
    /// their waiting tasks. In Oneshot mode, first calls `rearm` with the interest still
    /// waited on (if any), for the handler to arm the registration for it again.
    #[inline]
    pub(crate) fn on_ready(&self, ready: Ready, rearm: impl FnOnce(Interest)) {
        let edge = self.edge.get();
        if !edge {
            self.armed.set(Interest::empty());
        }
        let both = ready.intersects(Ready::ERROR | Ready::HUP);
        if both || ready.contains(Ready::PRIORITY) {
            self.read_blind.set(true);
        }
        let mut rest = Interest::empty();
        let (mut wake_read, mut wake_write) = (0, 0);
        if both || ready.intersects(Ready::READABLE | Ready::PRIORITY) {
            wake_read = self.read.fire();
        } else if !edge && self.read.waiting() {
            rest |= Interest::READABLE;
        }
        if both || ready.contains(Ready::WRITABLE) {
            wake_write = self.write.fire();
        } else if !edge && self.write.waiting() {
            rest |= Interest::WRITABLE;
        }
        // Both directions' state is settled before any task runs code.
        if rest.is_empty() {
            self.wake(wake_read, wake_write);
        } else {
            self.rearm_then_wake(rest, rearm, wake_read, wake_write);
        }
    }

    /// [`on_ready`](Self::on_ready) when a direction is still waited on: the registration
    /// is armed for it before any waker runs, so a waker that panics (a foreign executor's)
    /// leaves the other direction's tasks a live registration; and a failed re-arm that
    /// wakes those tasks does not keep the reported direction's from waking. The first
    /// panic goes on once both have run.
    #[cold]
    #[inline(never)]
    fn rearm_then_wake(
        &self,
        rest: Interest,
        rearm: impl FnOnce(Interest),
        read: Waiting,
        write: Waiting,
    ) {
        let mut wakes = Wakes::default();
        wakes.run(|| rearm(rest));
        wakes.run(|| self.wake(read, write));
        wakes.finish();
    }

    /// Wakes the tasks [`Direction::fire`] found waiting in each direction.
    #[inline(always)]
    fn wake(&self, read: Waiting, write: Waiting) {
        if read != 0 && write != 0 {
            self.wake_both(read, write);
        } else if read != 0 {
            self.read.wake(read, &self.retired);
        } else if write != 0 {
            self.write.wake(write, &self.retired);
        }
    }

    /// Both directions: a waker of the read side that panics does not keep the writer
    /// asleep (its direction is no longer marked waiting); the panic goes on after.
    #[cold]
    #[inline(never)]
    fn wake_both(&self, read: Waiting, write: Waiting) {
        let mut wakes = Wakes::default();
        wakes.run(|| self.read.wake(read, &self.retired));
        wakes.run(|| self.write.wake(write, &self.retired));
        wakes.finish();
    }

    /// Wakes the tasks waiting for `dirs` (if any), marking those directions ready, so they
    /// try their operation again and, on `WouldBlock`, wait anew (a failed re-arm: their own
    /// wait then reports the error).
    pub(crate) fn wake_waiting(&self, dirs: Interest) {
        let read = if dirs.contains(Interest::READABLE) {
            self.read.fire()
        } else {
            0
        };
        let write = if dirs.contains(Interest::WRITABLE) {
            self.write.fire()
        } else {
            0
        };
        self.wake(read, write);
    }

    /// Makes sure the registration reports `interest` when it is ready: arms a Oneshot
    /// registration for it; adds it to an Edge registration the first time. `again`: update
    /// the registration even if it covers `interest`, so that an Edge one reports the current
    /// state anew. An update re-checks readiness in the kernel, so a change that happened
    /// before it (after the `WouldBlock`) is reported, not lost.
    fn arm(&self, interest: Interest, again: bool) -> io::Result<()> {
        let armed = self.armed.get();
        if armed.contains(interest) && !again {
            return Ok(());
        }
        let mode = if self.edge.get() {
            Mode::Edge
        } else {
            Mode::Oneshot
        };
        let mut want = armed | interest;
        if self.pri.get() && want.contains(Interest::READABLE) {
            want |= Interest::PRIORITY;
        }
        self.ops.arm(self.fd, self.gen, want, mode)?;
        self.armed.set(want);
        Ok(())
    }

    #[inline]
    fn dir(&self, interest: Interest) -> &Direction {
        if interest == Interest::READABLE {
            &self.read
        } else {
            &self.write
        }
    }

    /// Whether a transfer of `0 < n < len` bytes in direction `interest` shows the buffer
    /// drained (reads) or full (writes), so readiness can be cleared without another
    /// `WouldBlock` round. True for writes on stream sockets and pipes, and for reads on
    /// pipes and stream sockets, which is what tokio relies on for its TCP, Unix stream and
    /// pipe types (`PollEvented::poll_read`/`poll_write`, tokio-rs/tokio#5866): their read
    /// copies until the buffer is empty and their write until it is full, and any later
    /// change makes a new edge. Not for datagram or seqpacket sockets (one message per read)
    /// nor terminals (one line per read in canonical mode), nor reads on a Unix stream socket
    /// with `SO_PASSCRED` set (Linux: a read stops where another writer's data begins).
    /// Checked once per source, on the first short transfer (`fstat`, plus
    /// `getsockopt(SO_TYPE)` and `getsockname` for a socket, and `getsockopt(SO_PASSCRED)`
    /// for a Unix one on Linux).
    ///
    /// Two things end a stream read early with data left and no further edge to come, so
    /// reads infer nothing once the reactor has reported either ([`read_blind`]): an end of
    /// file (or error) that came with the last data (a hang-up or an error report), and an
    /// urgent mark (a priority report: TCP, and Unix stream sockets since Linux 5.15, end a
    /// read at out-of-band data, with the rest queued; tokio hangs there). The kernel
    /// computes a report's priority bit when the wait collects it, and new data after that
    /// makes a new report, so a short read after a report without it did drain the buffer.
    /// That needs exact priority reports: a TCP read infers nothing on an edge-triggered
    /// registration without them (kqueue). A Oneshot registration (poll, select, io_uring)
    /// is checked anew when re-armed, so a wrong inference there costs one more wait, never
    /// a hang.
    ///
    /// [`read_blind`]: Self::read_blind
    #[inline]
    fn short_io_drains(&self, interest: Interest, fd: BorrowedFd<'_>) -> bool {
        let read = interest == Interest::READABLE;
        if read && self.read_blind.get() {
            return false;
        }
        if self.short_io.get() == ShortIo::Unknown {
            self.short_io.set(classify(fd));
        }
        match self.short_io.get() {
            ShortIo::Drains => true,
            ShortIo::UrgentAware => !read || self.pri.get() || !self.edge.get(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            ShortIo::WritesOnly => !read,
            ShortIo::Unknown | ShortIo::Opaque => false,
        }
    }
}

#[cold]
#[inline(never)]
fn classify(fd: BorrowedFd<'_>) -> ShortIo {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType};
    use nix::sys::stat::{fstat, SFlag};
    let Ok(st) = fstat(fd) else {
        return ShortIo::Opaque;
    };
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFIFO {
        return ShortIo::Drains;
    }
    if kind != SFlag::S_IFSOCK
        || !matches!(getsockopt(&fd, sockopt::SockType), Ok(SockType::Stream))
    {
        return ShortIo::Opaque;
    }
    let raw = fd.as_raw_fd();
    match getsockname::<SockaddrStorage>(raw).map(|a| a.family()) {
        // Linux 5.15+ has out-of-band data on Unix stream sockets too.
        Ok(Some(AddressFamily::Unix)) if !cfg!(any(target_os = "linux", target_os = "android")) => {
            ShortIo::Drains
        }
        // `SO_PASSCRED`: the kernel never merges two writers' data in one read.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Ok(Some(AddressFamily::Unix)) if getsockopt(&fd, sockopt::PassCred).unwrap_or(true) => {
            ShortIo::WritesOnly
        }
        Ok(Some(AddressFamily::Unix)) => ShortIo::UrgentAware,
        // TCP only: an SCTP stream socket (also `SOCK_STREAM`) reads one message per call.
        // Where the OS cannot tell, an Internet stream socket is taken for TCP (SCTP stacks
        // are rare there).
        Ok(Some(AddressFamily::Inet | AddressFamily::Inet6))
            if ioloop_sys::is_tcp(fd).unwrap_or(true) =>
        {
            ShortIo::UrgentAware
        }
        _ => ShortIo::Opaque,
    }
}

/// An I/O object (socket, pipe, terminal...) registered on a loop, with futures that wait for
/// it to be readable or writable.
///
/// [`Async::new`] puts the fd in non-blocking mode and registers it on the *current loop*
/// (the one running the calling task; see [`crate::task`]); [`Async::with_loop`] names the
/// loop instead. Operations follow async-io's pattern: try the non-blocking operation, and on
/// `WouldBlock` wait for readiness and try again ([`read_with`](Self::read_with),
/// [`write_with`](Self::write_with)). With the `futures-io` feature (on by default) `Async<T>`
/// and `&Async<T>` implement `AsyncRead`/`AsyncWrite` when `T`/`&T` implement `Read`/`Write`.
/// Their `close` only flushes, as async-io's generic `Async<T>` does: a `T` may share its
/// socket with other holders (a `File` or stdout on a socket), whose writes a `shutdown`
/// would end too. To send the end of a TCP or Unix stream, call
/// `get_ref().shutdown(Shutdown::Write)`, or drop the `Async`.
///
/// Any number of tasks may wait on one `Async` at once (several tasks accepting on one
/// listener, a reader and a writer): a report wakes every task waiting for its direction, and
/// those that find nothing to do wait again. Only [`poll_readable`](Self::poll_readable) and
/// [`poll_writable`](Self::poll_writable), which keep their wait's start in the `Async`, are
/// for one task per direction (as tokio's `poll_read_ready`).
///
/// Through the `futures-io` traits of `&Async<T>` (where `&T: Read`/`Write`, as for std's
/// sockets, pipes and files, which make one system call per call), a read or write on a
/// stream socket or a pipe that moves fewer bytes than asked (a vectored one: than its first
/// non-empty buffer holds) is taken to mean the kernel buffer is drained (or full), as tokio
/// does for its own types, which saves the call that would only return `WouldBlock`.
/// Vectored reads and writes make one `readv`/`writev` where `T` has them (std's types do).
/// `Async<T>`'s own impls infer nothing: a `T` may buffer or cap what one call moves (std's
/// `Stdin` reads through an 8 KiB buffer), and a short read would then leave data in the
/// kernel with no report to come. Implement `Read` for `&T` only if each call is one system
/// call. Reads drop the inference for good once the reactor has reported a hang-up or an
/// error (an end of file that comes with the last data is still read) or priority data:
/// TCP, and Unix stream sockets on Linux 5.15+, end a read early at the urgent mark when the
/// peer sends out-of-band data (`MSG_OOB`), with the rest of the stream queued behind it, so
/// the source asks for [`Interest::PRIORITY`] with its reads. On kqueue, which has no
/// priority reports ([`Poller::priority_exact`]), a TCP read infers nothing (io_uring's are
/// not exact either, but there sources are registered Oneshot, re-armed with each wait,
/// where a wrong inference costs one more wait, never a hang). A few cases still break the
/// inference: a Unix stream read ends early at data that carries file descriptors
/// (`SCM_RIGHTS`) and, with `SO_PASSCRED` or `SO_PASSPIDFD` set, at data from another
/// writer (reads infer nothing on a socket that has `SO_PASSCRED` set when its first short
/// transfer is seen, but one set later, or `SO_PASSPIDFD`, is not seen); a pipe whose
/// writer is in packet mode (`O_DIRECT`, which `pipe2` sets on the write end only) gives one
/// packet per read. Read such a socket or pipe with [`read_with`](Self::read_with) (and
/// `recvmsg` for the fds), which infers nothing from a short read.
///
/// An `Async` belongs to the loop's thread (it is not `Send`). Dropping it removes the fd's
/// handler, then closes the fd. It keeps only a weak reference to its loop: if the loop is
/// dropped first, its waits fail with `NotConnected` and dropping it just closes the fd.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use ioloop::{Async, IoLoop};
///
/// let lp = IoLoop::new()?;
/// lp.block_on(async {
///     let (a, b) = Async::<UnixStream>::pair()?;
///     let reader = ioloop::spawn(async move {
///         let mut buf = [0; 5];
///         let n = b.read_with(|mut s| s.read(&mut buf)).await?;
///         std::io::Result::Ok(buf[..n].to_vec())
///     });
///     a.write_with(|mut s| s.write(b"hello")).await?;
///     assert_eq!(reader.await.unwrap()?, b"hello");
///     std::io::Result::Ok(())
/// })??;
/// # std::io::Result::Ok(())
/// ```
pub struct Async<T: AsFd> {
    /// Also how the `Async` reaches its loop ([`IoSource::ops`]).
    source: Rc<IoSource>,
    /// `None` only after `into_inner` (and during drop).
    io: Option<T>,
}

// `Async` never pins its `T`: every method reaches it through `&`/`&mut`.
impl<T: AsFd> Unpin for Async<T> {}

fn no_loop() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "no current IoLoop: create Async values inside a task or block_on, or use Async::with_loop",
    )
}

impl<T: AsFd> Async<T> {
    /// Puts `io`'s fd in non-blocking mode and registers it on the current loop.
    ///
    /// # Errors
    ///
    /// `NotConnected` outside a running loop (use [`with_loop`](Self::with_loop) there), and
    /// what registering reports: `AlreadyExists` if the fd has a handler on that loop,
    /// `EPERM` for a regular file on epoll, `InvalidInput` for an fd >= `FD_SETSIZE` on select.
    pub fn new(io: T) -> io::Result<Self> {
        Self::make_on_current(|| Ok(io))
    }

    /// Puts `io`'s fd in non-blocking mode and registers it on `lp`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), except for `NotConnected`.
    pub fn with_loop<P: Poller>(lp: &IoLoop<P>, io: T) -> io::Result<Self> {
        ioloop_sys::set_nonblocking(io.as_fd())?;
        Self::register_on(lp, io)
    }

    /// Registers `io` on the current loop as it is: the caller has already put its fd in
    /// non-blocking mode (as mio requires of its sources), which saves the system call
    /// [`new`](Self::new) spends on that. A fd left blocking makes operations on it block the
    /// whole loop; nothing worse.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop::{Async, IoLoop};
    /// use std::os::unix::net::UnixStream;
    ///
    /// let lp = IoLoop::new()?;
    /// let (a, b) = UnixStream::pair()?;
    /// a.set_nonblocking(true)?;
    /// let a = Async::with_loop_nonblocking(&lp, a)?;
    /// std::io::Write::write_all(&mut &b, b"hi")?;
    /// let read = async { a.read_with(|s| std::io::Read::read(&mut &*s, &mut [0; 8])).await };
    /// let n = lp.block_on(read)??;
    /// assert_eq!(n, 2);
    /// # std::io::Result::Ok(())
    /// ```
    pub fn new_nonblocking(io: T) -> io::Result<Self> {
        let ops = current().ok_or_else(no_loop)?;
        Self::register(&*ops, io)
    }

    /// [`new_nonblocking`](Self::new_nonblocking) on `lp`.
    ///
    /// # Errors
    ///
    /// As [`with_loop`](Self::with_loop).
    #[inline]
    pub fn with_loop_nonblocking<P: Poller>(lp: &IoLoop<P>, io: T) -> io::Result<Self> {
        Self::register_on(lp, io)
    }

    /// Registers `io`, whose fd is already non-blocking, on the loop `ops` reaches.
    fn register(ops: &dyn LoopOps, io: T) -> io::Result<Self> {
        let source = ops.add_source(io.as_fd().as_raw_fd())?;
        Ok(Self {
            source,
            io: Some(io),
        })
    }

    /// Makes the I/O object with `make` and registers it (non-blocking) on the current loop,
    /// which is looked for first: outside a loop nothing is made (no socket file is bound).
    /// ([`new`](Self::new) is this with a `make` that returns the object it was given.)
    #[inline]
    fn make_on_current(make: impl FnOnce() -> io::Result<T>) -> io::Result<Self> {
        let ops = current().ok_or_else(no_loop)?;
        let io = make()?;
        ioloop_sys::set_nonblocking(io.as_fd())?;
        Self::register(&*ops, io)
    }

    /// [`register`](Self::register) on a loop of known type: no dynamic call, and no weak
    /// reference to upgrade.
    #[inline]
    fn register_on<P: Poller>(lp: &IoLoop<P>, io: T) -> io::Result<Self> {
        let source = add_source(lp, io.as_fd().as_raw_fd())?;
        Ok(Self {
            source,
            io: Some(io),
        })
    }

    /// The I/O object.
    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("Async used after into_inner")
    }

    /// The I/O object, mutably. Do not replace or close its fd: the loop keeps watching the
    /// fd number until the `Async` is dropped.
    pub fn get_mut(&mut self) -> &mut T {
        self.io.as_mut().expect("Async used after into_inner")
    }

    /// Removes the fd from the loop and gives the I/O object back (still non-blocking).
    ///
    /// # Errors
    ///
    /// What removing the handler reports (the poller's `deregister` failed: rare, such as
    /// `ENOMEM`). The I/O object is then dropped, as async-io does: its fd is closed, which
    /// also ends what the kernel still held of the registration, whereas an fd handed back
    /// still registered would be reported to a loop that no longer has its handler.
    pub fn into_inner(mut self) -> io::Result<T> {
        let io = self.io.take().expect("Async used after into_inner");
        self.source.ops.remove_source(&self.source)?;
        Ok(io)
    }

    /// Waits until the reactor reports the fd readable (or at end of file, or in error)
    /// after the wait began. May be spurious: the next read can still return `WouldBlock`.
    ///
    /// This is a fresh report, not the cached readiness the `*_with` operations use, so a
    /// loop of `readable().await` and a raw read never spins. It costs one registration
    /// update (`modify`) when the fd may be ready already (on edge-triggered pollers the
    /// update makes the kernel report the current state again); prefer
    /// [`read_with`](Self::read_with), which needs none.
    ///
    /// # Errors
    ///
    /// What updating the registration reports; `NotConnected` if the loop is gone.
    pub async fn readable(&self) -> io::Result<()> {
        let mut start = None;
        poll_fn(|cx| poll_dir(&self.source, Interest::READABLE, &mut start, cx)).await
    }

    /// Waits until the fd is reported writable (or in error). May be spurious.
    ///
    /// # Errors
    ///
    /// As [`readable`](Self::readable).
    pub async fn writable(&self) -> io::Result<()> {
        let mut start = None;
        poll_fn(|cx| poll_dir(&self.source, Interest::WRITABLE, &mut start, cx)).await
    }

    /// Polls for readability (for hand-written futures and `poll_*` methods): `Ready` once
    /// the reactor has reported the fd readable since the wait began (see
    /// [`readable`](Self::readable)).
    ///
    /// The wait's start is kept in the `Async`, one per direction: one task at a time may
    /// wait through `poll_readable` (the first poll that sees the report ends the wait; a
    /// second task polling meanwhile would take it from the first). `readable()` has no
    /// such limit.
    ///
    /// # Errors
    ///
    /// As [`readable`](Self::readable).
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_dir_kept(&self.source, Interest::READABLE, cx)
    }

    /// Polls for writability; see [`poll_readable`](Self::poll_readable).
    ///
    /// # Errors
    ///
    /// As [`readable`](Self::readable).
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_dir_kept(&self.source, Interest::WRITABLE, cx)
    }

    /// Runs the non-blocking `op` until it does not return `WouldBlock`, waiting for
    /// readability in between.
    ///
    /// `op` runs at once if the fd is ready as far as the loop knows (reported readable
    /// since `op` last returned `WouldBlock`, or never tried); only a `WouldBlock` parks the
    /// task. So reading one message per call costs one read while data is there, plus one
    /// `WouldBlock` read before each park.
    ///
    /// # Errors
    ///
    /// What `op` returns (other than `WouldBlock`), or what waiting reports.
    pub async fn read_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io_with(Interest::READABLE, op).await
    }

    /// [`read_with`](Self::read_with) with `&mut T`.
    ///
    /// # Errors
    ///
    /// As [`read_with`](Self::read_with).
    pub async fn read_with_mut<R>(
        &mut self,
        op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io_with_mut(Interest::READABLE, op).await
    }

    /// Runs the non-blocking `op` until it does not return `WouldBlock`, waiting for
    /// writability in between.
    ///
    /// # Errors
    ///
    /// What `op` returns (other than `WouldBlock`), or what waiting reports.
    pub async fn write_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io_with(Interest::WRITABLE, op).await
    }

    /// [`write_with`](Self::write_with) with `&mut T`.
    ///
    /// # Errors
    ///
    /// As [`write_with`](Self::write_with).
    pub async fn write_with_mut<R>(
        &mut self,
        op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io_with_mut(Interest::WRITABLE, op).await
    }

    /// The one "try while ready; on `WouldBlock` clear and await readiness in `dir`" loop
    /// behind the `*_with`s.
    async fn io_with<R>(
        &self,
        dir: Interest,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            let tick = poll_fn(|cx| poll_ready(&self.source, dir, cx)).await?;
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.source.dir(dir).clear(tick),
                res => return res,
            }
        }
    }

    /// [`io_with`](Self::io_with) with `&mut T`.
    async fn io_with_mut<R>(
        &mut self,
        dir: Interest,
        mut op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            let tick = poll_fn(|cx| poll_ready(&self.source, dir, cx)).await?;
            match op(self.get_mut()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.source.dir(dir).clear(tick),
                res => return res,
            }
        }
    }

    /// A new `Async` for `io` on the same loop as `self`.
    fn sibling<U: AsFd>(&self, io: U) -> io::Result<Async<U>> {
        ioloop_sys::set_nonblocking(io.as_fd())?;
        Async::register(&*self.source.ops, io)
    }
}

impl<T: AsFd> AsFd for Async<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<T: AsFd> AsRawFd for Async<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.source.fd
    }
}

impl<T: AsFd> Drop for Async<T> {
    fn drop(&mut self) {
        if self.io.is_some() {
            // Deregister before the fd is closed (when `io` drops right after).
            let _ = self.source.ops.remove_source(&self.source);
        }
    }
}

impl<T: AsFd + fmt::Debug> fmt::Debug for Async<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Async").field("io", &self.io).finish()
    }
}

impl Async<TcpListener> {
    /// Binds a listener (address resolution, if `addr` needs any, blocks) and registers it on
    /// the current loop.
    ///
    /// # Errors
    ///
    /// What `bind` reports; see [`Async::new`].
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Async::make_on_current(|| TcpListener::bind(addr))
    }

    /// Accepts a connection; the stream is registered on the listener's loop.
    ///
    /// # Errors
    ///
    /// What `accept` reports (for example `EMFILE`), or what registering the stream reports.
    pub async fn accept(&self) -> io::Result<(Async<TcpStream>, SocketAddr)> {
        // Non-blocking from the start (`accept4` where the OS has it): no `ioctl` more.
        let (fd, addr) = self
            .read_with(|l| ioloop_sys::accept_nonblocking(l.as_fd()))
            .await?;
        Ok((
            Async::register(&*self.source.ops, TcpStream::from(fd))?,
            addr,
        ))
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// What `getsockname` reports.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().local_addr()
    }
}

impl Async<TcpStream> {
    /// Connects to `addr` without blocking the loop (a non-blocking `connect`, then a wait for
    /// writability), registered on the current loop.
    ///
    /// # Errors
    ///
    /// `NotConnected` outside a running loop; the connection's error (`ConnectionRefused`...).
    pub async fn connect(addr: impl Into<SocketAddr>) -> io::Result<Self> {
        let addr = addr.into();
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        connect_stream(family, SockaddrStorage::from(addr)).await
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// What `getpeername` reports.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().peer_addr()
    }
}

/// A stream socket of `family`, non-blocking and registered on the current loop, connected
/// to `addr` without blocking the loop: a non-blocking `connect`; if that is still in
/// progress, a wait for writability and a look at the connection's error.
async fn connect_stream<S: AsFd + From<OwnedFd>>(
    family: AddressFamily,
    addr: impl SockaddrLike,
) -> io::Result<Async<S>> {
    use nix::errno::Errno;
    use nix::sys::socket::{self, sockopt, SockFlag, SockType};
    let ops = current().ok_or_else(no_loop)?;
    // Non-blocking and close-on-exec from the start where `socket` takes the flags (as
    // mio does): one system call instead of three.
    #[cfg(ioloop_sock_flags)]
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    #[cfg(not(ioloop_sock_flags))]
    let fd = {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let fd = socket::socket(family, SockType::Stream, SockFlag::empty(), None)?;
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        ioloop_sys::set_nonblocking(fd.as_fd())?;
        fd
    };
    let stream = Async::register(&*ops, S::from(fd))?;
    match socket::connect(stream.as_raw_fd(), &addr) {
        // Connected at once (a Unix socket's connect never waits).
        Ok(()) => return Ok(stream),
        // EINTR: the connection goes on asynchronously (POSIX), as after EINPROGRESS.
        Err(Errno::EINPROGRESS | Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    stream.writable().await?;
    match socket::getsockopt(&stream.as_fd(), sockopt::SocketError)? {
        0 => {}
        errno => return Err(io::Error::from_raw_os_error(errno)),
    }
    // Writable without a pending error but not connected (e.g. a hang-up): report it.
    socket::getpeername::<SockaddrStorage>(stream.as_raw_fd())?;
    Ok(stream)
}

/// Whether `poll(2)` reports `fd` writable now (no wait; an error counts as not writable).
fn polls_writable(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    matches!(poll(&mut fds, 0u8), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLOUT))
}

/// The address of the Unix socket at `path`; std's `InvalidInput` (as from
/// `UnixListener::bind`) for a path too long for a socket address or holding a NUL byte.
fn unix_addr(path: &Path) -> io::Result<UnixAddr> {
    UnixSocketAddr::from_pathname(path)?;
    Ok(UnixAddr::new(path)?)
}

/// std's Unix socket address as nix's, for `connect`: a path, or (Linux, Android) an
/// abstract name; `InvalidInput` for an unnamed address, which nothing can be reached at.
fn unix_addr_of(addr: &UnixSocketAddr) -> io::Result<UnixAddr> {
    if let Some(path) = addr.as_pathname() {
        return unix_addr(path);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        if let Some(name) = addr.as_abstract_name() {
            return Ok(UnixAddr::new_abstract(name)?);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "an unnamed Unix socket address: nothing can be reached at it",
    ))
}

impl Async<UnixStream> {
    /// A connected pair of Unix stream sockets, both registered on the current loop (made
    /// non-blocking and close-on-exec by the `socketpair` call itself where the OS can).
    ///
    /// # Errors
    ///
    /// What `socketpair` reports; see [`Async::new`].
    pub fn pair() -> io::Result<(Self, Self)> {
        let ops = current().ok_or_else(no_loop)?;
        // Non-blocking from the start (`SOCK_NONBLOCK` where the OS has it): no `ioctl`s.
        let (a, b) = ioloop_sys::socketpair_nonblocking(false)?;
        let a = Async::register(&*ops, UnixStream::from(a))?;
        let b = Async::register(&*ops, UnixStream::from(b))?;
        Ok((a, b))
    }

    /// Connects to the Unix socket listening at `path`, registered on the current loop.
    ///
    /// # Errors
    ///
    /// `NotConnected` outside a running loop; `NotFound` if nothing is at `path`;
    /// `ConnectionRefused` if no socket listens there (a socket file left by a closed
    /// listener); `InvalidInput` for a path too long for a socket address; `WouldBlock` on
    /// Linux when the listener's backlog is full (its `connect` does not wait for room, and
    /// no readiness report says when there is some: try again later).
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_lite::{AsyncReadExt, AsyncWriteExt};
    /// use ioloop::{Async, IoLoop};
    /// use std::os::unix::net::{UnixListener, UnixStream};
    ///
    /// let dir = std::env::temp_dir().join(format!("ioloop-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("echo.sock");
    /// # let _ = std::fs::remove_file(&path);
    /// IoLoop::new()?.block_on(async {
    ///     let listener = Async::<UnixListener>::bind(&path)?;
    ///     let server = ioloop::spawn(async move {
    ///         let (mut stream, _) = listener.accept().await?;
    ///         let mut buf = [0; 5];
    ///         stream.read_exact(&mut buf).await?;
    ///         stream.write_all(&buf).await
    ///     });
    ///     let mut client = Async::<UnixStream>::connect(&path).await?;
    ///     client.write_all(b"hello").await?;
    ///     let mut back = [0; 5];
    ///     client.read_exact(&mut back).await?;
    ///     assert_eq!(&back, b"hello");
    ///     server.await.unwrap()
    /// })??;
    /// std::fs::remove_dir_all(&dir)?;
    /// # std::io::Result::Ok(())
    /// ```
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<Self> {
        let addr = unix_addr(path.as_ref())?;
        connect_stream(AddressFamily::Unix, addr).await
    }

    /// Connects to the Unix socket listening at `addr`: a path, or on Linux and Android an
    /// abstract name (`SocketAddr::from_abstract_name`, from
    /// `std::os::linux::net::SocketAddrExt`), as std's `UnixStream::connect_addr`; registered
    /// on the current loop.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect) (`ConnectionRefused` also when nothing listens at an
    /// abstract name); `InvalidInput` for an unnamed address.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(target_os = "linux")] {
    /// use std::os::linux::net::SocketAddrExt;
    /// use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    /// use futures_lite::{AsyncReadExt, AsyncWriteExt};
    /// use ioloop::{Async, IoLoop};
    ///
    /// // An abstract name: no file in the file system, gone with the socket.
    /// let name = format!("ioloop-doc-{}", std::process::id());
    /// let addr = SocketAddr::from_abstract_name(&name)?;
    /// IoLoop::new()?.block_on(async {
    ///     let listener = Async::<UnixListener>::bind_addr(&addr)?;
    ///     let mut client = Async::<UnixStream>::connect_addr(&addr).await?;
    ///     let (mut server, _) = listener.accept().await?;
    ///     client.write_all(b"hi").await?;
    ///     let mut buf = [0; 2];
    ///     server.read_exact(&mut buf).await?;
    ///     assert_eq!(&buf, b"hi");
    ///     std::io::Result::Ok(())
    /// })??;
    /// # }
    /// # std::io::Result::Ok(())
    /// ```
    pub async fn connect_addr(addr: &UnixSocketAddr) -> io::Result<Self> {
        let addr = unix_addr_of(addr)?;
        connect_stream(AddressFamily::Unix, addr).await
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// What `getpeername` reports.
    pub fn peer_addr(&self) -> io::Result<UnixSocketAddr> {
        self.get_ref().peer_addr()
    }
}

impl Async<UnixListener> {
    /// Binds a Unix stream listener at `path` (which must not exist yet) and registers it on
    /// the current loop. Dropping it does not remove the socket file.
    ///
    /// # Errors
    ///
    /// `NotConnected` outside a running loop (nothing is bound then); what `bind` reports
    /// (`AddrInUse` if `path` exists, `InvalidInput` for a path too long for a socket
    /// address); see [`Async::new`].
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        Async::make_on_current(|| UnixListener::bind(path))
    }

    /// Binds a Unix stream listener at `addr` (a path, or on Linux and Android an abstract
    /// name), as std's `UnixListener::bind_addr`, and registers it on the current loop.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind) (`AddrInUse` also for an abstract name taken). On Linux an
    /// unnamed `addr` is no error: the kernel binds the socket to a free abstract name
    /// (autobind; [`local_addr`](Self::local_addr) tells which).
    pub fn bind_addr(addr: &UnixSocketAddr) -> io::Result<Self> {
        Async::make_on_current(|| UnixListener::bind_addr(addr))
    }

    /// Accepts a connection; the stream is registered on the listener's loop.
    ///
    /// # Errors
    ///
    /// What `accept` reports (for example `EMFILE`), or what registering the stream reports.
    pub async fn accept(&self) -> io::Result<(Async<UnixStream>, UnixSocketAddr)> {
        let (stream, addr) = self.read_with(UnixListener::accept).await?;
        Ok((self.sibling(stream)?, addr))
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// What `getsockname` reports.
    pub fn local_addr(&self) -> io::Result<UnixSocketAddr> {
        self.get_ref().local_addr()
    }
}

impl Async<UnixDatagram> {
    /// Binds a Unix datagram socket at `path` (which must not exist yet) and registers it on
    /// the current loop. Dropping it does not remove the socket file.
    ///
    /// # Errors
    ///
    /// As [`Async::<UnixListener>::bind`](Async::<UnixListener>::bind).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        Async::make_on_current(|| UnixDatagram::bind(path))
    }

    /// Binds a Unix datagram socket at `addr` (a path, or on Linux and Android an abstract
    /// name), as std's `UnixDatagram::bind_addr`, and registers it on the current loop.
    ///
    /// # Errors
    ///
    /// As [`Async::<UnixListener>::bind_addr`](Async::<UnixListener>::bind_addr).
    pub fn bind_addr(addr: &UnixSocketAddr) -> io::Result<Self> {
        Async::make_on_current(|| UnixDatagram::bind_addr(addr))
    }

    /// An unbound Unix datagram socket, registered on the current loop (it can send; replies
    /// cannot reach it).
    ///
    /// # Errors
    ///
    /// What `socket` reports; see [`Async::new`].
    pub fn unbound() -> io::Result<Self> {
        Async::make_on_current(UnixDatagram::unbound)
    }

    /// A connected pair of Unix datagram sockets, both registered on the current loop (made
    /// non-blocking and close-on-exec by the `socketpair` call itself where the OS can).
    ///
    /// # Errors
    ///
    /// What `socketpair` reports; see [`Async::new`].
    pub fn pair() -> io::Result<(Self, Self)> {
        let ops = current().ok_or_else(no_loop)?;
        // Non-blocking from the start (`SOCK_NONBLOCK` where the OS has it): no `ioctl`s.
        let (a, b) = ioloop_sys::socketpair_nonblocking(true)?;
        let a = Async::register(&*ops, UnixDatagram::from(a))?;
        let b = Async::register(&*ops, UnixDatagram::from(b))?;
        Ok((a, b))
    }

    /// Sends a datagram to the socket bound at `path`, waiting while this socket's send
    /// buffer is full.
    ///
    /// # Errors
    ///
    /// What `sendto` reports (`NotFound`, `ConnectionRefused`...); `WouldBlock` when the
    /// receiver's queue is full (Linux) and this socket is not connected to it: the kernel
    /// then refuses the datagram and tells such a sender nothing when there is room again,
    /// so a wait would not end (send to a connected socket with [`send`](Self::send) to
    /// wait for room).
    pub async fn send_to(&self, buf: &[u8], path: impl AsRef<Path>) -> io::Result<usize> {
        let path = path.as_ref();
        self.send_unconnected(|s| s.send_to(buf, path)).await
    }

    /// Sends a datagram to the socket bound at `addr` (a path, or on Linux and Android an
    /// abstract name), as std's `UnixDatagram::send_to_addr`, waiting while this socket's
    /// send buffer is full.
    ///
    /// # Errors
    ///
    /// As [`send_to`](Self::send_to) (`ConnectionRefused` when nothing is bound at an
    /// abstract name); `InvalidInput` for an unnamed address.
    pub async fn send_to_addr(&self, buf: &[u8], addr: &UnixSocketAddr) -> io::Result<usize> {
        self.send_unconnected(|s| s.send_to_addr(buf, addr)).await
    }

    /// `send_to`'s wait: `send` (a `sendto`) is tried while this socket is writable; a
    /// refusal while it still polls writable means the receiver is full, and is returned
    /// (see [`send_to`](Self::send_to)).
    async fn send_unconnected(
        &self,
        mut send: impl FnMut(&UnixDatagram) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.write_with(|s| match send(s) {
            // Refused while this socket has room: the receiver is full.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && polls_writable(s.as_fd()) => {
                Ok(Err(e))
            }
            res => res.map(Ok),
        })
        .await?
    }

    /// Receives a datagram; returns its length and sender (unnamed for an unbound sender).
    /// A datagram longer than `buf` is cut to fit.
    ///
    /// # Errors
    ///
    /// What `recvfrom` reports.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, UnixSocketAddr)> {
        self.read_with(|s| s.recv_from(buf)).await
    }

    /// Sends a datagram to the connected peer, waiting while its queue (or this socket's send
    /// buffer) is full.
    ///
    /// # Errors
    ///
    /// What `send` reports (`NotConnected` if the socket is not connected).
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|s| s.send(buf)).await
    }

    /// Receives a datagram from the connected peer. A datagram longer than `buf` is cut to
    /// fit.
    ///
    /// # Errors
    ///
    /// What `recv` reports.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|s| s.recv(buf)).await
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// What `getsockname` reports.
    pub fn local_addr(&self) -> io::Result<UnixSocketAddr> {
        self.get_ref().local_addr()
    }
}

impl Async<UdpSocket> {
    /// Binds a UDP socket and registers it on the current loop.
    ///
    /// # Errors
    ///
    /// What `bind` reports; see [`Async::new`].
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Async::make_on_current(|| UdpSocket::bind(addr))
    }

    /// Sends a datagram to `addr`.
    ///
    /// # Errors
    ///
    /// What `sendto` reports.
    pub async fn send_to(&self, buf: &[u8], addr: impl Into<SocketAddr>) -> io::Result<usize> {
        let addr = addr.into();
        self.write_with(|s| s.send_to(buf, addr)).await
    }

    /// Receives a datagram; returns its length and sender.
    ///
    /// # Errors
    ///
    /// What `recvfrom` reports.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.read_with(|s| s.recv_from(buf)).await
    }

    /// Sends a datagram to the connected peer (`get_ref().connect(addr)` sets it).
    ///
    /// # Errors
    ///
    /// What `send` reports (`NotConnected` if the socket is not connected).
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|s| s.send(buf)).await
    }

    /// Receives a datagram from the connected peer. A datagram longer than `buf` is cut to
    /// fit.
    ///
    /// # Errors
    ///
    /// What `recv` reports (`ConnectionRefused` after a datagram the peer's host refused).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|s| s.recv(buf)).await
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// What `getsockname` reports.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().local_addr()
    }
}

/// The readiness of one direction (`interest` is `READABLE` or `WRITABLE`) for an operation:
/// `Ready(tick)` while it is ready as far as the loop knows (the tick to pass to
/// [`Direction::clear`] if the I/O then returns `WouldBlock`); else stores the waker, makes
/// sure the registration covers the direction ([`IoSource::arm`]: nothing to do in Edge mode
/// after the direction's first wait) and returns `Pending`.
#[inline]
fn poll_ready(src: &IoSource, interest: Interest, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
    let dir = src.dir(interest);
    if dir.ready.get() {
        return Poll::Ready(Ok(dir.tick.get()));
    }
    park(src, dir, interest, cx)
}

/// [`poll_ready`]'s not-ready half, out of line so that the ready path stays small.
#[inline(never)]
fn park(
    src: &IoSource,
    dir: &Direction,
    interest: Interest,
    cx: &mut Context<'_>,
) -> Poll<io::Result<u64>> {
    dir.set_waker(cx.waker());
    if let Err(e) = src.arm(interest, false) {
        dir.clear_waker(cx.waker());
        return Poll::Ready(Err(e));
    }
    Poll::Pending
}

/// Waits for a fresh report of one direction ([`Async::readable`]): `Ready` once the reactor
/// has reported it since the wait began; else stores the waker. On its first poll a wait
/// makes sure a report will come if the fd is ready now: in Oneshot mode it arms the
/// registration; in Edge mode, if the direction may be ready (its cached readiness is set),
/// it updates the registration, which makes the kernel report the current state again (a
/// cleared readiness needs nothing once the direction is registered: the next change makes
/// an edge).
///
/// `start` is the wait's state: the tick when it began (`None` before its first poll and
/// after it ended). [`Async::readable`]'s future keeps its own, so any number of tasks can
/// wait at once; [`Async::poll_readable`] keeps it in the direction.
fn poll_dir(
    src: &IoSource,
    interest: Interest,
    start: &mut Option<u64>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let dir = src.dir(interest);
    let fresh = match *start {
        Some(begun) if begun != dir.tick.get() => {
            *start = None;
            return Poll::Ready(Ok(()));
        }
        Some(_) => false,
        None => {
            *start = Some(dir.tick.get());
            true
        }
    };
    dir.set_waker(cx.waker());
    let again = fresh && src.edge.get() && dir.ready.get();
    if let Err(e) = src.arm(interest, again) {
        dir.clear_waker(cx.waker());
        *start = None;
        return Poll::Ready(Err(e));
    }
    Poll::Pending
}

/// [`poll_dir`] for the `poll_*` methods, with the wait's state kept in the direction.
fn poll_dir_kept(src: &IoSource, interest: Interest, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let dir = src.dir(interest);
    let mut start = dir.start.get();
    let res = poll_dir(src, interest, &mut start, cx);
    dir.start.set(start);
    res
}

/// One non-blocking operation of the futures-io impls, on tokio's `PollEvented` pattern: try
/// while ready; on `WouldBlock` clear the readiness and wait. A short transfer (`0 < n <
/// len`) on a stream socket or pipe also clears it (see [`IoSource::short_io_drains`]),
/// which saves the read (or write) that would return `WouldBlock`. `len` is `None` for an
/// operation without a buffer (flush).
#[cfg(feature = "futures-io")]
fn poll_op<X: AsFd>(
    src: &IoSource,
    interest: Interest,
    len: Option<usize>,
    io: &mut X,
    mut op: impl FnMut(&mut X) -> io::Result<usize>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        let tick = match poll_ready(src, interest, cx) {
            Poll::Ready(Ok(tick)) => tick,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        match op(io) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => src.dir(interest).clear(tick),
            Ok(n) => {
                if let Some(len) = len {
                    if 0 < n && n < len && src.short_io_drains(interest, io.as_fd()) {
                        src.dir(interest).clear(tick);
                    }
                }
                return Poll::Ready(Ok(n));
            }
            res => return Poll::Ready(res),
        }
    }
}

#[cfg(feature = "futures-io")]
mod futures_io_impls {
    use super::*;
    use std::io::{IoSlice, IoSliceMut, Read, Write};
    use std::pin::Pin;

    const R: Interest = Interest::READABLE;
    const W: Interest = Interest::WRITABLE;

    /// The length a vectored transfer is compared with for the short-transfer inference: its
    /// first non-empty buffer's. A `Read`/`Write` without its own vectored method (std's
    /// default) moves only that buffer, in one call, so a transfer shorter than it is short
    /// either way; one that stops in a later buffer shows nothing (the next call returns
    /// `WouldBlock` then, as without the inference).
    fn first_len(mut lens: impl Iterator<Item = usize>) -> usize {
        lens.find(|&n| n != 0).unwrap_or(0)
    }

    impl<T: AsFd + Read> futures_io::AsyncRead for Async<T> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let Async { source, io } = self.get_mut();
            let io = io.as_mut().expect("Async used after into_inner");
            // No inference from a short read: `T`'s `Read` may buffer or cap (see `Async`).
            poll_op(source, R, None, io, |io| io.read(buf), cx)
        }

        fn poll_read_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &mut [IoSliceMut<'_>],
        ) -> Poll<io::Result<usize>> {
            let Async { source, io } = self.get_mut();
            let io = io.as_mut().expect("Async used after into_inner");
            poll_op(source, R, None, io, |io| io.read_vectored(&mut *bufs), cx)
        }
    }

    impl<T: AsFd> futures_io::AsyncRead for &Async<T>
    where
        for<'a> &'a T: Read,
    {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this: &Async<T> = self.get_mut();
            let mut io = this.get_ref();
            let len = Some(buf.len());
            poll_op(&this.source, R, len, &mut io, |io| io.read(buf), cx)
        }

        fn poll_read_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &mut [IoSliceMut<'_>],
        ) -> Poll<io::Result<usize>> {
            let this: &Async<T> = self.get_mut();
            let mut io = this.get_ref();
            let len = Some(first_len(bufs.iter().map(|b| b.len())));
            let read = |io: &mut &T| io.read_vectored(&mut *bufs);
            poll_op(&this.source, R, len, &mut io, read, cx)
        }
    }

    impl<T: AsFd + Write> futures_io::AsyncWrite for Async<T> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let Async { source, io } = self.get_mut();
            let io = io.as_mut().expect("Async used after into_inner");
            // No inference from a short write: `T`'s `Write` may buffer or cap (see `Async`).
            poll_op(source, W, None, io, |io| io.write(buf), cx)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let Async { source, io } = self.get_mut();
            let io = io.as_mut().expect("Async used after into_inner");
            poll_op(source, W, None, io, |io| io.write_vectored(bufs), cx)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let Async { source, io } = self.get_mut();
            let io = io.as_mut().expect("Async used after into_inner");
            let flush = |io: &mut T| io.flush().map(|()| 0);
            poll_flush(source, io, flush, cx)
        }

        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            // Flush only: see `Async`'s docs.
            self.poll_flush(cx)
        }
    }

    impl<T: AsFd> futures_io::AsyncWrite for &Async<T>
    where
        for<'a> &'a T: Write,
    {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this: &Async<T> = self.get_mut();
            let mut io = this.get_ref();
            let len = Some(buf.len());
            poll_op(&this.source, W, len, &mut io, |io| io.write(buf), cx)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this: &Async<T> = self.get_mut();
            let mut io = this.get_ref();
            let len = Some(first_len(bufs.iter().map(|b| b.len())));
            let write = |io: &mut &T| io.write_vectored(bufs);
            poll_op(&this.source, W, len, &mut io, write, cx)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this: &Async<T> = self.get_mut();
            let mut io = this.get_ref();
            let flush = |io: &mut &T| io.flush().map(|()| 0);
            poll_flush(&this.source, &mut io, flush, cx)
        }

        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            // Flush only: see `Async`'s docs.
            self.poll_flush(cx)
        }
    }

    /// `flush`, waiting for writability only if it says `WouldBlock`: flushing a socket or a
    /// pipe does nothing, and must not wait for room a cut-short or timed-out write left
    /// the buffer without (std's, async-io's and tokio's return at once too).
    fn poll_flush<X: AsFd>(
        source: &IoSource,
        io: &mut X,
        mut flush: impl FnMut(&mut X) -> io::Result<usize>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        match flush(io) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            res => return Poll::Ready(res.map(drop)),
        }
        poll_op(source, W, None, io, flush, cx).map_ok(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Reads one byte through `src`, which has to wait for it: `peer` writes it from another
    /// task once the read has parked.
    fn read_after_wait(lp: &IoLoop, src: &Async<&UnixStream>, peer: &UnixStream) -> u8 {
        let peer = peer.try_clone().unwrap();
        lp.block_on(async {
            let writer = crate::spawn(async move {
                crate::yield_now().await;
                (&peer).write_all(b"x").unwrap();
            });
            let mut buf = [0u8; 1];
            src.read_with(|s| {
                let mut s: &UnixStream = s;
                s.read_exact(&mut buf)
            })
            .await
            .unwrap();
            writer.await.unwrap();
            buf[0]
        })
        .unwrap()
    }

    /// A new `Async` on an fd number whose last `Async` is gone reuses that one's source
    /// allocation, reset: nothing of the old registration (armed interest, readiness, waker)
    /// is left, and waiting works as on a new source.
    #[test]
    fn reregistered_fd_reuses_a_fresh_source() {
        let lp = IoLoop::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let first = Async::with_loop_nonblocking(&lp, &a).unwrap();
        assert_eq!(read_after_wait(&lp, &first, &b), b'x');
        // Edge keeps the registration armed after its report; a Oneshot one (poll, select)
        // is disarmed by it, so only there is nothing armed left to reset.
        assert_eq!(
            !first.source.armed.get().is_empty(),
            first.source.edge.get(),
            "the wait armed the source (Edge) or the report disarmed it (Oneshot)"
        );
        let old = Rc::as_ptr(&first.source);
        drop(first);

        let second = Async::with_loop_nonblocking(&lp, &a).unwrap();
        assert_eq!(Rc::as_ptr(&second.source), old, "allocation reused");
        let src = &second.source;
        assert!(src.armed.get().is_empty());
        assert!(src.read.ready.get() && src.write.ready.get());
        assert!(!src.read.waiting() && !src.write.waiting());
        assert_eq!(src.read.start.get(), None);
        assert_eq!(read_after_wait(&lp, &second, &b), b'x');

        // A source still held elsewhere is not reused: a live `Async` keeps its own.
        let held = second.source.clone();
        drop(second);
        let third = Async::with_loop_nonblocking(&lp, &a).unwrap();
        assert!(!Rc::ptr_eq(&third.source, &held));
        assert_eq!(read_after_wait(&lp, &third, &b), b'x');
    }

    /// An `Async` may outlive its loop (its source keeps only a weak handle): a wait fails
    /// with `NotConnected`, and dropping it, or `into_inner`, just gives the fd back.
    #[test]
    fn async_outlives_its_loop() {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        let waker = Waker::from(std::sync::Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let (a, _b) = UnixStream::pair().unwrap();
        let lp = IoLoop::new().unwrap();
        let first = Async::with_loop(&lp, a.try_clone().unwrap()).unwrap();
        let second = Async::with_loop(&lp, a).unwrap();
        drop(lp);
        match first.poll_readable(&mut cx) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::NotConnected),
            other => panic!("a wait on a dropped loop: {other:?}"),
        }
        assert!(
            !first.source.read.waiting(),
            "the failed wait kept its waker"
        );
        drop(first);
        let a = second.into_inner().unwrap();
        (&a).write_all(b"x").unwrap();
    }

    /// An `Async` does not remove a registration of its fd number that is not the one made
    /// for it: one a newer `Async` made after the reactor dropped the old one (found stale),
    /// or a plain handler added since.
    #[test]
    fn drop_leaves_a_newer_registration_of_the_number() {
        let lp = IoLoop::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        // The reactor drops the first `Async`'s registration; a newer `Async` takes the number.
        let old = Async::with_loop_nonblocking(&lp, &a).unwrap();
        lp.remove_handler(&a).unwrap();
        let newer = Async::with_loop_nonblocking(&lp, &a).unwrap();
        assert_ne!(newer.source.gen, old.source.gen);
        drop(old);
        assert_eq!(
            lp.handler_count(),
            1,
            "the old Async removed the new registration"
        );
        drop(newer);
        assert_eq!(
            lp.handler_count(),
            0,
            "an Async removes its own registration"
        );
        // The same with a plain handler in the newer registration's place.
        let old = Async::with_loop_nonblocking(&lp, &a).unwrap();
        lp.remove_handler(&a).unwrap();
        lp.add_handler(&a, Interest::READABLE, |_, _, _| {})
            .unwrap();
        drop(old);
        assert_eq!(lp.handler_count(), 1, "the Async removed a plain handler");
        lp.remove_handler(&a).unwrap();
    }

    /// A waker that counts its wake-ups and runs `then` (on the waking thread) after each.
    struct Probe {
        woken: std::sync::atomic::AtomicUsize,
        then: fn(),
    }

    impl std::task::Wake for Probe {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.woken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (self.then)();
        }
    }

    fn probe(then: fn()) -> (std::sync::Arc<Probe>, Waker) {
        let p = std::sync::Arc::new(Probe {
            woken: std::sync::atomic::AtomicUsize::new(0),
            then,
        });
        (p.clone(), Waker::from(p))
    }

    fn woken(p: &std::sync::Arc<Probe>) -> usize {
        p.woken.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A direction's waiters: a second task is listed once however often it waits, a failed
    /// wait forgets only its own task, and a report wakes every task still waiting, once.
    #[test]
    fn a_direction_keeps_every_waiting_task() {
        let dir = Direction::default();
        let (a, wa) = probe(|| {});
        let (b, wb) = probe(|| {});
        let (c, wc) = probe(|| {});
        dir.set_waker(&wa);
        dir.set_waker(&wb);
        dir.set_waker(&wb);
        dir.set_waker(&wc);
        dir.set_waker(&wa);
        assert_eq!(dir.parked.get(), PRIMARY | OTHERS);
        assert_eq!(dir.others.borrow().len(), 2, "b and c, once each");
        // c's wait failed: a and b still wait.
        dir.clear_waker(&wc);
        assert_eq!(dir.others.borrow().len(), 1);
        let retired = Cell::new(false);
        let who = dir.fire();
        assert_eq!(who, PRIMARY | OTHERS);
        dir.wake(who, &retired);
        assert_eq!((woken(&a), woken(&b), woken(&c)), (1, 1, 0));
        assert_eq!(dir.parked.get(), 0);
        assert!(dir.others.borrow().is_empty());
        // a's waker is kept for its next wait; a report with nobody waiting wakes nobody.
        let who = dir.fire();
        assert_eq!(who, 0);
        dir.wake(who, &retired);
        assert_eq!((woken(&a), woken(&b)), (1, 1));
        // The first task's failed wait leaves the second waiting.
        dir.set_waker(&wa);
        dir.set_waker(&wb);
        dir.clear_waker(&wa);
        assert_eq!(dir.parked.get(), OTHERS);
        let who = dir.fire();
        dir.wake(who, &retired);
        assert_eq!((woken(&a), woken(&b)), (1, 2));
    }

    /// Polls a one-byte read of `src` with `cx`.
    fn poll_byte(src: &Async<UnixStream>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut buf = [0u8; 1];
        futures_io::AsyncRead::poll_read(std::pin::Pin::new(&mut &*src), cx, &mut buf)
    }

    /// A woken task's waker stays with the source: the task's next wait finds it there and
    /// stores no clone, and the next report wakes it again.
    #[test]
    fn a_woken_task_keeps_its_waker_for_its_next_wait() {
        let lp = IoLoop::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let src = Async::with_loop(&lp, a).unwrap();
        let (p, waker) = probe(|| {});
        let mut cx = Context::from_waker(&waker);
        assert!(poll_byte(&src, &mut cx).is_pending());
        // Ours, the waker, the copy the source holds.
        assert_eq!(std::sync::Arc::strong_count(&p), 3);
        for round in 1..=3 {
            (&b).write_all(b"x").unwrap();
            while woken(&p) < round {
                lp.run_once().unwrap();
            }
            assert_eq!(woken(&p), round, "one wake-up per report");
            assert!(!src.source.read.waiting());
            assert_eq!(std::sync::Arc::strong_count(&p), 3, "the waker was kept");
            assert!(matches!(poll_byte(&src, &mut cx), Poll::Ready(Ok(1))));
            assert!(poll_byte(&src, &mut cx).is_pending());
            assert!(src.source.read.waiting());
            assert_eq!(std::sync::Arc::strong_count(&p), 3, "no second copy stored");
        }
        drop(src);
        assert_eq!(
            std::sync::Arc::strong_count(&p),
            2,
            "a dropped Async keeps no waker"
        );
    }

    thread_local! {
        static HELD: std::cell::RefCell<Option<Async<UnixStream>>> =
            const { std::cell::RefCell::new(None) };
        static SECOND: std::cell::RefCell<Option<Waker>> = const { std::cell::RefCell::new(None) };
    }

    /// Parks a one-byte read of `src` with `waker`, hands `src` to [`HELD`] (where the
    /// wake-up's code finds it), writes a byte from `peer` and runs `lp` until `p` is woken.
    fn park_held_then_report(
        lp: &IoLoop,
        src: Async<UnixStream>,
        waker: &Waker,
        mut peer: &UnixStream,
        p: &std::sync::Arc<Probe>,
    ) {
        let mut cx = Context::from_waker(waker);
        assert!(poll_byte(&src, &mut cx).is_pending());
        HELD.with(|h| *h.borrow_mut() = Some(src));
        peer.write_all(b"x").unwrap();
        while woken(p) == 0 {
            lp.run_once().unwrap();
        }
    }

    /// A waker whose wake-up drops the `Async` (it runs any code): the retired source keeps
    /// no waker, and a new source on the fd number starts clean.
    #[test]
    fn a_wake_up_that_drops_the_async_leaves_no_waker_behind() {
        let lp = IoLoop::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let src = Async::with_loop(&lp, a).unwrap();
        let (p, waker) = probe(|| drop(HELD.with(|h| h.borrow_mut().take())));
        park_held_then_report(&lp, src, &waker, &b, &p);
        assert!(
            HELD.with(|h| h.borrow().is_none()),
            "the wake-up dropped the Async"
        );
        assert_eq!(
            std::sync::Arc::strong_count(&p),
            2,
            "the retired source kept the waker"
        );
        assert_eq!(lp.handler_count(), 0);
        // Whatever number the next pair gets, a source on it starts clean (a reused one is
        // checked for a leftover waker when it is reset).
        let (c, d) = UnixStream::pair().unwrap();
        let c = Async::with_loop(&lp, c).unwrap();
        let mut buf = [0u8; 1];
        (&d).write_all(b"y").unwrap();
        let n = lp
            .block_on(futures_lite::AsyncReadExt::read(&mut &c, &mut buf))
            .unwrap()
            .unwrap();
        assert_eq!((n, buf[0]), (1, b'y'));
    }

    /// A waker whose wake-up starts another wait on the same direction with another waker:
    /// that one is kept (and woken by the next report), the first is dropped.
    #[test]
    fn a_wait_begun_by_a_wake_up_keeps_its_own_waker() {
        let lp = IoLoop::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let (second, second_waker) = probe(|| {});
        SECOND.with(|s| *s.borrow_mut() = Some(second_waker));
        let (first, waker) = probe(|| {
            HELD.with(|h| {
                let held = h.borrow();
                let src = held.as_ref().unwrap();
                SECOND.with(|s| {
                    let w = s.borrow();
                    let mut cx = Context::from_waker(w.as_ref().unwrap());
                    assert!(src.poll_readable(&mut cx).is_pending());
                });
            });
        });
        let src = Async::with_loop(&lp, a).unwrap();
        park_held_then_report(&lp, src, &waker, &b, &first);
        assert_eq!(
            std::sync::Arc::strong_count(&first),
            2,
            "the first waker was dropped"
        );
        // Ours, the thread-local's, the source's.
        assert_eq!(
            std::sync::Arc::strong_count(&second),
            3,
            "the second waker was kept"
        );
        assert_eq!(woken(&second), 0);
        (&b).write_all(b"y").unwrap();
        while woken(&second) == 0 {
            lp.run_once().unwrap();
        }
        assert_eq!((woken(&first), woken(&second)), (1, 1));
        HELD.with(|h| drop(h.borrow_mut().take()));
        SECOND.with(|s| drop(s.borrow_mut().take()));
    }
}
