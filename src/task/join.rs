//! [`JoinHandle`] and [`JoinError`]: a task's output, its cancellation and its panic.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use super::executor::{Executor, Key};

/// Why a task did not produce its output: it was cancelled, or it panicked.
///
/// # Examples
///
/// ```
/// use ioloop::IoLoop;
///
/// let lp = IoLoop::new()?;
/// let err = lp.block_on(async {
///     let task = ioloop::spawn(async { panic!("boom") });
///     task.await.unwrap_err()
/// })?;
/// assert!(err.is_panic());
/// assert_eq!(*err.into_panic().downcast::<&str>().unwrap(), "boom");
/// # std::io::Result::Ok(())
/// ```
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Cancelled,
    Panicked(Box<dyn Any + Send + 'static>),
}

impl JoinError {
    pub(crate) fn cancelled() -> Self {
        Self {
            repr: Repr::Cancelled,
        }
    }

    pub(crate) fn panicked(payload: Box<dyn Any + Send + 'static>) -> Self {
        Self {
            repr: Repr::Panicked(payload),
        }
    }

    /// Whether the task was cancelled ([`JoinHandle::cancel`], or its handle was dropped).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panicked(_))
    }

    /// The panic payload, to inspect or to [`resume_unwind`](std::panic::resume_unwind).
    ///
    /// # Panics
    ///
    /// If the task was cancelled rather than panicked (see [`try_into_panic`](Self::try_into_panic)).
    #[track_caller]
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.try_into_panic()
            .expect("JoinError::into_panic on a cancelled task")
    }

    /// The panic payload, or the error itself if the task was cancelled.
    ///
    /// # Errors
    ///
    /// `self` when the task was cancelled.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panicked(p) => Ok(p),
            Repr::Cancelled => Err(self),
        }
    }

    fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Panicked(p) => p
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str)),
            Repr::Cancelled => None,
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => f.write_str("JoinError::Cancelled"),
            Repr::Panicked(_) => match self.panic_message() {
                Some(m) => write!(f, "JoinError::Panicked({m:?})"),
                None => f.write_str("JoinError::Panicked(..)"),
            },
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => f.write_str("task was cancelled"),
            Repr::Panicked(_) => match self.panic_message() {
                Some(m) => write!(f, "task panicked: {m}"),
                None => f.write_str("task panicked"),
            },
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for io::Error {
    /// `Other`, with the error's message (the panic payload is dropped).
    fn from(e: JoinError) -> Self {
        io::Error::new(io::ErrorKind::Other, e.to_string())
    }
}

/// Where a task's outcome goes, shared by the task and its [`JoinHandle`].
pub(crate) struct JoinState<T> {
    inner: RefCell<JoinInner<T>>,
}

struct JoinInner<T> {
    result: Option<Result<T, JoinError>>,
    /// An outcome was stored (it may have been taken since).
    finished: bool,
    waiter: Option<Waker>,
}

/// The type-erased side of a [`JoinState`]: what the executor calls when a task panics, and
/// what its future's output is handed to ([`as_any`](Self::as_any), downcast by
/// [`TaskFuture`](super::executor::TaskFuture) to its own output's `JoinState`).
pub(crate) trait JoinSink {
    fn fail(&self, err: JoinError);
    fn as_any(&self) -> &dyn Any;
}

impl<T> JoinState<T> {
    pub(crate) fn new() -> Self {
        Self {
            inner: RefCell::new(JoinInner {
                result: None,
                finished: false,
                waiter: None,
            }),
        }
    }

    /// Stores the outcome (the first one wins) and wakes the task awaiting the handle.
    pub(crate) fn complete(&self, result: Result<T, JoinError>) {
        let waiter = {
            let mut inner = self.inner.borrow_mut();
            if inner.finished {
                return;
            }
            inner.finished = true;
            inner.result = Some(result);
            inner.waiter.take()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }

    fn is_finished(&self) -> bool {
        self.inner.borrow().finished
    }
}

impl<T: 'static> JoinSink for JoinState<T> {
    fn fail(&self, err: JoinError) {
        self.complete(Err(err));
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An owned permission to await a task's output, or to cancel it.
///
/// Awaiting it yields `Ok(output)`, or a [`JoinError`] if the task was cancelled or panicked.
///
/// **Dropping a `JoinHandle` cancels its task** (as `async-task`'s `Task` does, and as the
/// issue asks: "cancellation by dropping or an explicit `cancel()`"): a task nobody can await
/// does not keep running by accident, and a struct that owns its helper tasks stops them by
/// being dropped. Call [`detach`](Self::detach) to let a task run on its own instead, the
/// usual choice for fire-and-forget work such as one task per accepted connection.
///
/// Cancelling drops the task's future at once, on the loop's thread (or, if the task is being
/// polled at that moment — it cancelled itself — as soon as that poll returns). A task that
/// already finished keeps its output: awaiting the handle after `cancel` still returns it.
///
/// # Examples
///
/// ```
/// use ioloop::IoLoop;
///
/// let lp = IoLoop::new()?;
/// let sum = lp.block_on(async {
///     let a = ioloop::spawn(async { 1 });
///     let b = ioloop::spawn(async { 2 });
///     a.await.unwrap() + b.await.unwrap()
/// })?;
/// assert_eq!(sum, 3);
/// # std::io::Result::Ok(())
/// ```
#[must_use = "dropping a JoinHandle cancels its task; call .detach() to let it run"]
pub struct JoinHandle<T> {
    state: Rc<JoinState<T>>,
    key: Key,
    executor: Weak<Executor>,
    detached: bool,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(state: Rc<JoinState<T>>, key: Key, executor: Weak<Executor>) -> Self {
        Self {
            state,
            key,
            executor,
            detached: false,
        }
    }

    /// Lets the task run to completion on its own; its output (or panic) is dropped.
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Cancels the task: its future is dropped without being polled again, and awaiting
    /// this handle yields a [`JoinError`] that [`is_cancelled`](JoinError::is_cancelled).
    /// Does nothing if the task has finished already.
    pub fn cancel(&self) {
        if self.state.is_finished() {
            return;
        }
        // Mark first: a destructor of the dropped future that checks this handle sees it
        // cancelled.
        self.state.complete(Err(JoinError::cancelled()));
        if let Some(exec) = self.executor.upgrade() {
            exec.cancel(self.key);
        }
    }

    /// Whether the task has finished: returned, panicked, or was cancelled.
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    /// # Panics
    ///
    /// If polled again after it returned `Ready`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.state.inner.borrow_mut();
        if let Some(result) = inner.result.take() {
            return Poll::Ready(result);
        }
        assert!(!inner.finished, "JoinHandle polled after it completed");
        match &inner.waiter {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waiter = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if !self.detached {
            self.cancel();
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
