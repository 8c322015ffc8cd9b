//! Tasks: futures run by the loop (the seed's coroutines).
//!
//! * [`IoLoop::spawn`] (or the free [`spawn`]) adds a task and returns its [`JoinHandle`];
//!   [`IoLoop::block_on`] runs the loop until one future completes; [`Handle::spawn`] starts a
//!   `Send` future from another thread.
//! * [`Async<T>`] waits for an fd's readiness, with ready-made operations for std's sockets:
//!   TCP (`Async<TcpListener>::bind`/`accept`, `Async<TcpStream>::connect`), UDP
//!   (`Async<UdpSocket>`), and Unix sockets by path or by std's `SocketAddr` (abstract
//!   names on Linux: `bind_addr`, `connect_addr`, `send_to_addr`) (`Async<UnixListener>`,
//!   `Async<UnixStream>::connect`, `Async<UnixDatagram>`); [`sleep`], [`timeout`],
//!   [`interval`] and [`yield_now`] use the loop's timers.
//!
//! # How tasks run
//!
//! Tasks are single-threaded: a future need not be `Send`, and it is only polled on its
//! loop's thread. Waking a task queues it on the loop's run queue; each loop iteration, after
//! its callbacks, polls the tasks that were queued when the pass began (one poll each, FIFO),
//! and does not block in its wait while tasks are queued. A task woken from another thread
//! (its `Waker` is `Send + Sync`) is queued the same way and the poller is notified. Tasks are
//! woken only by the reactor — fd events ([`Mode::Edge`] registrations where the poller has
//! them, except on io_uring; else [`Mode::Oneshot`]), timers, other tasks, wakers — never by
//! polling in a loop.
//!
//! A task that panics does not take the loop down: the panic is caught, the task is dropped,
//! and its [`JoinHandle`] returns a [`JoinError`] carrying the payload.
//!
//! # The current loop
//!
//! While a loop runs (`run`, `run_until`, `run_once`, `block_on`), it is the thread's
//! *current loop*: [`spawn`], [`Async::new`], [`sleep`], [`timeout`] and [`interval`] use it,
//! so code inside tasks needs no loop argument. It is kept in a thread-local as a type-erased,
//! weak handle (the loop's poller type is not part of these APIs), set on entry to `run` and
//! restored on exit, so loops may be nested on one thread. Outside a running loop, use
//! [`IoLoop::spawn`] and [`Async::with_loop`], which name their loop.
//!
//! Nothing in this layer keeps a loop alive: tasks, `Async` values and timers hold weak
//! references, so dropping the loop drops its pending tasks. (A task that captures an
//! [`IoLoop`] clone does keep it alive — prefer [`IoLoop::current`] inside the task.)
//!
//! # Allocation
//!
//! Spawning allocates the task (its future, boxed) and its header; a [`Sleep`] allocates its
//! timer on first poll. Waking and re-polling a task allocates nothing: the task's waker is
//! built once, queues are reused buffers, and an [`Async`] wait only stores the waker (and
//! re-arms a Oneshot registration).

mod async_fd;
mod executor;
mod join;
mod time;

use std::any::Any;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::pin;
use std::rc::Rc;
use std::task::Context;
use std::time::{Duration, Instant};

pub use async_fd::Async;
pub use join::{JoinError, JoinHandle};
pub use time::{
    interval, sleep, sleep_until, timeout, timeout_at, yield_now, Elapsed, Interval, Sleep,
    YieldNow,
};

pub(crate) use executor::Executor;

use crate::ioloop::WeakLoop;
use crate::timers::TimeoutId;
use crate::{Handle, Interest, IoLoop, Mode, Poller};
use async_fd::IoSource;
use time::TimerState;

/// What the task layer needs from a loop, with its poller type erased. Implemented by
/// [`WeakLoop`]: every call upgrades the weak reference and does nothing (or fails with
/// `NotConnected`) if the loop is gone.
pub(crate) trait LoopOps {
    /// For [`IoLoop::current`]'s downcast.
    fn as_any(&self) -> &dyn Any;
    fn executor(&self) -> Option<Rc<Executor>>;
    /// Schedules `timer.fire()` at `deadline`.
    fn call_at(&self, deadline: Instant, timer: Rc<TimerState>) -> Option<TimeoutId>;
    /// Schedules `timer.fire()` every `period`.
    fn call_every(&self, period: Duration, timer: Rc<TimerState>) -> Option<TimeoutId>;
    fn remove_timeout(&self, id: TimeoutId);
    /// Registers `fd`, with an empty interest, and a handler that wakes its source:
    /// edge-triggered where the poller has [`Mode::Edge`] (but not on io_uring), else
    /// Oneshot (see `use_edge`). Returns the source (a new one, or a reused allocation: see
    /// [`Executor::new_source`]).
    fn add_source(&self, fd: RawFd) -> io::Result<Rc<IoSource>>;
    /// Updates the source's registration to `interest` in `mode`: arms a Oneshot one, or
    /// sets what an Edge one watches (which also makes the kernel report its current state).
    fn arm(&self, fd: RawFd, gen: u32, interest: Interest, mode: Mode) -> io::Result<()>;
    /// Removes the source's registration and takes its wakers (the executor keeps the
    /// source, for reuse).
    fn remove_source(&self, source: &IoSource) -> io::Result<()>;
}

