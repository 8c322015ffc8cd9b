//! The reactor: an fd → handler table, callbacks, timers and signals on one [`Poller`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ioloop_sys::inline_fn::{InlineFnOnce, InlineSendFnOnce};
use ioloop_sys::is_open;
use ioloop_sys::signal::SignalPipe;
use ioloop_sys::{DefaultPoller, Event, Events, Interest, Mode, Poller, Ready};

use crate::task::{CurrentGuard, Executor, LoopOps};
use crate::timers::{deadline_after, Callback, Due, Periodic as PeriodicTimer, TimeoutId, Timers};

/// Lent out of its slot while it runs (see [`Lent`]), so dispatch needs no reference count
/// and a zero-sized closure costs no allocation.
type Handler<P> = Box<dyn FnMut(&IoLoop<P>, RawFd, Ready)>;
/// Inline when small ([`InlineFnOnce`]): a closure capturing an `Rc` or two costs no allocation.
type LocalCallback<P> = InlineFnOnce<IoLoop<P>>;
type RemoteCallback<P> = InlineSendFnOnce<IoLoop<P>>;
type Periodic<P> = Box<dyn FnMut(&IoLoop<P>)>;

/// What [`IoLoop::add_handler`] and friends accept as a file descriptor: a [`RawFd`], a
/// [`BorrowedFd`], or a reference to anything that is [`AsFd`] (`&TcpStream`, `&File`, ...).
///
/// The loop does not keep the borrow: it watches the fd number until the handler is removed.
pub trait HandlerFd {
    /// The fd number.
    fn handler_fd(&self) -> RawFd;
}

impl HandlerFd for RawFd {
    fn handler_fd(&self) -> RawFd {
        *self
    }
}

impl HandlerFd for BorrowedFd<'_> {
    fn handler_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

impl<T: AsFd + ?Sized> HandlerFd for &T {
    fn handler_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// How many events one wait can report.
const EVENTS_CAPACITY: usize = 1024;

/// [`Inner::batch_pos`] when no event of the last batch is left to dispatch.
const BATCH_DONE: usize = usize::MAX;

/// [`Inner::hints`]: local callbacks may be queued (or left by a panicking one).
const CALLBACKS: u8 = 1;
/// [`Inner::hints`]: timers may be pending.
const TIMERS: u8 = 2;

/// A single-threaded event loop in the style of Tornado's `IOLoop`: handlers for file
/// descriptors, callbacks, timers and signals, all run on the thread that calls
/// [`run`](IoLoop::run).
///
/// `IoLoop` is a cheap handle (cloning it gives another handle to the same loop) and is not
/// `Send`; use [`handle`](IoLoop::handle) to reach the loop from other threads. Every method
/// takes `&self`, so handlers, callbacks and timers — which are given the loop as their first
/// argument — can add, change or remove any handler (themselves included), timer or callback,
/// or stop the loop, while they run.
///
/// One iteration of the loop:
/// 1. runs the callbacks queued before it (callbacks they add wait for the next iteration);
///    if they stopped the loop, the iteration ends here;
/// 2. waits for I/O: not at all if callbacks are queued, else until the earliest timer;
/// 3. calls the handler of each ready fd;
/// 4. runs the timers that are due, in deadline order (FIFO among equal deadlines);
/// 5. polls the [tasks](crate::task) that were woken (once each, in wake order).
///
/// A closure that keeps a clone of the loop it is registered on makes a reference cycle:
/// use the `&IoLoop` argument it is given instead.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use ioloop::IoLoop;
///
/// let lp = IoLoop::new()?;
/// let fired = Rc::new(Cell::new(0));
/// let f = fired.clone();
/// lp.call_later(Duration::from_millis(1), move |lp| {
///     f.set(f.get() + 1);
///     lp.stop();
/// });
/// lp.add_callback(|_| println!("runs first"));
/// lp.run()?;
/// assert_eq!(fired.get(), 1);
/// # std::io::Result::Ok(())
/// ```
pub struct IoLoop<P: Poller = DefaultPoller> {
    inner: Rc<Inner<P>>,
}

impl<P: Poller> Clone for IoLoop<P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<P: Poller> std::fmt::Debug for IoLoop<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoLoop")
            .field("poller", &P::NAME)
            .field("handlers", &self.handler_count())
            .field("timers", &self.timer_count())
            .finish()
    }
}

struct Inner<P: Poller> {
    shared: Arc<Shared<P>>,
    fds: RefCell<Vec<FdSlot<P>>>,
    handlers: Cell<usize>,
    timers: RefCell<Timers<LocalCallback<P>, Periodic<P>>>,
    /// Callbacks queued for the next iteration.
    callbacks: RefCell<VecDeque<LocalCallback<P>>>,
    /// Callbacks of the current iteration (left here if one of them panicked).
    running: RefCell<VecDeque<LocalCallback<P>>>,
    /// Callbacks swapped out of the cross-thread queue, being run (left here, with
    /// `remote_pending` set, if one of them panicked).
    remote_running: RefCell<VecDeque<RemoteCallback<P>>>,
    events: RefCell<Events>,
    /// Next event of the current batch to dispatch while it is dispatched (a panic leaves the
    /// rest for the next run); [`BATCH_DONE`] once the whole batch was.
    batch_pos: Cell<usize>,
    /// Work that may be pending besides I/O ([`CALLBACKS`], [`TIMERS`]): set wherever such
    /// work is queued, cleared only once it is seen to be gone, so an iteration with nothing
    /// but I/O to do skips those queues.
    hints: Cell<u8>,
    in_run: Cell<bool>,
    /// The signals handled, with their pipes: kept here, not in the handlers, so that
    /// [`IoLoop::remove_signal_handler`] gives the signal back at once, also when called
    /// from the signal's own handler (lent out while it runs).
    signals: RefCell<Vec<(i32, SignalPipe)>>,
    /// The task layer's run queue and task table ([`crate::task`]).
    tasks: Rc<Executor>,
    /// This loop, type-erased and weak, for the task layer's "current loop".
    ops: Rc<dyn LoopOps>,
}

