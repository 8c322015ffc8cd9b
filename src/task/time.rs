//! Timer futures on the reactor's timers: [`sleep`], [`timeout`], [`interval`], and
//! [`yield_now`].
//!
//! Each uses the *current loop* (see [`crate::task`]): the loop whose `run`/`block_on` is
//! polling the task. A [`Sleep`] schedules one [`call_at`](crate::IoLoop::call_at) on its first
//! poll and cancels it when dropped early; an [`Interval`] is one periodic timer
//! ([`call_every`](crate::IoLoop::call_every)), so its ticks allocate nothing.

use std::cell::Cell;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::{current, current_or_panic, LoopOps};
use crate::timers::{deadline_after, TimeoutId};

/// The state a timer callback shares with its future.
#[derive(Default)]
pub(crate) struct TimerState {
    fired: Cell<bool>,
    /// When the callback ran.
    at: Cell<Option<Instant>>,
    waker: Cell<Option<Waker>>,
}

impl TimerState {
    /// Called by the timer callback on the loop.
    pub(crate) fn fire(&self, now: Instant) {
        self.fired.set(true);
        self.at.set(Some(now));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn set_waker(&self, waker: &Waker) {
        let mut w = self.waker.take();
        match &w {
            Some(old) if old.will_wake(waker) => {}
            _ => w = Some(waker.clone()),
        }
        self.waker.set(w);
    }
}

/// The future of [`sleep`] and [`sleep_until`]: completes at its deadline, never earlier.
///
/// The timer is scheduled on the first poll, on the current loop, and cancelled if the
/// `Sleep` is dropped before it fires.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    timer: Option<Scheduled>,
}

struct Scheduled {
    ops: Rc<dyn LoopOps>,
    state: Rc<TimerState>,
    id: TimeoutId,
}

/// Waits until `duration` has passed (never less).
///
/// # Panics
///
/// The returned future panics if it is polled outside a running [`IoLoop`](crate::IoLoop).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use ioloop::IoLoop;
///
/// let lp = IoLoop::new()?;
/// let start = Instant::now();
/// lp.block_on(ioloop::sleep(Duration::from_millis(10)))?;
/// assert!(start.elapsed() >= Duration::from_millis(10));
/// # std::io::Result::Ok(())
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(deadline_after(Instant::now(), duration))
}

/// Waits until `deadline` (a deadline in the past completes at once).
///
/// # Panics
///
/// As [`sleep`].
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        timer: None,
    }
}

impl Sleep {
    /// When this sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has been reached.
    pub fn is_elapsed(&self) -> bool {
        match &self.timer {
            Some(t) => t.state.fired.get(),
            None => Instant::now() >= self.deadline,
        }
    }

    /// Moves the deadline (cancelling the scheduled timer, if any); the sleep can then be
    /// awaited again.
    pub fn reset(&mut self, deadline: Instant) {
        self.cancel();
        self.deadline = deadline;
    }

    fn cancel(&mut self) {
        if let Some(t) = self.timer.take() {
            if !t.state.fired.get() {
                t.ops.remove_timeout(t.id);
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(t) = &self.timer {
            if t.state.fired.get() {
                return Poll::Ready(());
            }
            // Polled by another loop than the one its timer is on (the future was moved):
            // the timer moves too, else only that loop could end the sleep, and never once
            // it stops running or is dropped.
            let moved = current().is_some_and(|now| !same_loop(&now, &t.ops));
            if !moved {
                t.state.set_waker(cx.waker());
                return Poll::Pending;
            }
            self.cancel();
        }
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let ops = current_or_panic("ioloop::sleep");
        let state = Rc::new(TimerState::default());
        state.set_waker(cx.waker());
        match ops.call_at(self.deadline, state.clone()) {
            Some(id) => {
                self.timer = Some(Scheduled { ops, state, id });
                Poll::Pending
            }
            // The loop is being dropped: nothing will ever wake this future.
            None => Poll::Pending,
        }
    }
}

/// Whether two handles reach the same loop (their data pointers: a vtable's address is not
/// unique).
fn same_loop(a: &Rc<dyn LoopOps>, b: &Rc<dyn LoopOps>) -> bool {
    std::ptr::eq(Rc::as_ptr(a).cast::<()>(), Rc::as_ptr(b).cast::<()>())
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("scheduled", &self.timer.is_some())
            .finish()
    }
}

/// The error of [`timeout`]: the deadline passed before the future completed.
///
/// Converts into an [`io::Error`] of kind [`TimedOut`](io::ErrorKind::TimedOut), so `?` works
/// in functions returning `io::Result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(e: Elapsed) -> Self {
        io::Error::new(io::ErrorKind::TimedOut, e)
    }
}