fn loop_gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the IoLoop was dropped")
}

impl<P: Poller> LoopOps for WeakLoop<P> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn executor(&self) -> Option<Rc<Executor>> {
        self.upgrade().map(|lp| lp.executor().clone())
    }

    fn call_at(&self, deadline: Instant, timer: Rc<TimerState>) -> Option<TimeoutId> {
        let lp = self.upgrade()?;
        Some(lp.call_at(deadline, move |_| timer.fire(Instant::now())))
    }

    fn call_every(&self, period: Duration, timer: Rc<TimerState>) -> Option<TimeoutId> {
        let lp = self.upgrade()?;
        lp.call_every(period, move |_| timer.fire(Instant::now()))
            .ok()
    }

    fn remove_timeout(&self, id: TimeoutId) {
        if let Some(lp) = self.upgrade() {
            lp.remove_timeout(id);
        }
    }

    fn add_source(&self, fd: RawFd) -> io::Result<Rc<IoSource>> {
        let lp = self.upgrade().ok_or_else(loop_gone)?;
        add_source(&lp, fd)
    }

    fn arm(&self, fd: RawFd, gen: u32, interest: Interest, mode: Mode) -> io::Result<()> {
        let lp = self.upgrade().ok_or_else(loop_gone)?;
        lp.update_registration(fd, gen, interest, mode)
    }

    fn remove_source(&self, source: &IoSource) -> io::Result<()> {
        let Some(lp) = self.upgrade() else {
            return Ok(());
        };
        // Only the registration made for this source: the reactor may have dropped it (its
        // fd was found stale or closed) and the number been registered again since.
        let res = lp.remove_registration(source.fd, source.gen);
        // The executor keeps the source for the fd's next registration: without its wakers
        // (dropped here, with nothing borrowed).
        let wakers = source.retire();
        drop(wakers);
        res
    }
}

/// Whether the task layer registers its sources edge-triggered on `poller` (else Oneshot):
/// where the poller has [`Mode::Edge`], unless its priority reports are inexact and a
/// re-arm costs no system call (io_uring: [`Poller::priority_exact`],
/// [`Poller::modify_deferred`]). Edge-triggered without exact priority, a short read on a
/// TCP or (Linux) Unix stream socket shows nothing, so every report costs a second read
/// that only says `WouldBlock`; a Oneshot registration is checked anew when re-armed, so
/// the short read is enough, and there the re-arm goes out with the next wait. Fan-in of
/// 1 000 Unix socketpairs on io_uring: 1.15 -> 1.08 x a raw epoll loop's time per event.
fn use_edge<P: Poller>(poller: &P) -> bool {
    poller.supports(Mode::Edge) && (poller.priority_exact() || !poller.modify_deferred())
}

/// [`LoopOps::add_source`] on a loop of known type (what [`Async::with_loop`] calls, with no
/// weak reference to upgrade).
#[inline]
pub(crate) fn add_source<P: Poller>(lp: &IoLoop<P>, fd: RawFd) -> io::Result<Rc<IoSource>> {
    // The handlers capture nothing, so they cost no allocation: they find the source in
    // the executor's table, where it goes once the registration stands.
    let edge = use_edge(lp.poller());
    let gen = if edge {
        lp.add_registration(fd, Interest::empty(), Mode::Edge, |lp, fd, ready| {
            if let Some(source) = lp.executor().source(fd) {
                // Edge registrations stay armed: nothing to re-arm.
                source.on_ready(ready, |_| {});
            }
        })?
    } else {
        lp.add_registration(fd, Interest::empty(), Mode::Oneshot, |lp, fd, ready| {
            let Some(source) = lp.executor().source(fd) else {
                return;
            };
            // Called before any task is woken, with the registration disarmed (the report
            // disarmed it): armed again for the directions still waited on.
            source.on_ready(ready, |rest| {
                match lp.update_registration(fd, source.gen, rest, Mode::Oneshot) {
                    Ok(()) => source.armed.set(rest),
                    // The waiting tasks try again, and their own wait reports the error.
                    Err(_) => source.wake_waiting(rest),
                }
            });
        })?
    };
    let pri = edge && lp.poller().priority_exact();
    Ok(lp.executor().new_source(fd, gen, edge, pri, lp.ops()))
}

/// Restores the previous current loop (and local executor) when dropped.
pub(crate) struct CurrentGuard(Option<executor::Running>);

/// Makes `ops` the thread's current loop, and `executor` the one that wakes on this thread
/// queue to without a lock, until the guard drops.
pub(crate) fn enter(ops: Rc<dyn LoopOps>, executor: Rc<Executor>) -> CurrentGuard {
    CurrentGuard(executor::enter(executor::Running { ops, executor }))
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        executor::leave(self.0.take());
    }
}

/// The thread's current loop, if one is running.
pub(crate) fn current() -> Option<Rc<dyn LoopOps>> {
    executor::current()
}