/// The part of the loop other threads reach through a [`Handle`].
struct Shared<P: Poller> {
    poller: P,
    /// Callbacks from other threads; `None` once the loop is dropped (a [`Handle`] then
    /// refuses new ones).
    remote: Mutex<Option<VecDeque<RemoteCallback<P>>>>,
    remote_pending: AtomicBool,
    stop: AtomicBool,
}

struct FdSlot<P: Poller> {
    /// Bumped on every removal: the kernel token packs (gen, fd), so events queued for an
    /// earlier registration of this fd number are recognised and dropped.
    gen: u32,
    interest: Interest,
    mode: Mode,
    /// Whether the fd is registered.
    live: bool,
    /// `Some` while the fd is registered, except while dispatch has lent the handler out
    /// (it is running).
    handler: Option<Handler<P>>,
}

impl<P: Poller> Default for FdSlot<P> {
    fn default() -> Self {
        Self {
            gen: 0,
            interest: Interest::empty(),
            mode: Mode::Level,
            live: false,
            handler: None,
        }
    }
}

/// A process-unique id per loop, so a [`TimeoutId`] of one loop is unknown to every other.
fn next_loop_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[inline]
fn pack(gen: u32, fd: RawFd) -> u64 {
    (u64::from(gen) << 32) | u64::from(fd as u32)
}

#[inline]
fn unpack(token: u64) -> (u32, RawFd) {
    ((token >> 32) as u32, token as u32 as RawFd)
}

#[cold]
fn bad_fd(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("negative file descriptor {fd}"),
    )
}

#[cold]
fn no_handler(fd: RawFd) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no handler for fd {fd}"))
}

/// Grows the fd table to hold `idx` (out of line: rare, and keeps `add_slot` small).
#[cold]
#[inline(never)]
fn grow<P: Poller>(fds: &mut Vec<FdSlot<P>>, idx: usize) {
    fds.resize_with(idx + 1, FdSlot::default);
}

impl IoLoop<DefaultPoller> {
    /// Creates a loop on the [`DefaultPoller`] chosen at build time, made as
    /// [`with_backend`](IoLoop::with_backend) makes it (with [`Poller::new_owned`]).
    ///
    /// # Errors
    ///
    /// What the poller's creation reports (fd limit, memory).
    pub fn new() -> io::Result<Self> {
        Self::with_backend()
    }
}

impl<P: Poller> IoLoop<P> {
    /// Creates a loop on a new poller of type `P`: `IoLoop::<ioloop::sys::Poll>::with_backend()`.
    ///
    /// The poller is made with [`Poller::new_owned`]: the loop is not `Send`, so it
    /// registers and waits on its own thread only, and other threads reach it through its
    /// notifier alone ([`Handle`]). A backend may use that to run faster (io_uring does); it
    /// then refuses registrations and waits made on its [`poller`](IoLoop::poller) from
    /// another thread.
    ///
    /// # Errors
    ///
    /// What `P::new_owned` reports.
    pub fn with_backend() -> io::Result<Self> {
        Self::with_poller(P::new_owned()?)
    }

    /// Creates a loop on `poller`, which must have nothing registered.
    ///
    /// # Errors
    ///
    /// None today; the signature leaves room for backends that need set-up.
    pub fn with_poller(poller: P) -> io::Result<Self> {
        let tasks = Rc::new(Executor::new(poller.notifier()));
        Ok(Self {
            inner: Rc::new_cyclic(|weak| Inner {
                tasks,
                ops: Rc::new(WeakLoop(weak.clone())),
                shared: Arc::new(Shared {
                    poller,
                    remote: Mutex::new(Some(VecDeque::new())),
                    remote_pending: AtomicBool::new(false),
                    stop: AtomicBool::new(false),
                }),
                fds: RefCell::new(Vec::new()),
                handlers: Cell::new(0),
                timers: RefCell::new(Timers::new(next_loop_id())),
                callbacks: RefCell::new(VecDeque::new()),
                running: RefCell::new(VecDeque::new()),
                remote_running: RefCell::new(VecDeque::new()),
                events: RefCell::new(Events::with_capacity(EVENTS_CAPACITY)),
                batch_pos: Cell::new(BATCH_DONE),
                hints: Cell::new(0),
                in_run: Cell::new(false),
                signals: RefCell::new(Vec::new()),
            }),
        })
    }

    /// The poller underneath: for its [`notifier`](Poller::notifier), what it
    /// [`supports`](Poller::supports), or [`is_stale`](Poller::is_stale). Do not register fds
    /// on it directly: the loop's wait takes every event of the poller and reads each token as
    /// one of its own handlers', so such an fd's events would be lost, or given to the
    /// handler whose token matches (and a level-triggered one would keep the loop spinning).
    pub fn poller(&self) -> &P {
        &self.inner.shared.poller
    }

    /// A `Send + Sync` handle for other threads: [`Handle::add_callback`], [`Handle::stop`].
    pub fn handle(&self) -> Handle<P> {
        Handle {
            shared: self.inner.shared.clone(),
        }
    }

    /// The loop's clock (`Instant::now()`), the reference for [`call_at`](Self::call_at).
    pub fn time(&self) -> Instant {
        Instant::now()
    }

    // ----- fd handlers -------------------------------------------------------------------

