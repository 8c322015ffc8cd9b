//! The per-loop executor: a task table, a run queue, and `Arc` wakers that reuse themselves.
//!
//! Futures need not be `Send`: they live in the loop's task table ([`Executor`]) and are only
//! ever polled on the loop's thread. What a [`Waker`] carries is a small `Send + Sync`
//! [`Header`] (the task's key and two "queued" flags); waking pushes the key onto a run
//! queue. A wake on the loop's thread while it runs pushes onto the executor's local queue,
//! with no lock and no atomic read-modify-write; a wake from another thread pushes onto the
//! shared queue (a lock) and notifies the poller, so a blocked wait returns and the loop runs
//! the task.
//!
//! Steady state makes no heap allocation: each task's `Waker` is built once (one `Arc` clone of
//! its header) when it is spawned, the run queue and the per-pass batch are reused buffers, and
//! a task already queued on one side is not queued there again (a task queued on both sides,
//! by a wake from each, is polled once more, which a future must accept).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::RawFd;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, ThreadId};

use ioloop_sys::Notifier;

use super::join::{JoinError, JoinHandle, JoinSink, JoinState};
use super::{IoSource, LoopOps};

/// Identifies a task: its slot in the table and the slot's generation (a key whose task has
/// finished never matches the slot's next occupant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    idx: u32,
    gen: u32,
}

/// The slot index reserved for [`IoLoop::block_on`](crate::IoLoop::block_on)'s main future,
/// which is polled by `block_on` itself rather than stored in the table.
const MAIN: u32 = u32::MAX;

/// The run queue shared with wakers (which may be on any thread).
struct RunQueue {
    queue: Mutex<VecDeque<Key>>,
    /// The queue may be non-empty (set under the lock; cleared by the loop before draining).
    pending: AtomicBool,
    notifier: Notifier,
    /// The loop's thread: wakes from any other thread must wake the poller.
    thread: ThreadId,
}

/// The loop running on this thread (the innermost, if nested).
pub(crate) struct Running {
    /// The loop, type-erased and weak: the task layer's *current loop*.
    pub(crate) ops: Rc<dyn LoopOps>,
    /// Its executor: a wake made on the loop's own thread while it runs queues the task
    /// there, with no lock and no atomic read-modify-write (see [`wake_local`]).
    pub(crate) executor: Rc<Executor>,
}

thread_local! {
    /// One thread-local for both halves of [`Running`], so entering and leaving a run is one
    /// access each.
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
}

/// Makes `running` the thread's running loop until the returned value (the one it replaced)
/// is passed to [`leave`] (the loop's run guard does both).
pub(crate) fn enter(running: Running) -> Option<Running> {
    RUNNING.with(|r| r.replace(Some(running)))
}

/// Restores the running loop [`enter`] replaced.
pub(crate) fn leave(prev: Option<Running>) {
    // `replace`, then drop with no borrow held: dropping an executor can wake tasks.
    let old = RUNNING.try_with(|r| r.replace(prev));
    drop(old);
}

/// The current loop's handle, if a loop is running on this thread.
pub(crate) fn current() -> Option<Rc<dyn LoopOps>> {
    RUNNING
        .try_with(|r| r.borrow().as_ref().map(|r| r.ops.clone()))
        .ok()
        .flatten()
}

/// A wake on the loop's own thread while it runs: queues the task on the executor's local
/// queue unless it is queued already, with a plain load and store of its `scheduled` flag
/// (only this thread touches that flag). `false` if this is not the task's loop running here
/// (another thread, or another loop's task).
#[inline]
fn wake_local(header: &Header) -> bool {
    RUNNING
        .try_with(|r| match &*r.borrow() {
            Some(Running { executor: ex, .. })
                if std::ptr::eq(Arc::as_ptr(&ex.run_queue), Arc::as_ptr(&header.queue)) =>
            {
                if !header.scheduled.load(Ordering::Relaxed) {
                    header.scheduled.store(true, Ordering::Relaxed);
                    ex.local.borrow_mut().push_back(header.key);
                    ex.queued.set(true);
                }
                true
            }
            _ => false,
        })
        .unwrap_or(false)
}