#[track_caller]
pub(crate) fn current_or_panic(what: &str) -> Rc<dyn LoopOps> {
    match current() {
        Some(ops) => ops,
        None => panic!("{what} needs a running IoLoop (call it from a task, or inside IoLoop::run or block_on)"),
    }
}

/// Spawns `future` as a task on the current loop (see [`IoLoop::spawn`]).
///
/// # Panics
///
/// If no loop is running on this thread (use [`IoLoop::spawn`] there).
///
/// # Examples
///
/// ```
/// use ioloop::IoLoop;
///
/// let lp = IoLoop::new()?;
/// let v = lp.block_on(async { ioloop::spawn(async { 6 * 7 }).await })?;
/// assert_eq!(v.unwrap(), 42);
/// # std::io::Result::Ok(())
/// ```
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let exec = current_or_panic("ioloop::spawn")
        .executor()
        .expect("ioloop::spawn: the current IoLoop is being dropped");
    exec.spawn(future)
}

impl<P: Poller> IoLoop<P> {
    /// Spawns `future` as a task of this loop: it starts on the loop's next iteration and
    /// runs, on the loop's thread, whenever it is woken. The future need not be `Send`.
    ///
    /// Dropping the returned [`JoinHandle`] cancels the task; call
    /// [`detach`](JoinHandle::detach) to let it run on its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop::IoLoop;
    ///
    /// let lp = IoLoop::new()?;
    /// let task = lp.spawn(async { "done" });
    /// assert_eq!(lp.block_on(task)?.unwrap(), "done");
    /// # std::io::Result::Ok(())
    /// ```
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.executor().spawn(future)
    }

    /// Runs the loop until `future` completes and returns its output. The future is polled
    /// on this thread and may borrow from the caller; tasks it spawns run on this loop, and
    /// those still pending when it completes stay spawned (they run on the next `run` or
    /// `block_on`).
    ///
    /// # Errors
    ///
    /// `Other` if the loop is already running — `block_on` from inside a task, handler or
    /// callback of this loop (`.await` the future there instead) — or if the loop was
    /// [stopped](Self::stop) before the future completed; and what the poller's wait
    /// reports.
    ///
    /// # Panics
    ///
    /// A panic of `future` itself propagates (the loop stays usable); panics of spawned
    /// tasks are caught and reported by their [`JoinHandle`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ioloop::IoLoop;
    ///
    /// let lp = IoLoop::new()?;
    /// let n = lp.block_on(async {
    ///     ioloop::sleep(Duration::from_millis(1)).await;
    ///     1 + 1
    /// })?;
    /// assert_eq!(n, 2);
    /// # std::io::Result::Ok(())
    /// ```
    pub fn block_on<F: Future>(&self, future: F) -> io::Result<F::Output> {
        if self.is_running() {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                "IoLoop::block_on called while the loop is running (from a task, handler or \
                 callback of this loop); .await the future or spawn it instead",
            ));
        }
        let exec = self.executor().clone();
        let (waker, header) = exec.begin_main();
        struct EndMain<'a>(&'a Executor);
        impl Drop for EndMain<'_> {
            fn drop(&mut self) {
                self.0.end_main();
            }
        }
        let _end = EndMain(&exec);
        let mut future = pin!(future);
        let mut output = None;
        self.run_until(|_| {
            if !exec.take_main_woken(&header) {
                return false;
            }
            let mut cx = Context::from_waker(&waker);
            match future.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(v) => {
                    output = Some(v);
                    true
                }
                std::task::Poll::Pending => false,
            }
        })?;
        output.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Other,
                "IoLoop::block_on: the loop was stopped before the future completed",
            )
        })
    }

    /// The loop running on this thread, if it is a loop of this type (`None` outside
    /// `run`/`block_on`, or if the running loop uses another poller).
    pub fn current() -> Option<Self> {
        current()?.as_any().downcast_ref::<WeakLoop<P>>()?.upgrade()
    }

    /// How many tasks are spawned and not yet finished or cancelled.
    pub fn task_count(&self) -> usize {
        self.executor().live()
    }
}

impl<P: Poller> Handle<P> {
    /// Spawns a `Send` future on the loop from any thread: it is moved to the loop (through
    /// [`add_callback`](Self::add_callback)) and spawned there, detached. To get its output
    /// back, send it through a channel.
    ///
    /// # Errors
    ///
    /// `NotConnected` if the loop has been dropped (`future` is dropped at once); what the
    /// poller's notifier reports (the task is spawned even then).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use ioloop::IoLoop;
    ///
    /// let lp = IoLoop::new()?;
    /// let handle = lp.handle();
    /// let (tx, rx) = mpsc::channel();
    /// std::thread::spawn(move || {
    ///     handle.spawn(async move { tx.send(42).unwrap() }).unwrap();
    /// });
    /// lp.run_until(|_| rx.try_recv().map(|v| assert_eq!(v, 42)).is_ok())?;
    /// # std::io::Result::Ok(())
    /// ```
    pub fn spawn<F>(&self, future: F) -> io::Result<()>
    where
        F: Future + Send + 'static,
        F::Output: 'static,
    {
        self.add_callback(move |lp| lp.spawn(future).detach())
    }
}