    /// Calls `handler(loop, fd, ready)` whenever `fd` is ready for `interest`
    /// (level-triggered: again on every iteration while it stays ready).
    ///
    /// The loop does not own `fd`: remove the handler before closing it. An fd closed without
    /// removal never wedges the loop (on epoll, unless a duplicate keeps its file open:
    /// below), and its handler gets one last call with
    /// [`Ready::ERROR`] and is removed: at the next wait on poll and select (and on io_uring
    /// when the fd had events in flight); on epoll, whose kernel forgets the fd silently, and
    /// on io_uring, whose poll keeps the closed file, when a new handler is added for the
    /// reused fd number ([`Poller::is_stale`] tells). kqueue keeps the number registered:
    /// adding a handler for it there is `AlreadyExists` until the stale one is removed. So is
    /// it on poll and select (and on io_uring before the stale fd's poll was submitted) when
    /// the number is reused before the loop waits again (say, by an `accept` in the same
    /// iteration): nothing then tells the new file from the old one, and the stale handler
    /// is called for the new file's events until it is removed. Remove handlers before
    /// closing their fds.
    ///
    /// On epoll, an fd closed while a duplicate of it (`dup`, `fork`, `SCM_RIGHTS`) keeps
    /// the file open stays in the kernel's interest list, which nothing can then remove (it
    /// needs an fd of that file): its events keep coming under the stale registration,
    /// which the loop drops, and a level-triggered one keeps the loop from sleeping until
    /// the last duplicate is closed. As epoll's own documentation says: deregister first.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a negative fd, `AlreadyExists` if `fd` has a live handler, `EBADF` for
    /// an fd that is not open, and what the poller reports (for example `InvalidInput` for an
    /// fd >= `FD_SETSIZE` on select).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    /// use ioloop::{IoLoop, Interest};
    ///
    /// let lp = IoLoop::new()?;
    /// let (mut a, b) = UnixStream::pair()?;
    /// let mut b2 = b.try_clone()?;
    /// lp.add_handler(&b, Interest::READABLE, move |lp, fd, _ready| {
    ///     let mut buf = [0; 16];
    ///     let n = b2.read(&mut buf).unwrap();
    ///     assert_eq!(&buf[..n], b"ping");
    ///     lp.remove_handler(fd).unwrap();
    ///     lp.stop();
    /// })?;
    /// a.write_all(b"ping")?;
    /// lp.run()?;
    /// # std::io::Result::Ok(())
    /// ```
    #[inline]
    pub fn add_handler(
        &self,
        fd: impl HandlerFd,
        interest: Interest,
        handler: impl FnMut(&IoLoop<P>, RawFd, Ready) + 'static,
    ) -> io::Result<()> {
        self.add_handler_with(fd, interest, Mode::Level, handler)
    }

    /// [`add_handler`](Self::add_handler) with an explicit [`Mode`]. With [`Mode::Oneshot`]
    /// the handler is called once, then not again until [`update_handler_with`] re-arms it.
    ///
    /// [`update_handler_with`]: Self::update_handler_with
    ///
    /// # Errors
    ///
    /// As [`add_handler`](Self::add_handler), plus `Unsupported` for a mode the poller lacks.
    #[inline]
    pub fn add_handler_with(
        &self,
        fd: impl HandlerFd,
        interest: Interest,
        mode: Mode,
        handler: impl FnMut(&IoLoop<P>, RawFd, Ready) + 'static,
    ) -> io::Result<()> {
        self.add_slot(fd.handler_fd(), interest, mode, Box::new(handler))
            .map(drop)
    }

    /// Registers `fd` with `handler` and returns the registration's generation. The fast path
    /// takes one borrow of the table and makes one system call; an occupied number (a live
    /// or stale handler) goes through [`add_occupied`](Self::add_occupied). Inlined: its
    /// callers pass constants (the task layer) or box the handler right before.
    ///
    /// `add_handler`, `add_handler_with` and `remove_handler` are `#[inline]` too, so that
    /// their system call lands in the caller's frame: where the kernel guards the return
    /// stack across system calls (this machine: AMD's SRSO "safe RET" mitigation), the
    /// first return after one into a frame entered before it costs ~50 ns (`getppid`) to
    /// ~200 ns (`epoll_ctl`), and a caller's loop of registrations then makes none (churn:
    /// the reactor's add + remove 0.98 -> 0.72 x mio, where mio returns through libc's
    /// wrapper after each call).
    #[inline(always)]
    fn add_slot(
        &self,
        fd: RawFd,
        interest: Interest,
        mode: Mode,
        handler: Handler<P>,
    ) -> io::Result<u32> {
        let Ok(idx) = usize::try_from(fd) else {
            return Err(bad_fd(fd));
        };
        let mut fds = self.inner.fds.borrow_mut();
        let gen = match fds.get(idx) {
            Some(s) if s.live => {
                drop(fds);
                return self.add_occupied(fd, interest, mode, handler);
            }
            Some(s) => s.gen,
            None => 0,
        };
        // The poller validates the fd first (every backend refuses one that is not open with
        // EBADF), so the table only grows for open fds, whose numbers are below
        // RLIMIT_NOFILE: a stray number such as `i32::MAX` never allocates a huge table.
        self.inner
            .shared
            .poller
            .register(fd, pack(gen, fd), interest, mode)?;
        if fds.len() <= idx {
            grow(&mut fds, idx);
        }
        if let Some(slot) = fds.get_mut(idx) {
            slot.interest = interest;
            slot.mode = mode;
            slot.live = true;
            slot.handler = Some(handler);
        }
        self.inner.handlers.set(self.inner.handlers.get() + 1);
        Ok(gen)
    }