/// Queues `key` on the running loop's executor if `queue` is its run queue; `false` if it
/// is not (another thread, or another loop's task).
#[inline]
fn push_local(queue: &RunQueue, key: Key) -> bool {
    RUNNING
        .try_with(|r| match &*r.borrow() {
            Some(Running { executor: ex, .. })
                if std::ptr::eq(Arc::as_ptr(&ex.run_queue), queue) =>
            {
                ex.local.borrow_mut().push_back(key);
                ex.queued.set(true);
                true
            }
            _ => false,
        })
        .unwrap_or(false)
}

impl RunQueue {
    #[inline]
    fn push(&self, key: Key) {
        // On the loop's thread while it runs (a task woken by I/O, a timer, another task):
        // the executor's local queue.
        if !push_local(self, key) {
            self.push_shared(key);
        }
    }

    /// [`push`](Self::push) from another thread, or while the loop is not running: the
    /// shared queue, and a notification if the loop's thread may be blocked in a wait.
    #[inline(never)]
    fn push_shared(&self, key: Key) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.push_back(key);
            // SeqCst, like the loop's loads and the notifier's flag: a store-then-check on
            // both sides (this flag then the notifier's; the loop's reset of the notifier then
            // this flag) loses a wake-up under weaker orderings.
            self.pending.store(true, Ordering::SeqCst);
        }
        if thread::current().id() != self.thread {
            // A notify error leaves the task queued; the loop runs it on its next wake-up.
            let _ = self.notifier.notify();
        }
    }
}

/// What a task's [`Waker`] points to.
///
/// Two flags, so that a wake on the loop's thread costs no atomic read-modify-write:
/// `scheduled` is only ever touched by the loop's thread (plain loads and stores), and
/// `remote` by wakes from elsewhere (a swap each) and by the loop when it takes their entries
/// from the shared queue (a swap each, which reads the last remote wake's write, so that
/// everything a waking thread did before its wake happens before the poll it causes, also
/// for a wake that found the flag set and queued nothing).
pub(crate) struct Header {
    key: Key,
    /// Queued on the loop's thread (or finished): further wakes there do nothing until the
    /// task is polled again. The loop's thread only.
    scheduled: AtomicBool,
    /// Queued in the shared queue and not yet taken from it by the loop: further wakes from
    /// other threads do nothing.
    remote: AtomicBool,
    queue: Arc<RunQueue>,
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !wake_local(self) && !self.remote.swap(true, Ordering::AcqRel) {
            self.queue.push_shared(self.key);
        }
    }
}

