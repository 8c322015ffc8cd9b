//! ioloop: a Tornado-style event loop on raw-syscall pollers.
//!
//! * [`IoLoop`]: an fd → handler table, callbacks, timers and signals — Tornado's `IOLoop`
//!   vocabulary (`add_handler`, `add_callback`, `call_later`, `run`, `stop`) with Rust types.
//! * [`sys`]: the [`Poller`] trait and its backends (epoll, kqueue, io_uring, poll, select),
//!   usable on their own; [`DefaultPoller`] is the one chosen at build time (epoll on Linux,
//!   kqueue on macOS and the BSDs, poll elsewhere; `IOLOOP_POLLER=<name>` overrides it).
//!
//! * [`task`]: futures on the loop — [`IoLoop::spawn`], [`IoLoop::block_on`], [`Async`] for
//!   fd readiness, [`sleep`], [`timeout`], [`interval`], [`yield_now`].
//!
//! Every `IoLoop` is generic over its poller, so the same program runs on any backend:
//! `IoLoop::<ioloop::sys::Poll>::with_backend()`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod ioloop;
pub mod task;
mod timers;

pub use ioloop::{Handle, HandlerFd, IoLoop};
pub use ioloop_sys as sys;
pub use ioloop_sys::{DefaultPoller, Interest, Mode, Poller, Ready};
pub use task::{
    interval, sleep, sleep_until, spawn, timeout, timeout_at, yield_now, Async, Elapsed, Interval,
    JoinError, JoinHandle, Sleep,
};
pub use timers::TimeoutId;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