    /// [`add_slot`](Self::add_slot) on a number whose slot is live: `AlreadyExists`, unless
    /// the handler there is stale (see [`handler_is_live`](Self::handler_is_live)), which is
    /// removed first.
    #[cold]
    #[inline(never)]
    fn add_occupied(
        &self,
        fd: RawFd,
        interest: Interest,
        mode: Mode,
        handler: Handler<P>,
    ) -> io::Result<u32> {
        if self.handler_is_live(fd)? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("fd {fd} already has a handler"),
            ));
        }
        self.add_slot(fd, interest, mode, handler)
    }

    /// Whether `fd` has a handler that still stands. A handler whose fd was closed behind the
    /// loop's back, and whose number now names another open file, is stale: the poller says
    /// so ([`Poller::is_stale`]: epoll, whose kernel forgot the closed fd silently, and
    /// io_uring, whose poll keeps the closed file). Such a handler gets its one [`Ready::ERROR`] and is
    /// removed, as poll and select report it at their next wait; this runs only when a new
    /// handler is added on an occupied number, never on the hot path.
    fn handler_is_live(&self, fd: RawFd) -> io::Result<bool> {
        let gen = match self.inner.fds.borrow().get(fd as usize) {
            Some(s) if s.live => s.gen,
            _ => return Ok(false),
        };
        // Not a `modify` probe: that would re-arm a Oneshot handler that has fired.
        if !self.inner.shared.poller.is_stale(fd)? {
            return Ok(true);
        }
        self.call_handler(fd, gen, Ready::ERROR);
        let still_ours = matches!(self.inner.fds.borrow().get(fd as usize),
            Some(s) if s.live && s.gen == gen);
        if still_ours {
            self.remove_handler(fd)?;
        }
        Ok(false)
    }

    /// Changes what `fd`'s handler waits for (its mode stays).
    ///
    /// # Errors
    ///
    /// `NotFound` if `fd` has no handler; what the poller reports.
    pub fn update_handler(&self, fd: impl HandlerFd, interest: Interest) -> io::Result<()> {
        let fd = fd.handler_fd();
        let mode = self.slot_mode(fd)?;
        self.update_handler_with(fd, interest, mode)
    }

    /// Changes what `fd`'s handler waits for and its mode; also re-arms a
    /// [`Mode::Oneshot`] handler that has fired.
    ///
    /// # Errors
    ///
    /// `NotFound` if `fd` has no handler; what the poller reports.
    pub fn update_handler_with(
        &self,
        fd: impl HandlerFd,
        interest: Interest,
        mode: Mode,
    ) -> io::Result<()> {
        self.update_slot(fd.handler_fd(), None, interest, mode)
    }

    /// Changes `fd`'s registration if it has a handler and, when `gen` is given, its
    /// registration is that generation (as [`remove_slot`](Self::remove_slot)).
    fn update_slot(
        &self,
        fd: RawFd,
        gen: Option<u32>,
        interest: Interest,
        mode: Mode,
    ) -> io::Result<()> {
        let mut fds = self.inner.fds.borrow_mut();
        let slot = usize::try_from(fd)
            .ok()
            .and_then(|i| fds.get_mut(i))
            .filter(|s| s.live && gen.map_or(true, |g| g == s.gen))
            .ok_or_else(|| if fd < 0 { bad_fd(fd) } else { no_handler(fd) })?;
        self.inner
            .shared
            .poller
            .modify(fd, pack(slot.gen, fd), interest, mode)?;
        slot.interest = interest;
        slot.mode = mode;
        Ok(())
    }

    fn slot_mode(&self, fd: RawFd) -> io::Result<Mode> {
        let fds = self.inner.fds.borrow();
        usize::try_from(fd)
            .ok()
            .and_then(|i| fds.get(i))
            .filter(|s| s.live)
            .map(|s| s.mode)
            .ok_or_else(|| if fd < 0 { bad_fd(fd) } else { no_handler(fd) })
    }

    /// Removes `fd`'s handler; events already collected for it are not delivered. Allowed
    /// inside any handler, including `fd`'s own.
    ///
    /// # Errors
    ///
    /// `NotFound` if `fd` has no handler (also on a second removal), `InvalidInput` if
    /// `fd < 0`. An fd that was already closed is removed without error (but see
    /// [`add_handler`](Self::add_handler) on epoll and a closed fd's duplicates).
    #[inline]
    pub fn remove_handler(&self, fd: impl HandlerFd) -> io::Result<()> {
        let fd = fd.handler_fd();
        self.remove_slot(fd, None)
            .unwrap_or_else(|| Err(if fd < 0 { bad_fd(fd) } else { no_handler(fd) }))
    }

    /// Removes `fd`'s handler if it has one and, when `gen` is given, its registration is
    /// that generation; `None` (nothing done) otherwise. An fd already closed is removed
    /// without error.
    #[inline(always)]
    fn remove_slot(&self, fd: RawFd, gen: Option<u32>) -> Option<io::Result<()>> {
        let handler = {
            let mut fds = self.inner.fds.borrow_mut();
            let slot = fds
                .get_mut(fd as usize)
                .filter(|s| s.live && gen.map_or(true, |g| g == s.gen))?;
            slot.gen = slot.gen.wrapping_add(1);
            slot.live = false;
            slot.handler.take()
        };
        self.inner.handlers.set(self.inner.handlers.get() - 1);
        let res = self.inner.shared.poller.deregister(fd);
        // Dropped with no borrow held: its destructor may use the loop. (If it is running
        // now, dispatch has it and drops it when it returns.)
        drop(handler);
        Some(match res {
            Err(e) if e.raw_os_error() == Some(libc::EBADF) || !is_open(fd) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        })
    }

    /// How many fds have a handler.
    pub fn handler_count(&self) -> usize {
        self.inner.handlers.get()
    }

    // ----- callbacks -----------------------------------------------------------------------

    /// Runs `f` on the next iteration of the loop (FIFO). Use [`Handle::add_callback`] from
    /// other threads.
    ///
    /// A closure that captures at most two words (an `Rc`, an `Arc`, a pair of them) is
    /// stored without a heap allocation; a larger one is boxed.
    pub fn add_callback(&self, f: impl FnOnce(&IoLoop<P>) + 'static) {
        self.inner
            .callbacks
            .borrow_mut()
            .push_back(InlineFnOnce::new(f));
        self.set_hint(CALLBACKS);
    }

    // ----- timers --------------------------------------------------------------------------

    /// Runs `f` once, `delay` from now (never earlier). `Duration::MAX` means "practically
    /// never" and does not overflow.
    pub fn call_later(&self, delay: Duration, f: impl FnOnce(&IoLoop<P>) + 'static) -> TimeoutId {
        self.call_at(deadline_after(Instant::now(), delay), f)
    }

    /// Runs `f` once at `deadline` (never earlier); a deadline in the past runs on the next
    /// iteration. Timers with equal deadlines run in the order they were added.
    ///
    /// A closure that captures at most two words (an `Rc`, an `Arc`, a pair of them) is
    /// stored without a heap allocation; a larger one is boxed.
    pub fn call_at(&self, deadline: Instant, f: impl FnOnce(&IoLoop<P>) + 'static) -> TimeoutId {
        let id = self
            .inner
            .timers
            .borrow_mut()
            .insert(deadline, Callback::Once(InlineFnOnce::new(f)));
        self.set_hint(TIMERS);
        id
    }

    /// Runs `f` every `period`, first at now + `period`, until
    /// [`remove_timeout`](Self::remove_timeout) (callable from inside `f`). Drift-free: each
    /// deadline is the previous deadline + `period`; after a stall the missed ticks are
    /// skipped, not run in a burst.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero period.
    pub fn call_every(
        &self,
        period: Duration,
        f: impl FnMut(&IoLoop<P>) + 'static,
    ) -> io::Result<TimeoutId> {
        if period.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a periodic callback needs a period > 0",
            ));
        }
        let deadline = deadline_after(Instant::now(), period);
        let id = self.inner.timers.borrow_mut().insert(
            deadline,
            Callback::Every(Box::new(PeriodicTimer {
                period,
                f: Some(Box::new(f)),
            })),
        );
        self.set_hint(TIMERS);
        Ok(id)
    }

    /// Cancels a timeout; returns whether it was pending (`false` for one that fired, was
    /// removed before, or is unknown). O(1); cancelled entries are purged once they outnumber
    /// the live ones.
    pub fn remove_timeout(&self, id: TimeoutId) -> bool {
        let callback = self.inner.timers.borrow_mut().remove(id);
        // Dropped with nothing borrowed: what it captured may use the loop's timers.
        callback.is_some()
    }

    /// How many timers are pending.
    pub fn timer_count(&self) -> usize {
        self.inner.timers.borrow().len()
    }

    /// Timer queue entries, cancelled ones included (bounded by about twice the live count).
    #[doc(hidden)]
    pub fn timer_queue_len(&self) -> usize {
        self.inner.timers.borrow().heap_len()
    }

    // ----- signals -------------------------------------------------------------------------

    /// Calls `handler(loop, signum)` on the loop, as an ordinary event, after `signum` is
    /// delivered to the process (several deliveries between two iterations may merge into
    /// one call). The previous disposition is restored on
    /// [`remove_signal_handler`](Self::remove_signal_handler) or when the loop is dropped.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a number that is not a signal the program may catch (and for
    /// `SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`; real-time signals are fine, except those
    /// libc keeps for itself); `AlreadyExists` if some loop of this process handles `signum`
    /// already.
    pub fn add_signal_handler(
        &self,
        signum: i32,
        mut handler: impl FnMut(&IoLoop<P>, i32) + 'static,
    ) -> io::Result<()> {
        let pipe = SignalPipe::new(signum)?;
        self.add_handler(pipe.fd(), Interest::READABLE, move |lp, _fd, _ready| {
            let drained = lp
                .inner
                .signals
                .borrow()
                .iter()
                .find(|(s, _)| *s == signum)
                .map_or(0, |(_, pipe)| pipe.drain());
            if drained > 0 {
                handler(lp, signum);
            }
        })?;
        self.inner.signals.borrow_mut().push((signum, pipe));
        Ok(())
    }

    /// Stops handling `signum` and restores its previous disposition, before it returns
    /// (also when called from the signal's own handler, which may then add a new one).
    ///
    /// # Errors
    ///
    /// `NotFound` if this loop has no handler for `signum`.
    pub fn remove_signal_handler(&self, signum: i32) -> io::Result<()> {
        let pipe = {
            let mut sigs = self.inner.signals.borrow_mut();
            let i = sigs.iter().position(|(s, _)| *s == signum).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no handler for signal {signum}"),
                )
            })?;
            sigs.swap_remove(i).1
        };
        let res = self.remove_handler(pipe.fd());
        // After the fd's registration: closing the pipe restores the old disposition.
        drop(pipe);
        res
    }

    // ----- running -------------------------------------------------------------------------

    /// Runs the loop until [`stop`](Self::stop) (or [`Handle::stop`]).
    ///
    /// A panic in a handler, callback or timer unwinds out of `run`; the loop stays
    /// consistent (every other handler and timer intact, undelivered events kept) and `run`
    /// can be called again.
    ///
    /// # Errors
    ///
    /// What the poller's wait reports, or `Other` if the loop is already running (a nested
    /// `run` from inside a handler).
    pub fn run(&self) -> io::Result<()> {
        self.run_until(|_| false)
    }

    /// Runs the loop until `done(loop)` is true (checked before each iteration) or the loop
    /// is stopped.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub fn run_until(&self, mut done: impl FnMut(&IoLoop<P>) -> bool) -> io::Result<()> {
        let _running = self.enter()?;
        let stop = &self.inner.shared.stop;
        while !done(self) {
            self.iteration(&mut done)?;
            if stop.load(Ordering::SeqCst) && stop.swap(false, Ordering::SeqCst) {
                break;
            }
        }
        Ok(())
    }

    /// Runs one iteration (see the [type docs](IoLoop)), waiting at most as the loop would.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub fn run_once(&self) -> io::Result<()> {
        let _running = self.enter()?;
        self.iteration(&mut |_| false)?;
        // A stop() during this iteration is consumed here, not by the next `run`.
        self.inner.shared.stop.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Makes [`run`](Self::run) return after the current iteration (if the loop is not
    /// running, the next `run` returns after one iteration). Calling it twice is the same as
    /// once.
    ///
    /// Called from a callback, it ends the iteration right after the callbacks, before the
    /// wait for I/O (as in Tornado): ready fds are handled by the next `run`.
    pub fn stop(&self) {
        self.inner.shared.stop.store(true, Ordering::SeqCst);
    }

    /// Whether a `run`/`run_once`/`run_until` is in progress.
    pub fn is_running(&self) -> bool {
        self.inner.in_run.get()
    }

    fn enter(&self) -> io::Result<RunGuard<'_>> {
        if self.inner.in_run.replace(true) {
            // Not `io::Error::other`: that is Rust 1.74, above the crate's MSRV (1.70).
            return Err(io::Error::new(
                io::ErrorKind::Other,
                "IoLoop::run called while the loop is already running",
            ));
        }
        let current = crate::task::enter(self.inner.ops.clone(), self.inner.tasks.clone());
        Ok(RunGuard(&self.inner.in_run, current))
    }

    /// One iteration. `done` is `run_until`'s condition: when the callbacks make it true, the
    /// iteration ends before waiting, so nothing blocks on a loop that has finished.
    fn iteration(&self, done: &mut impl FnMut(&IoLoop<P>) -> bool) -> io::Result<()> {
        // Events a panicking handler left undelivered go first.
        if self.inner.batch_pos.get() != BATCH_DONE {
            self.dispatch_rest();
        }
        let mut callbacks = self.has_callbacks();
        if callbacks {
            self.run_callbacks();
            // Like Tornado, a loop stopped (or finished) by its callbacks ends the iteration
            // here rather than polling once more.
            if done(self) || self.inner.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            callbacks = self.has_callbacks();
        }
        let timeout = self.wait_timeout(callbacks);
        // One borrow for the wait and the dispatch: only `iteration` touches the events, and
        // a nested run is refused before it gets here.
        let mut events = self.inner.events.borrow_mut();
        self.inner.shared.poller.wait(&mut events, timeout)?;
        self.dispatch_batch(events.as_slice(), 0);
        drop(events);
        if self.inner.hints.get() & TIMERS != 0 {
            self.fire_timers();
        }
        // Tasks woken by this iteration's callbacks, events and timers run now, so a
        // `run_until` condition they change is seen before the next wait.
        self.inner.tasks.run_ready();
        Ok(())
    }

    #[inline]
    fn set_hint(&self, bit: u8) {
        self.inner.hints.set(self.inner.hints.get() | bit);
    }

    #[inline]
    fn clear_hint(&self, bit: u8) {
        self.inner.hints.set(self.inner.hints.get() & !bit);
    }

    /// Callbacks queued here or from other threads (or left by a panicking one).
    #[inline]
    fn has_callbacks(&self) -> bool {
        (self.inner.hints.get() & CALLBACKS != 0 && self.has_local_callbacks())
            || self.inner.shared.remote_pending.load(Ordering::SeqCst)
    }

    /// Callbacks queued on this thread (or left by a panicking one); clears the
    /// [`CALLBACKS`] hint when there are none.
    fn has_local_callbacks(&self) -> bool {
        let queued =
            !self.inner.callbacks.borrow().is_empty() || !self.inner.running.borrow().is_empty();
        if !queued {
            self.clear_hint(CALLBACKS);
        }
        queued
    }

    /// The wait's timeout: none if callbacks are queued (`callbacks`) or the loop is stopping,
    /// else until the earliest timer, else unbounded.
    #[inline]
    fn wait_timeout(&self, callbacks: bool) -> Option<Duration> {
        if callbacks
            || self.inner.shared.stop.load(Ordering::SeqCst)
            || self.inner.tasks.has_ready()
        {
            return Some(Duration::ZERO);
        }
        if self.inner.hints.get() & TIMERS == 0 {
            return None;
        }
        self.timer_timeout()
    }

    /// The time until the earliest timer; `None` (and the [`TIMERS`] hint cleared) if there
    /// is none.
    fn timer_timeout(&self) -> Option<Duration> {
        let next = self.inner.timers.borrow_mut().next_deadline();
        let Some(next) = next else {
            self.clear_hint(TIMERS);
            return None;
        };
        Some(next.saturating_duration_since(Instant::now()))
    }

    fn run_callbacks(&self) {
        let inner = &*self.inner;
        // Without the hint both local queues are empty (only other threads queued work).
        if inner.hints.get() & CALLBACKS != 0 {
            {
                let mut running = inner.running.borrow_mut();
                if running.is_empty() {
                    std::mem::swap(&mut *running, &mut *inner.callbacks.borrow_mut());
                }
            }
            loop {
                let next = inner.running.borrow_mut().pop_front();
                match next {
                    Some(cb) => cb.call(self),
                    None => break,
                }
            }
        }
        if inner.shared.remote_pending.load(Ordering::SeqCst)
            && inner.shared.remote_pending.swap(false, Ordering::SeqCst)
        {
            self.run_remote_callbacks();
        }
    }

    /// Runs the callbacks other threads queued, straight from the queue they were swapped out
    /// of (no copy into the local queue).
    fn run_remote_callbacks(&self) {
        let inner = &*self.inner;
        {
            let mut queued = inner
                .shared
                .remote
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let Some(queued) = queued.as_mut() else {
                return; // only once the loop is being dropped
            };
            let mut running = inner.remote_running.borrow_mut();
            if running.is_empty() {
                std::mem::swap(queued, &mut *running);
            } else {
                running.append(queued); // what a panicking callback left
            }
        }
        /// Unless disarmed (all ran), flags what a panicking callback left for the next
        /// iteration.
        struct Leftover<'a>(&'a AtomicBool, bool);
        impl Drop for Leftover<'_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
        }
        let mut leftover = Leftover(&inner.shared.remote_pending, true);
        loop {
            let next = inner.remote_running.borrow_mut().pop_front();
            match next {
                Some(cb) => cb.call(self),
                None => break,
            }
        }
        leftover.1 = false;
    }

    /// Dispatches what a panicking handler left of the last batch.
    #[cold]
    #[inline(never)]
    fn dispatch_rest(&self) {
        let events = self.inner.events.borrow();
        self.dispatch_batch(events.as_slice(), self.inner.batch_pos.get());
    }

    /// Dispatches `list[start..]`, the current batch (borrowed from `events` throughout).
    #[inline(always)]
    fn dispatch_batch(&self, list: &[Event], start: usize) {
        let mut i = start;
        while let Some(ev) = list.get(i) {
            i += 1;
            // Advanced before the handler runs: if it panics, the next run goes on after it.
            self.inner.batch_pos.set(i);
            self.dispatch(ev.token(), ev.ready());
        }
        self.inner.batch_pos.set(BATCH_DONE);
    }

    #[inline(always)]
    fn dispatch(&self, token: u64, ready: Ready) {
        let (gen, fd) = unpack(token);
        if !self.call_handler(fd, gen, ready) {
            return;
        }
        if ready.contains(Ready::ERROR) && !is_open(fd) {
            // Closed behind the loop's back: its handler has had its ERROR; drop it so the
            // loop does not spin on poll's POLLNVAL or select's EBADF.
            let still_ours = matches!(self.inner.fds.borrow().get(fd as usize),
                Some(s) if s.live && s.gen == gen);
            if still_ours {
                let _ = self.remove_handler(fd);
            }
        }
    }

    /// Calls the handler of `fd` if its registration is still generation `gen` (and it is
    /// not running already); returns whether it was called. The handler is lent out of its
    /// slot for the call, so it can add, change or remove any handler, itself included.
    #[inline]
    fn call_handler(&self, fd: RawFd, gen: u32, ready: Ready) -> bool {
        let handler = match self.inner.fds.borrow_mut().get_mut(fd as usize) {
            Some(s) if s.gen == gen => s.handler.take(),
            _ => None,
        };
        let Some(handler) = handler else {
            return false;
        };
        let mut lent = Lent {
            lp: self,
            fd,
            gen,
            handler: Some(handler),
        };
        if let Some(h) = lent.handler.as_mut() {
            h(self, fd, ready);
        }
        true
    }

    fn fire_timers(&self) {
        let mark = {
            let timers = self.inner.timers.borrow();
            if timers.len() == 0 {
                self.clear_hint(TIMERS);
                return;
            }
            timers.mark(Instant::now())
        };
        loop {
            let due = self.inner.timers.borrow_mut().pop_due(&mark);
            match due {
                None => return,
                Some(Due::Once(f)) => f.call(self),
                Some(Due::Every(id, g)) => {
                    let mut lent = LentPeriodic {
                        lp: self,
                        id,
                        f: Some(g),
                    };
                    if let Some(f) = lent.f.as_mut() {
                        f(self);
                    }
                }
            }
        }
    }
}