/// Runs `future` with a time limit: `Ok(output)` if it completes within `duration`, else
/// `Err(Elapsed)` and `future` is dropped (cancelled). The deadline is fixed when `timeout`
/// is called. A future that is ready at the deadline wins: it is polled before the timer.
///
/// # Panics
///
/// The returned future panics if it is polled outside a running [`IoLoop`](crate::IoLoop).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ioloop::IoLoop;
///
/// let lp = IoLoop::new()?;
/// let r = lp.block_on(ioloop::timeout(
///     Duration::from_millis(5),
///     ioloop::sleep(Duration::from_secs(3600)),
/// ))?;
/// assert!(r.is_err());
/// # std::io::Result::Ok(())
/// ```
pub fn timeout<F: Future>(
    duration: Duration,
    future: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    timeout_at(deadline_after(Instant::now(), duration), future)
}

/// [`timeout`] with a deadline instead of a duration.
///
/// # Panics
///
/// As [`timeout`].
pub fn timeout_at<F: Future>(
    deadline: Instant,
    future: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    let mut timer = sleep_until(deadline);
    async move {
        let mut future = pin!(future);
        poll_fn(|cx| {
            if let Poll::Ready(v) = future.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            match Pin::new(&mut timer).poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// A periodic timer made by [`interval`]: [`tick`](Interval::tick) completes at
/// `start`, `start + period`, `start + 2 * period`, ...
///
/// Drift-free: tick `k` is due at `start + k * period` however late the previous ones were
/// handled. A tick nobody awaited is kept (one at most); ticks missed while the loop was
/// stalled or the task busy are skipped, not delivered in a burst.
#[derive(Debug)]
pub struct Interval {
    start: Instant,
    period: Duration,
    first: bool,
    /// The number of the last tick returned (the first is 0).
    last: u128,
    scheduled: Option<Scheduled>,
}

impl fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduled").field("id", &self.id).finish()
    }
}

/// A periodic timer on the current loop whose first tick completes at once and the next ones
/// every `period` after that (see [`Interval`]).
///
/// # Panics
///
/// If `period` is zero, or if called outside a running [`IoLoop`](crate::IoLoop).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use ioloop::IoLoop;
///
/// let lp = IoLoop::new()?;
/// lp.block_on(async {
///     let mut every = ioloop::interval(Duration::from_millis(50));
///     let start = every.tick().await; // at once
///     every.tick().await;
///     let third = every.tick().await;
///     assert_eq!(third, start + Duration::from_millis(100));
///     assert!(Instant::now() >= third);
/// })?;
/// # std::io::Result::Ok(())
/// ```
pub fn interval(period: Duration) -> Interval {
    assert!(
        !period.is_zero(),
        "ioloop::interval: the period must be > 0"
    );
    let ops = current_or_panic("ioloop::interval");
    let start = Instant::now();
    let state = Rc::new(TimerState::default());
    let scheduled = ops
        .call_every(period, state.clone())
        .map(|id| Scheduled { ops, state, id });
    Interval {
        start,
        period,
        first: true,
        last: 0,
        scheduled,
    }
}

impl Interval {
    /// Waits for the next tick and returns when it was due.
    pub async fn tick(&mut self) -> Instant {
        poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick (for hand-written futures); returns when it was due.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if self.first {
            self.first = false;
            return Poll::Ready(self.start);
        }
        let Some(t) = &self.scheduled else {
            return Poll::Pending;
        };
        if t.state.fired.replace(false) {
            let at = t.state.at.get().unwrap_or(self.start);
            // The reactor fires tick k at start + k * period or later (never earlier), and
            // skips missed ticks: the due time is the last multiple of `period` before `at`.
            // In u128 nanoseconds: a `u32` tick count runs out after 2^32 periods (49.7
            // days at 1 ms), and the due times would stop advancing.
            let period = self.period.as_nanos();
            let k = (at.saturating_duration_since(self.start).as_nanos() / period).max(1);
            // A callback that ran late (the loop stalled by other work in the same round)
            // may have counted the next tick already, which the reactor then fires as well:
            // that firing is not a new tick.
            if k > self.last {
                self.last = k;
                return Poll::Ready(deadline_after(
                    self.start,
                    nanos_duration(k.saturating_mul(period)),
                ));
            }
        }
        t.state.set_waker(cx.waker());
        Poll::Pending
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// `nanos` as a `Duration` (saturating at `Duration::MAX`).
fn nanos_duration(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // `nanos % 10^9 < 10^9` fits a `u32`.
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

impl Drop for Interval {
    fn drop(&mut self) {
        if let Some(t) = self.scheduled.take() {
            t.ops.remove_timeout(t.id);
        }
    }
}

/// Lets the loop run once before the task continues: other ready tasks, I/O handlers and due
/// timers get their turn. Use it to split long computations.
///
/// # Examples
///
/// ```
/// use ioloop::IoLoop;
///
/// let lp = IoLoop::new()?;
/// lp.block_on(async {
///     for _ in 0..3 {
///         ioloop::yield_now().await;
///     }
/// })?;
/// # std::io::Result::Ok(())
/// ```
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        // Queued behind this pass: the loop polls for I/O before the task runs again.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