/// A spawned future, its output type erased: polled where it was boxed, and its output handed
/// to its task's [`JoinState`] (`sink`, the one `spawn` made for this output type).
///
/// Not an `async` block around the future (`async move { out.complete(Ok(future.await)) }`):
/// such a block's state holds the future twice, once as the value it captured and once as
/// the future it awaits (rust-lang/rust#62958), so a task's state would take twice the
/// memory, and every poll would load the block's state at one end and the future in the
/// middle.
pub(crate) trait TaskFuture {
    fn poll_task(self: Pin<&mut Self>, cx: &mut Context<'_>, sink: &dyn JoinSink) -> Poll<()>;
}

impl<F> TaskFuture for F
where
    F: Future,
    F::Output: 'static,
{
    #[inline]
    fn poll_task(self: Pin<&mut Self>, cx: &mut Context<'_>, sink: &dyn JoinSink) -> Poll<()> {
        match self.poll(cx) {
            Poll::Ready(value) => {
                match sink.as_any().downcast_ref::<JoinState<F::Output>>() {
                    Some(state) => state.complete(Ok(value)),
                    None => unreachable!("a task's sink is its output's JoinState"),
                }
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A spawned task: its future, its waker, and where its output (or panic) goes.
struct TaskBody {
    header: Arc<Header>,
    waker: Waker,
    future: Pin<Box<dyn TaskFuture>>,
    sink: Rc<dyn JoinSink>,
}

impl Drop for TaskBody {
    /// A task dropped unfinished (its loop dropped with it pending, or cancelled) reports
    /// `Cancelled` to its [`JoinHandle`] and wakes whoever awaits it (a task of another loop,
    /// say), before its future is dropped. After an output or a panic was reported, this
    /// does nothing (the first report stands). Always dropped with no borrow held.
    fn drop(&mut self) {
        self.sink.fail(JoinError::cancelled());
    }
}

struct Slot {
    gen: u32,
    /// `None` when free, or while the task is being polled (it is lent out).
    task: Option<TaskBody>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl Table {
    /// Frees `key`'s slot if it is still `key`'s; returns whether it was.
    fn release(&mut self, key: Key) -> Option<Option<TaskBody>> {
        let s = self.slots.get_mut(key.idx as usize)?;
        if s.gen != key.gen {
            return None;
        }
        s.gen = s.gen.wrapping_add(1);
        self.free.push(key.idx);
        self.live -= 1;
        Some(s.task.take())
    }
}

/// Puts a new source in `entry` (out of line: only a new fd number, or one whose old source
/// is still held, allocates); returns a new reference to it.
#[cold]
#[inline(never)]
fn new_entry(entry: &mut Option<Rc<IoSource>>, source: IoSource) -> Option<Rc<IoSource>> {
    let source = Rc::new(source);
    // The old source (if any) is still held elsewhere: dropping this reference drops no
    // waker, and the table stays borrowed only by the caller's plain stores.
    *entry = Some(source.clone());
    Some(source)
}

#[cold]
#[inline(never)]
fn grow_sources(sources: &mut Vec<Option<Rc<IoSource>>>, idx: usize) {
    sources.resize_with(idx + 1, || None);
}

/// A loop's tasks and run queue. Owned by the loop (`Rc`); [`JoinHandle`]s keep a `Weak`.
pub(crate) struct Executor {
    run_queue: Arc<RunQueue>,
    table: RefCell<Table>,
    /// Keys taken from the run queue for the current pass (reused buffer; a panic that unwinds
    /// out of a pass leaves the rest here for the next one).
    batch: RefCell<VecDeque<Key>>,
    /// Keys of tasks woken on the loop's thread while it runs (see [`push_local`]).
    local: RefCell<VecDeque<Key>>,
    /// `batch` or `local` may hold keys: set with every push onto `local`, cleared only once
    /// both are seen empty, so that the loop's per-iteration checks are one load when no task
    /// is woken.
    queued: Cell<bool>,
    /// A `block_on` is in progress; its main future was woken and must be polled.
    main_active: Cell<bool>,
    main_woken: Cell<bool>,
    /// The main future's header while a `block_on` runs: the loop clears its `remote` flag
    /// when it takes the main future's entries from the shared queue.
    main_header: RefCell<Option<Arc<Header>>>,
    /// The [`Async`](super::Async) sources registered on the loop, by fd number: their
    /// handlers capture nothing (a zero-sized closure costs no allocation) and find their
    /// source here.
    sources: RefCell<Vec<Option<Rc<IoSource>>>>,
}

impl Executor {
    pub(crate) fn new(notifier: Notifier) -> Self {
        Self {
            run_queue: Arc::new(RunQueue {
                queue: Mutex::new(VecDeque::new()),
                pending: AtomicBool::new(false),
                notifier,
                thread: thread::current().id(),
            }),
            table: RefCell::new(Table::default()),
            batch: RefCell::new(VecDeque::new()),
            local: RefCell::new(VecDeque::new()),
            queued: Cell::new(false),
            main_active: Cell::new(false),
            main_woken: Cell::new(false),
            main_header: RefCell::new(None),
            sources: RefCell::new(Vec::new()),
        }
    }

    /// A source for a new registration of `fd` (which just succeeded) on the loop `ops`
    /// reaches (this executor's), recorded as the one registered for it. The allocation of
    /// the source last recorded for `fd` is reused when nothing else holds it any more (its
    /// `Async` is gone), as the fd table reuses its slots, so registering an fd number again
    /// allocates nothing.
    #[inline]
    pub(crate) fn new_source(
        &self,
        fd: RawFd,
        gen: u32,
        edge: bool,
        pri: bool,
        ops: &Rc<dyn LoopOps>,
    ) -> Rc<IoSource> {
        let idx = fd as usize;
        let mut sources = self.sources.borrow_mut();
        if sources.len() <= idx {
            grow_sources(&mut sources, idx);
        }
        let entry = &mut sources[idx];
        let source = match entry.as_mut().and_then(Rc::get_mut) {
            // Nothing else holds it (its `Async` is gone, and took its wakers with it when it
            // went: `remove_source`), so resetting it drops no waker: reused in place.
            Some(free) => {
                debug_assert!(Rc::ptr_eq(&free.ops, ops), "a source of another loop");
                free.reset(gen, edge, pri);
                entry.clone()
            }
            // A still-held source (an `Async` the reactor found stale) stays with its
            // holder; it only leaves the table.
            None => new_entry(entry, IoSource::new(ops.clone(), fd, gen, edge, pri)),
        };
        drop(sources);
        source.unwrap_or_else(|| unreachable!("the entry was just filled"))
    }

    /// The source registered for `fd` (a new reference: the wake-ups it makes may drop the
    /// `Async`).
    #[inline]
    pub(crate) fn source(&self, fd: RawFd) -> Option<Rc<IoSource>> {
        self.sources.borrow().get(fd as usize)?.clone()
    }

    /// Adds a task and queues it to run on the loop's next iteration.
    pub(crate) fn spawn<F>(self: &Rc<Self>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let state = Rc::new(JoinState::<F::Output>::new());
        let future: Pin<Box<dyn TaskFuture>> = Box::pin(future);
        let key = {
            let mut table = self.table.borrow_mut();
            let idx = match table.free.pop() {
                Some(i) => i,
                None => {
                    table.slots.push(Slot { gen: 0, task: None });
                    u32::try_from(table.slots.len() - 1)
                        .ok()
                        .filter(|&i| i != MAIN)
                        .expect("too many tasks")
                }
            };
            table.live += 1;
            let slot = &mut table.slots[idx as usize];
            let key = Key { idx, gen: slot.gen };
            let header = Arc::new(Header {
                key,
                scheduled: AtomicBool::new(true),
                remote: AtomicBool::new(false),
                queue: self.run_queue.clone(),
            });
            slot.task = Some(TaskBody {
                waker: Waker::from(header.clone()),
                header,
                future,
                sink: state.clone(),
            });
            key
        };
        self.run_queue.push(key);
        JoinHandle::new(state, key, Rc::downgrade(self))
    }

    /// Whether a pass has work: queued tasks, or a woken `block_on` future.
    #[inline]
    pub(crate) fn has_ready(&self) -> bool {
        self.queued.get() || self.main_woken.get() || self.run_queue.pending.load(Ordering::SeqCst)
    }

    /// How many tasks are spawned and not finished (nor cancelled).
    pub(crate) fn live(&self) -> usize {
        self.table.borrow().live
    }

    /// Polls each task that was queued when the pass began, once. Tasks woken during the pass
    /// (a `yield_now`, a task waking another) run in the next pass, after the loop has
    /// polled for I/O.
    #[inline]
    pub(crate) fn run_ready(&self) {
        // The common case, nothing woken, inline and without an atomic write.
        if !self.queued.get() && !self.run_queue.pending.load(Ordering::SeqCst) {
            return;
        }
        self.run_ready_slow();
    }

    #[inline(never)]
    fn run_ready_slow(&self) {
        {
            let mut batch = self.batch.borrow_mut();
            if batch.is_empty() {
                // Swapped, not copied: both buffers keep their capacity.
                std::mem::swap(&mut *batch, &mut *self.local.borrow_mut());
                // A plain load first: the common case (nothing woken from another thread)
                // costs no atomic write.
                if self.run_queue.pending.load(Ordering::SeqCst)
                    && self.run_queue.pending.swap(false, Ordering::SeqCst)
                {
                    let mut q = self
                        .run_queue
                        .queue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let table = self.table.borrow();
                    let main = self.main_header.borrow();
                    for key in q.drain(..) {
                        let header = if key.idx == MAIN {
                            main.as_deref()
                        } else {
                            match table.slots.get(key.idx as usize) {
                                Some(s) if s.gen == key.gen => {
                                    // Never lent out here: tasks are polled within a pass,
                                    // and passes do not nest (a nested run is refused).
                                    debug_assert!(s.task.is_some(), "drained during a poll");
                                    s.task.as_ref().map(|b| &*b.header)
                                }
                                _ => None,
                            }
                        };
                        // A finished (or cancelled) task's entry: nothing to poll.
                        let Some(header) = header else { continue };
                        // Reads the last remote wake's write (see `Header`), and lets the
                        // next wake from another thread queue the task again.
                        header.remote.swap(false, Ordering::AcqRel);
                        // It may be queued locally too: one spurious poll at most.
                        header.scheduled.store(true, Ordering::Relaxed);
                        batch.push_back(key);
                    }
                }
                if batch.is_empty() {
                    // `local` was swapped in empty: nothing is queued on this thread.
                    self.queued.set(false);
                    return;
                }
                // The batch may hold only keys from the shared queue (whose flag is now
                // clear): if a panic unwinds out of this pass, the next one must still see
                // them.
                self.queued.set(true);
            }
        }
        loop {
            let next = self.batch.borrow_mut().pop_front();
            let Some(key) = next else {
                // The batch is done; what this pass woke waits in `local` for the next one.
                if self.local.borrow().is_empty() {
                    self.queued.set(false);
                }
                return;
            };
            if key.idx == MAIN {
                if self.main_active.get() {
                    self.main_woken.set(true);
                }
                continue;
            }
            self.poll_task(key);
        }
    }

    fn poll_task(&self, key: Key) {
        let body = {
            let mut table = self.table.borrow_mut();
            match table.slots.get_mut(key.idx as usize) {
                Some(s) if s.gen == key.gen => s.task.take(),
                _ => None,
            }
        };
        let Some(mut body) = body else { return };
        // Cleared before polling: a wake from inside the poll queues the task again.
        body.header.scheduled.store(false, Ordering::Relaxed);
        let mut cx = Context::from_waker(&body.waker);
        let done = match panic::catch_unwind(AssertUnwindSafe(|| {
            body.future.as_mut().poll_task(&mut cx, &*body.sink)
        })) {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(payload) => {
                body.sink.fail(JoinError::panicked(payload));
                true
            }
        };
        if done {
            body.header.scheduled.store(true, Ordering::Relaxed);
            let released = self.table.borrow_mut().release(key);
            drop(released);
            // Dropped with no borrow held: the future's destructors may use the executor.
            drop(body);
            return;
        }
        let orphan = {
            let mut table = self.table.borrow_mut();
            match table.slots.get_mut(key.idx as usize) {
                Some(s) if s.gen == key.gen => {
                    s.task = Some(body);
                    None
                }
                // Cancelled while it ran.
                _ => Some(body),
            }
        };
        drop(orphan);
    }

    /// Cancels `key`'s task: drops its future (now, or as soon as its current poll returns if
    /// it is running). Does nothing for a finished task.
    pub(crate) fn cancel(&self, key: Key) {
        let body = self.table.borrow_mut().release(key).flatten();
        if let Some(body) = body {
            body.header.scheduled.store(true, Ordering::Relaxed);
            drop(body);
        }
    }

    /// Starts a `block_on`: returns the main future's waker and marks it woken (so it is
    /// polled first). One allocation per `block_on`.
    pub(crate) fn begin_main(&self) -> (Waker, Arc<Header>) {
        let header = Arc::new(Header {
            key: Key { idx: MAIN, gen: 0 },
            scheduled: AtomicBool::new(false),
            remote: AtomicBool::new(false),
            queue: self.run_queue.clone(),
        });
        self.main_active.set(true);
        self.main_woken.set(true);
        *self.main_header.borrow_mut() = Some(header.clone());
        (Waker::from(header.clone()), header)
    }

    /// Whether the main future should be polled now (clears the flag and its header's
    /// "scheduled" bit, so a wake during the poll is seen).
    pub(crate) fn take_main_woken(&self, header: &Header) -> bool {
        if self.main_woken.replace(false) {
            header.scheduled.store(false, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Ends a `block_on`.
    pub(crate) fn end_main(&self) {
        self.main_active.set(false);
        self.main_woken.set(false);
        // Dropped with no borrow held (the header holds nothing that runs code).
        let header = self.main_header.borrow_mut().take();
        drop(header);
    }
}