/// Clears the "running" flag however `run` ends (return or unwind); its second field restores
/// the task layer's previous "current loop" when dropped.
struct RunGuard<'a>(&'a Cell<bool>, #[allow(dead_code)] CurrentGuard);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// A handler lent out of its slot while it runs; given back on return and on unwind, unless
/// the slot was removed (or re-added) meanwhile: then it is dropped, with no borrow held.
struct Lent<'a, P: Poller> {
    lp: &'a IoLoop<P>,
    fd: RawFd,
    gen: u32,
    handler: Option<Handler<P>>,
}

impl<P: Poller> Drop for Lent<'_, P> {
    #[inline(always)]
    fn drop(&mut self) {
        let handler = self.handler.take();
        // The generation is bumped on every removal: the same generation means the slot is
        // still live (and its handler is this one, lent out).
        let left = match self.lp.inner.fds.borrow_mut().get_mut(self.fd as usize) {
            Some(s) if s.gen == self.gen && s.handler.is_none() => {
                debug_assert!(s.live);
                s.handler = handler;
                None
            }
            _ => handler,
        };
        if let Some(h) = left {
            drop_handler(h);
        }
    }
}

/// Drops a handler whose registration was removed while it ran (out of line: rare, and it
/// keeps [`Lent`]'s drop small enough to inline into dispatch).
#[cold]
#[inline(never)]
fn drop_handler<P: Poller>(handler: Handler<P>) {
    drop(handler);
}

/// A periodic callback lent out while it runs; given back on return and on unwind.
struct LentPeriodic<'a, P: Poller> {
    lp: &'a IoLoop<P>,
    id: TimeoutId,
    f: Option<Periodic<P>>,
}

impl<P: Poller> Drop for LentPeriodic<'_, P> {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            let left = self.lp.inner.timers.borrow_mut().restore_every(self.id, f);
            // Cancelled while it ran: dropped with nothing borrowed (see `remove_timeout`).
            drop(left);
        }
    }
}

/// A `Send + Sync` handle to an [`IoLoop`] for other threads.
///
/// # Examples
///
/// ```
/// use ioloop::IoLoop;
///
/// let lp = IoLoop::new()?;
/// let handle = lp.handle();
/// let t = std::thread::spawn(move || {
///     handle.add_callback(|lp| lp.stop()).unwrap();
/// });
/// lp.run()?; // returns once the other thread's callback has run
/// t.join().unwrap();
/// # std::io::Result::Ok(())
/// ```
pub struct Handle<P: Poller = DefaultPoller> {
    shared: Arc<Shared<P>>,
}

impl<P: Poller> Clone for Handle<P> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<P: Poller> std::fmt::Debug for Handle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("poller", &P::NAME).finish()
    }
}

impl<P: Poller> Handle<P> {
    /// Runs `f` on the loop's thread, on its next iteration, waking the loop if it waits.
    /// Callbacks from one thread run in the order they were added.
    ///
    /// A closure that captures at most two words (an `Rc`, an `Arc`, a pair of them) is
    /// stored without a heap allocation; a larger one is boxed.
    ///
    /// # Errors
    ///
    /// `NotConnected` if the loop has been dropped (`f` is dropped at once); what the
    /// poller's notifier reports (the callback is queued even then).
    pub fn add_callback(&self, f: impl FnOnce(&IoLoop<P>) + Send + 'static) -> io::Result<()> {
        self.shared
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "the IoLoop has been dropped")
            })?
            .push_back(InlineSendFnOnce::new(f));
        // SeqCst: pairs with the notifier's flag (see `Notifier::notify`), so the loop
        // either sees this store after its wait or is woken by this notify.
        self.shared.remote_pending.store(true, Ordering::SeqCst);
        self.shared.poller.notify()
    }

    /// Makes the loop's `run` return after its current iteration, waking it if it waits.
    ///
    /// # Errors
    ///
    /// What the poller's notifier reports.
    pub fn stop(&self) -> io::Result<()> {
        self.shared.stop.store(true, Ordering::SeqCst); // pairs with the notifier (SeqCst)
        self.shared.poller.notify()
    }
}

// ----- hooks for the task layer (crate::task) --------------------------------------------

impl<P: Poller> IoLoop<P> {
    /// The loop's task executor.
    pub(crate) fn executor(&self) -> &Rc<Executor> {
        &self.inner.tasks
    }

    /// This loop, type-erased and weak (what `Async` sources and timer futures keep).
    pub(crate) fn ops(&self) -> &Rc<dyn LoopOps> {
        &self.inner.ops
    }
}

/// A weak reference to a loop. The task layer's type-erased handle ([`LoopOps`]) wraps it,
/// so tasks, `Async` sources and timers never keep their loop alive (no reference cycle).
pub(crate) struct WeakLoop<P: Poller>(Weak<Inner<P>>);

impl<P: Poller> WeakLoop<P> {
    /// The loop, if it still exists.
    pub(crate) fn upgrade(&self) -> Option<IoLoop<P>> {
        self.0.upgrade().map(|inner| IoLoop { inner })
    }
}

impl<P: Poller> IoLoop<P> {
    /// [`add_handler_with`](Self::add_handler_with) for the task layer: returns the
    /// registration's generation (what [`remove_registration`](Self::remove_registration)
    /// checks). Inlined with [`add_slot`](Self::add_slot) into its caller, so that a
    /// constant `interest` and `mode` fold into the poller's call.
    #[inline(always)]
    pub(crate) fn add_registration(
        &self,
        fd: RawFd,
        interest: Interest,
        mode: Mode,
        handler: impl FnMut(&IoLoop<P>, RawFd, Ready) + 'static,
    ) -> io::Result<u32> {
        self.add_slot(fd, interest, mode, Box::new(handler))
    }

    /// Removes `fd`'s handler if its registration is generation `gen` (what
    /// [`add_registration`](Self::add_registration) returned), checked and removed in one
    /// borrow of the table; `Ok` with nothing removed if it is not (removed already, or a
    /// newer registration of the number). Otherwise as [`remove_handler`](Self::remove_handler).
    #[inline]
    pub(crate) fn remove_registration(&self, fd: RawFd, gen: u32) -> io::Result<()> {
        self.remove_slot(fd, Some(gen)).unwrap_or(Ok(()))
    }

    /// [`update_handler_with`](Self::update_handler_with) of the registration `gen` of `fd`
    /// only: `NotFound` if the reactor has dropped it (the fd was found closed or stale) and
    /// the number has perhaps been registered again since (the task layer's re-arm, which
    /// must not change a newer `Async`'s registration).
    pub(crate) fn update_registration(
        &self,
        fd: RawFd,
        gen: u32,
        interest: Interest,
        mode: Mode,
    ) -> io::Result<()> {
        self.update_slot(fd, Some(gen), interest, mode)
    }
}

impl<P: Poller> Drop for Inner<P> {
    /// Deregisters every fd that still has a handler: a [`Handle`] can keep the poller alive
    /// after the loop, and on io_uring a registration holds its file open (a socket an
    /// `Async` closes as the loop's tasks drop would otherwise stay open until then).
    fn drop(&mut self) {
        // Callbacks other threads queued are dropped now (what they hold is released), and
        // no more are taken: they would wait for the last `Handle` to go.
        let queued = self
            .shared
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(queued);
        for (fd, slot) in self.fds.get_mut().iter().enumerate() {
            if slot.live {
                if let Ok(fd) = RawFd::try_from(fd) {
                    let _ = self.shared.poller.deregister(fd);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// A loop with a handler on one end of a pair that reads one byte and calls `then`.
    fn with_reader(then: impl Fn(&IoLoop) + 'static) -> (IoLoop, UnixStream, UnixStream) {
        let lp = IoLoop::new().expect("IoLoop::new");
        let (a, b) = UnixStream::pair().expect("pair");
        let mut reader = b.try_clone().expect("try_clone");
        lp.add_handler(&b, Interest::READABLE, move |lp, _, _| {
            let mut buf = [0; 1];
            assert_eq!(reader.read(&mut buf).expect("read"), 1);
            then(lp);
        })
        .expect("add_handler");
        (lp, a, b)
    }

    #[test]
    fn timer_added_by_a_handler_fires_in_the_same_iteration() {
        let fired = Rc::new(Cell::new(0));
        let f = fired.clone();
        let (lp, mut a, _b) = with_reader(move |lp| {
            let f = f.clone();
            lp.call_later(Duration::ZERO, move |_| f.set(f.get() + 1));
        });
        assert_eq!(lp.inner.hints.get() & TIMERS, 0);
        a.write_all(b"x").expect("write");
        lp.run_once().expect("run_once");
        assert_eq!(fired.get(), 1);
    }

    #[test]
    fn callback_added_by_a_handler_runs_next_iteration() {
        let ran = Rc::new(Cell::new(0));
        let r = ran.clone();
        let (lp, mut a, _b) = with_reader(move |lp| {
            let r = r.clone();
            lp.add_callback(move |lp| {
                r.set(r.get() + 1);
                lp.stop();
            });
        });
        a.write_all(b"x").expect("write");
        lp.run_once().expect("run_once");
        assert_eq!(
            ran.get(),
            0,
            "a callback added by a handler waits for the next iteration"
        );
        // The callback stops the loop before the wait: `run` returns although no fd is ready.
        lp.run().expect("run");
        assert_eq!(ran.get(), 1);
    }

    #[test]
    fn cancelled_timers_clear_the_hint_and_new_ones_still_fire() {
        let lp = IoLoop::new().expect("IoLoop::new");
        let id = lp.call_later(Duration::from_secs(3600), |_| unreachable!("cancelled"));
        assert!(lp.remove_timeout(id));
        assert_ne!(lp.inner.hints.get() & TIMERS, 0, "a hint is cleared lazily");
        // A callback that queues another makes the wait non-blocking; the iteration sees the
        // timer queue empty and clears the stale hint.
        lp.add_callback(|lp| lp.add_callback(|_| {}));
        lp.run_once().expect("run_once");
        assert_eq!(lp.inner.hints.get() & TIMERS, 0);
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        lp.call_later(Duration::ZERO, move |_| f.set(true));
        lp.run_once().expect("run_once");
        assert!(fired.get());
    }
}
