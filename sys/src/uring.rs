//! io_uring(7) readiness polling, for Linux, through raw `io_uring_setup(2)` /
//! `io_uring_enter(2)` and three `mmap(2)`ed regions (no liburing).
//!
//! Each registration is one `IORING_OP_POLL_ADD` request in flight (single-shot for Level and
//! Oneshot, multishot for Edge); `deregister` and `modify` cancel it with
//! `IORING_OP_POLL_REMOVE`. The `user_data` of every request packs `(generation, fd)`, so a
//! completion that belongs to a registration since removed or modified is recognised and
//! dropped instead of reaching the new owner of the fd.
//!
//! # Platform notes
//!
//! * Kernel: Linux 5.5 or later (`IORING_SETUP_CQSIZE`, `IORING_FEAT_NODROP`). Timed waits use
//!   `IORING_ENTER_EXT_ARG` (Linux 5.11+) when `IORING_FEAT_EXT_ARG` is offered, else an
//!   `IORING_OP_TIMEOUT` request; both take a `timespec`, so waits keep nanosecond precision
//!   and never end early.
//! * [`Uring::new`] returns the error `io_uring_setup(2)` gives where io_uring is compiled out
//!   (`ENOSYS`) or refused by a seccomp filter or `kernel.io_uring_disabled` (`EPERM`).
//! * [`Mode::Level`] is a *single-shot* poll that is re-armed right after each report, so
//!   the next wait submits it again and, if the fd is still ready, it completes at once:
//!   exactly level behaviour. [`Mode::Oneshot`] is the same poll, not re-armed until
//!   [`modify`](Poller::modify).
//! * [`Mode::Edge`] is a *multishot* poll (`IORING_POLL_ADD_MULTI`, Linux 5.13+): it posts a
//!   completion when it is armed if the fd is ready then (so registering or modifying a
//!   ready fd reports it once), then one per wake-up of the file's wait queue that matches
//!   the interest (new data, freed buffer space, hang-up), and stays armed: epoll's
//!   `EPOLLET`. Completions of one fd are merged into one pending readiness and the fd is
//!   queued once (epoll's ready list), so a wait reports each fd at most once. A multishot
//!   request the kernel ends (a completion without `IORING_CQE_F_MORE`: cancelled, a
//!   completion it could not post, ...) is re-armed under the same `user_data` by the next
//!   wait; the new request reports the fd if it is ready then, so a wake-up in between is
//!   reported (perhaps spuriously), never lost. A poll that fails (`EBADF`...) reports
//!   `ERROR` once and stays disarmed until `modify`. `new` submits one multishot poll of
//!   its eventfd, removed at once, to learn whether the kernel takes them (older kernels
//!   refuse `IORING_POLL_ADD_MULTI` with `EINVAL`): there [`supports`](Poller::supports)
//!   says `false` for Edge from the start and registering with it is `Unsupported`.
//! * [`Interest::PRIORITY`] asks for `POLLPRI`, but a completion carries the mask of the
//!   wake-up that triggered it, and a socket's wake-up for any new data says `POLLPRI` (and
//!   `POLLIN`): [`Ready::PRIORITY`] can be spurious here, so
//!   [`priority_exact`](Poller::priority_exact) is false. A poll that finds the fd ready
//!   when it is armed reports the file's own state, which is exact.
//! * A poll request holds a reference to the open file, like epoll it watches the open file
//!   description; `register` checks that the fd is open (`EBADF`). `is_stale` asks the kernel
//!   whether the poll still watches the file open at its number: an `IORING_OP_ASYNC_CANCEL`
//!   matched by file (`IORING_ASYNC_CANCEL_FD`) and `user_data`, `ENOENT` meaning "another
//!   file"; a live poll it cancels is re-armed at once. Regular files always
//!   poll ready.
//! * Changes made from other threads are pushed to the submission queue under a lock and
//!   submitted by that thread; a blocked wait sees their completions directly. The kernel
//!   finishes a poll as task work of the thread that submitted it, or in a kernel worker once
//!   that thread has exited. That task work interrupts a blocking call of that thread which
//!   the kernel does not restart by itself (one with a timeout: `recv` with `SO_RCVTIMEO`,
//!   `epoll_wait`, ...), which then fails with `EINTR`; so does closing the ring, on each
//!   thread that submitted to it.
//! * `deregister` submits its removal at once (one `io_uring_enter`; in owned mode also the
//!   deferred task work that ends it), so the ring's reference to the file is gone when it
//!   returns: a socket closed right after is closed (its peer reads the end of the stream).
//! * Completions left in a half-full CQ while nobody waits are moved aside by
//!   register/modify/deregister, so they never pile up in the kernel's overflow list.
//! * Completions the kernel drops (Linux 5.19+: the CQ and its overflow list are full and it
//!   cannot allocate an overflow entry, so it sets `IO_CHECK_CQ_DROPPED_BIT` and says so
//!   once, with `EBADR`, to the next `io_uring_enter` that waits on an empty CQ; it also
//!   counts them in the CQ ring, which every wait checks, so a loop that only polls with a
//!   zero timeout learns of them too) are recovered, not returned as an error: which ones
//!   were lost is unknown, so every registration with a poll in flight gets a new one under
//!   a new generation (as `modify` does), which reports the fd if it is ready then
//!   (spurious, never lost); the notifier's poll is re-armed if it is gone, and that wait
//!   returns as if notified. See `Uring::recover`.
//! * A reap (turning completions into events) never fails half way, which would lose the
//!   events it had taken off the CQ: the requests it queues (a cancel, the notifier's
//!   re-arm) never submit, and wait in `State::deferred` if the SQ is full; an error
//!   flushing the kernel's overflow list ends it early, and the next wait returns that error
//!   before it consumes anything.
//! * The notifier is a multishot `IORING_OP_POLL_ADD` (Linux 5.13+) of its eventfd, which is
//!   never read: every write posts one completion and the poll stays armed, so a wake-up
//!   costs no `read(2)` and no re-arm (mio's EPOLLET waker, on io_uring). It is submitted by
//!   the first wait, so its completions run as task work of the waiting thread. Older kernels
//!   (found by the probe in `new`, or refusing it with `EINVAL`) get a single-shot poll,
//!   drained and re-armed per wake-up.
//! * [`Poller::new_owned`] (owned mode, Linux 6.1+) sets the ring up with
//!   `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG | R_DISABLED`. The first
//!   thread that enters the ring (register, modify, deregister, is_stale, wait) enables it
//!   (`IORING_REGISTER_ENABLE_RINGS`) and becomes its only submitter; the others get
//!   `Unsupported` for those calls (the kernel would say `EEXIST`), while their notifies
//!   (an eventfd write) still wake it. Completions' task work is queued on the ring and run
//!   by the owner's `io_uring_enter(GETEVENTS)`; since one call runs at most 20 items, a
//!   wait enters again, without waiting, while the kernel sets `IORING_SQ_TASKRUN` (at most
//!   64 times, and while the CQ has room). The multishot probe is skipped
//!   (Linux 6.1 has multishot poll). A kernel that refuses the flags (`EINVAL`) gets what
//!   [`Poller::new`] builds.
//!
//! # Performance notes (measured on Linux 6.18, `perf record -e cpu-clock`)
//!
//! * A [`Mode::Edge`] multishot poll costs a task-work item per wake-up of the file: the
//!   writer's wake-up runs `io_poll_wake` under the wait-queue lock and queues task work on
//!   the submitting thread with `TWA_SIGNAL`, and that thread runs it, one item at a time, on
//!   its next return from any system call (`exit_to_user_mode_loop` -> `get_signal` ->
//!   `task_work_run` -> `io_poll_task_func`). In the fan-in bench, where the waiting thread
//!   also writes, that is ~11 % of the CPU time, plus ~6 % more in `sock_def_readable`.
//!   [`Mode::Level`] re-arms only in the next wait, after the data has arrived, so its polls
//!   complete inline in one batched `io_uring_enter` (~12 %) with no task work at all. Hence
//!   Edge 1.07-1.09 x mio, Level 0.93-0.95. `IORING_SETUP_COOP_TASKRUN` does not help (the
//!   thread that is notified is the running one, so the missing IPI changes nothing).
//! * The notifier's wake-up goes through the same normal task work: the waiter is woken by
//!   `signal_wake_up` and runs the item through `get_signal` (waker bench: 1.17 x mio).
//! * `IORING_SETUP_DEFER_TASKRUN` (Linux 6.1+) removes both costs: task work goes on a list
//!   of the ring and runs in the owner's `io_uring_enter(GETEVENTS)`, in a batch. A
//!   prototype (`R_DISABLED | SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`, the ring
//!   enabled by the first waiting thread, and `GETEVENTS` repeated while the kernel sets
//!   `IORING_SQ_TASKRUN`, since one call runs at most 20 items, `IO_LOCAL_TW_DEFAULT_MAX`)
//!   measured fan-in Edge 0.93-0.98, Level 0.93-0.95, waker 0.995-1.000 x mio. It is what
//!   owned mode ([`Poller::new_owned`], which `IoLoop::with_backend` uses) does: fan-in Edge
//!   0.945-0.973 (was 1.02-1.07), Level 0.93-0.95 (unchanged), waker 1.003-1.018 (was
//!   1.15-1.17) x mio, sys and reactor contenders alike. Since then owned mode's wait has a
//!   path of its own (the state lock kept across `io_uring_enter`, no waiter lock, 342 ->
//!   ~300 user-space instructions per wake-up and wait) that is inlined into the caller
//!   with its system call instruction (see `syscall::syscall6`): waker 0.96 x mio. [`Poller::new`]
//!   cannot: `SINGLE_ISSUER` makes every `io_uring_enter` from another thread fail with
//!   `EEXIST`, and the `Poller` contract lets any thread register or wait (a change
//!   submitted while a wait is blocked, a full SQ, `is_stale`, a wait moved to another
//!   thread). Those paths would need to hand their SQEs to the owner (an internal eventfd
//!   kick) or rebuild the ring without the flag.

use std::collections::VecDeque;
use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

use crate::common::{self, kernel_timespec, KernelTimespec, Round};
use crate::fdmap::FdMap;
use crate::notify::Receiver;
use crate::syscall::{cvt, retry};
use crate::{Events, Interest, Mode, Notifier, Poller, Ready};

// ---- <linux/io_uring.h> (uapi), checked against linux-libc-dev 6.1 and the kernel's ----
// ---- io_uring_create / io_register_enable_rings / __io_run_local_work              ----

const IORING_SETUP_CQSIZE: u32 = 1 << 3;
/// The ring starts disabled: `io_uring_enter` fails (`EBADFD`) until
/// `IORING_REGISTER_ENABLE_RINGS`, which makes the calling task the `SINGLE_ISSUER` owner
/// (Linux 5.10+).
const IORING_SETUP_R_DISABLED: u32 = 1 << 6;
/// With `DEFER_TASKRUN`: the kernel sets `IORING_SQ_TASKRUN` while deferred task work waits
/// to be run by a `GETEVENTS` (Linux 5.19+; with `DEFER_TASKRUN`, 6.1+).
const IORING_SETUP_TASKRUN_FLAG: u32 = 1 << 9;
/// Only one task may submit: `io_uring_enter` (and `io_uring_register`) from any other
/// task fails with `EEXIST` (Linux 6.0+).
const IORING_SETUP_SINGLE_ISSUER: u32 = 1 << 12;
/// Completions' task work goes on a list of the ring, run only by the owner's
/// `io_uring_enter(GETEVENTS)` (Linux 6.1+; requires `SINGLE_ISSUER`).
const IORING_SETUP_DEFER_TASKRUN: u32 = 1 << 13;
const IORING_FEAT_SINGLE_MMAP: u32 = 1 << 0;
const IORING_FEAT_EXT_ARG: u32 = 1 << 8;
const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;
const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_ENTER_EXT_ARG: u32 = 1 << 3;
const IORING_SQ_CQ_OVERFLOW: u32 = 1 << 1;
/// `sq_flags`: deferred task work is pending (with `IORING_SETUP_TASKRUN_FLAG`).
const IORING_SQ_TASKRUN: u32 = 1 << 2;
/// `io_uring_register` opcode: enables a ring set up with `IORING_SETUP_R_DISABLED`.
const IORING_REGISTER_ENABLE_RINGS: libc::c_uint = 12;
const IORING_OP_NOP: u8 = 0;
const IORING_OP_POLL_ADD: u8 = 6;
const IORING_OP_POLL_REMOVE: u8 = 7;
const IORING_OP_TIMEOUT: u8 = 11;
const IORING_OP_TIMEOUT_REMOVE: u8 = 12;
const IORING_OP_ASYNC_CANCEL: u8 = 14;
/// `cancel_flags`: match requests by the file now at `sqe.fd` (Linux 5.19+)...
const IORING_ASYNC_CANCEL_FD: u32 = 1 << 1;
/// ...and, with it, by `user_data` too (Linux 6.6+; before, only the file is compared).
const IORING_ASYNC_CANCEL_USERDATA: u32 = 1 << 4;
/// `sqe.len` of a POLL_ADD: multishot (Linux 5.13+; older kernels refuse it with `EINVAL`).
const IORING_POLL_ADD_MULTI: u32 = 1 << 0;
/// `cqe.flags`: the (multishot) request stays armed and will post again.
const IORING_CQE_F_MORE: u32 = 1 << 1;

/// `struct io_sqring_offsets`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(dead_code)] // kernel ABI: every field is part of the layout
struct IoSqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    resv2: u64,
}

/// `struct io_cqring_offsets`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(dead_code)] // kernel ABI: every field is part of the layout
struct IoCqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    resv2: u64,
}

/// `struct io_uring_params`: in and out argument of `io_uring_setup`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(dead_code)] // kernel ABI: every field is part of the layout
struct IoUringParams {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: IoSqringOffsets,
    cq_off: IoCqringOffsets,
}

/// `struct io_uring_sqe` (64 bytes), with the unions flattened to the members used here:
/// `off` (count of `IORING_OP_TIMEOUT`), `addr` (target of the removes, timespec of the
/// timeout), `op_flags` (`poll32_events`, `timeout_flags`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
#[allow(dead_code)] // kernel ABI: every field is part of the layout
struct IoUringSqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    addr3: u64,
    pad2: u64,
}

/// `struct io_uring_cqe` (16 bytes; no `IORING_SETUP_CQE32`).
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(dead_code)] // kernel ABI: every field is part of the layout
struct IoUringCqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// `struct io_uring_getevents_arg`, for `IORING_ENTER_EXT_ARG`.
#[repr(C)]
#[allow(dead_code)] // kernel ABI: every field is part of the layout
struct IoUringGeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    pad: u32,
    ts: u64,
}

const _: () = assert!(mem::size_of::<IoUringParams>() == 120);
const _: () = assert!(mem::size_of::<IoUringSqe>() == 64);
const _: () = assert!(mem::size_of::<IoUringCqe>() == 16);
const _: () = assert!(mem::size_of::<IoUringGeteventsArg>() == 24);

// ---- sizes and user_data encoding ----

/// Submission queue entries (far below the kernel maximum, 32768).
const SQ_ENTRIES: u32 = 256;
/// Completion queue entries: generous, so completions rarely wait in the overflow list.
const CQ_ENTRIES: u32 = 1024;
/// Owned mode: at most this many extra `GETEVENTS` per wait to run deferred task work (the
/// kernel runs at most 20 items per call, `IO_LOCAL_TW_DEFAULT_MAX`, Linux 6.13+), a guard
/// against wake-ups that keep coming without posting; in practice the CQ's room binds first.
/// Stopping well before the CQ is full splits a burst over several waits, which measured
/// ~5 % slower in the fan-in bench (Level 0.94 -> 1.00-1.04 x mio with a cap of 32)...
const TASKRUN_ROUNDS: u32 = 64;
/// ...and only while the CQ has this much room left: one call's 20 items post at most one
/// completion each, so the CQ does not overflow.
const TASKRUN_CQ_ROOM: u32 = 32;

/// `user_data` = `(generation << 32) | fd` for registrations; fds are `0..=i32::MAX`, so a low
/// word of `0x8000_0000` or more is free for the poller's own requests:
/// the notifier's multishot poll of its eventfd (high word 0) or, on kernels without
/// multishot poll, its single-shot poll (high word `u32::MAX`)...
const NOTIFY_MULTI_UD: u64 = u32::MAX as u64;
const NOTIFY_POLL_UD: u64 = u64::MAX;
/// ...removes and the NOP that wakes a waiter (their completions are ignored)...
const INTERNAL_UD: u64 = u64::MAX - 1;
/// ...the `IORING_OP_TIMEOUT` of the fallback timed wait (high word: a sequence number)...
const TIMEOUT_LOW: u32 = u32::MAX - 2;
/// ...and the cancel that [`Uring::is_stale`] submits and waits for (never reaped elsewhere:
/// it is submitted and reaped under the state lock)...
const PROBE_UD: u64 = (u32::MAX - 3) as u64;
/// ...and the `IORING_OP_ASYNC_CANCEL` of the notifier's poll that [`Uring::recover`] queues
/// after the kernel dropped completions (high word: [`State::notify_seq`] when it was queued;
/// its result tells whether that poll was still alive: see [`Uring::notify_cancelled`])...
const NOTIFY_CANCEL_LOW: u32 = u32::MAX - 4;
/// ...and the `POLL_REMOVE` of a registration's poll: its `user_data` with this bit set in
/// the low word (fds are below 2^31, and the values above stay reserved), so that a removal
/// the kernel refused with `EALREADY` is retried ([`remove_ud`]).
const REMOVE_BIT: u32 = 1 << 31;

/// The `user_data` of a `POLL_REMOVE` of the poll tagged `target`: `target` with
/// [`REMOVE_BIT`], or [`INTERNAL_UD`] (not retried) for an fd so high that it would read as
/// one of the reserved values above (beyond any fd limit Linux allows).
fn remove_ud(target: u64) -> u64 {
    if (target as u32) < REMOVE_BIT - 5 {
        target | u64::from(REMOVE_BIT)
    } else {
        INTERNAL_UD
    }
}

/// What a completion's `user_data` names.
enum Ud {
    /// `multi`: a completion of the notifier's multishot poll (else of its single-shot one).
    Notify {
        multi: bool,
    },
    Internal,
    Timeout,
    /// The completion of a `POLL_REMOVE` of the poll tagged `target` ([`remove_ud`]).
    Remove {
        target: u64,
    },
    /// The completion of a recovery's cancel of the notifier's poll, queued when
    /// [`State::notify_seq`] was `seq` ([`notify_cancel_ud`]).
    NotifyCancel {
        seq: u32,
    },
    User {
        fd: RawFd,
        gen: u32,
    },
}

fn user_ud(fd: RawFd, gen: u32) -> u64 {
    // fds reaching here passed `check_fd` (non-negative).
    (u64::from(gen) << 32) | u64::from(fd.unsigned_abs())
}

/// What an `io_uring_enter` of a wait or of [`Uring::probe`] returned (`entered`), or in
/// tests the errno of [`State::inject_enter`] in its place.
#[inline(always)]
fn injected<T>(
    #[cfg_attr(not(test), allow(unused_variables))] st: &mut State,
    entered: io::Result<T>,
) -> io::Result<T> {
    #[cfg(test)]
    if let Some(errno) = st.inject_enter.take() {
        return Err(io::Error::from_raw_os_error(errno));
    }
    entered
}

/// The `user_data` of a recovery's cancel of the notifier's poll ([`NOTIFY_CANCEL_LOW`]),
/// queued when [`State::notify_seq`] was `seq`.
fn notify_cancel_ud(seq: u32) -> u64 {
    (u64::from(seq) << 32) | u64::from(NOTIFY_CANCEL_LOW)
}

fn decode(ud: u64) -> Ud {
    let low = ud as u32;
    match low {
        u32::MAX => Ud::Notify {
            multi: ud == NOTIFY_MULTI_UD,
        },
        l if l == u32::MAX - 1 || l == u32::MAX - 3 => Ud::Internal,
        TIMEOUT_LOW => Ud::Timeout,
        NOTIFY_CANCEL_LOW => Ud::NotifyCancel {
            seq: (ud >> 32) as u32,
        },
        l if l & REMOVE_BIT != 0 => Ud::Remove {
            target: ud & !u64::from(REMOVE_BIT),
        },
        _ => match RawFd::try_from(low) {
            Ok(fd) => Ud::User {
                fd,
                gen: (ud >> 32) as u32,
            },
            Err(_) => Ud::Internal,
        },
    }
}

/// The io_uring backend: readiness through `IORING_OP_POLL_ADD` requests, with raw
/// `io_uring_setup(2)` and `io_uring_enter(2)` (no liburing).
///
/// # Platform notes
///
/// * Needs Linux 5.5 or later; timed waits use `IORING_ENTER_EXT_ARG` (Linux 5.11+) or, on
///   older kernels, an `IORING_OP_TIMEOUT` request. Either way the timeout has nanosecond
///   precision and never ends early.
/// * [`new`](Poller::new) fails with the error of `io_uring_setup(2)` where io_uring is
///   missing (`ENOSYS`) or forbidden by seccomp or `kernel.io_uring_disabled` (`EPERM`).
/// * [`Mode::Level`] is a single-shot poll re-armed after each report (the next wait
///   reports again while the fd stays ready); [`Mode::Oneshot`] is the same poll, not
///   re-armed until [`modify`](Poller::modify).
/// * [`Mode::Edge`] is a multishot poll (Linux 5.13+; decided in [`new`](Poller::new): on
///   older kernels [`supports`](Poller::supports) says `false` and registering with it is
///   `Unsupported`). It reports a ready fd once when registered or modified, then once per
///   wake-up of the file (new data, freed buffer space), like epoll's `EPOLLET`; several
///   wake-ups before a wait are one event with the readiness of all of them. If the kernel
///   ends the multishot request, it is re-armed transparently, and the fd is reported again
///   if it is ready then (spurious, never lost). Its completions are finished as task work
///   of the thread that submitted the poll (the waiter, unless the fd was registered while
///   a wait was blocked), for as long as the registration lives.
/// * Readiness is sampled when a poll request completes, which can be before the wait that
///   reports it: data that arrives while a poll is armed completes it at once, and if the fd
///   is read dry before the next wait, that wait still reports it readable once (epoll
///   re-checks level readiness inside `epoll_wait`). Such a report is spurious, never lost:
///   as with every readiness API, treat `WouldBlock` as "wait again". Checking each
///   completion with `poll(2)` would cost a system call per event.
/// * If the kernel drops completions (Linux 5.19+: a full CQ and no memory for its overflow
///   list; it says so with `EBADR`, and counts them in the CQ ring, which every wait checks,
///   blocking or not), the wait that learns of it does not fail: every
///   registration with a poll in the kernel is armed anew, which reports the fds that are
///   ready (perhaps spuriously), and the wait returns as if [`notify`](Poller::notify) had
///   been called, since a notify may have been lost.
/// * An armed poll request holds its own reference to the file: closing the fd without
///   [`deregister`](Poller::deregister) while it is idle does not release the file (a
///   socket's peer sees no end of file) and no wait reports it; the fd number stays
///   registered here (re-registering it is `AlreadyExists` until it is deregistered, and
///   [`modify`](Poller::modify) would move the registration to the file the number names
///   then). [`is_stale`](Poller::is_stale) finds it (Linux 5.19+): it says `true` once the
///   number names another file or none, which is how the reactor retires such a handler with
///   one [`Ready::ERROR`] when a new one is added on the number, as on epoll. It cannot tell
///   while no poll is in the kernel ([`Mode::Oneshot`] after its report); an Edge poll is
///   always there, and asking about a live one re-arms it, which reports it once if it is
///   ready. A closed fd with events in flight is reported as [`Ready::ERROR`]. Deregister
///   before closing: `deregister` releases the file at once (it submits the removal).
/// * Regular files always poll ready.
/// * Not across `fork(2)`: the child shares the rings' memory with the parent, so a poller
///   used on both sides corrupts them. Make a new one in the child.
/// * [`new_owned`](Poller::new_owned) (Linux 6.1+; elsewhere it is `new`) makes a poller
///   that one thread uses: the first thread that registers, modifies, deregisters, asks
///   `is_stale` or waits owns it, and those calls from any other thread fail with
///   [`Unsupported`](io::ErrorKind::Unsupported); [`notify`](Poller::notify) works from
///   anywhere. The kernel then finishes completions in the owner's waits, in batches
///   (`IORING_SETUP_DEFER_TASKRUN`), which is cheaper than the signalled task work of `new`
///   (see the module's performance notes).
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
/// use std::time::Duration;
/// use ioloop_sys::{Events, Interest, Mode, Poller, Uring};
///
/// let poller = Uring::new()?;
/// let (a, mut b) = UnixStream::pair()?;
/// poller.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)?;
/// b.write_all(b"x")?;
/// let mut events = Events::with_capacity(8);
/// assert_eq!(poller.wait(&mut events, Some(Duration::from_secs(5)))?, 1);
/// // Level: still unread, so reported again.
/// assert_eq!(poller.wait(&mut events, Some(Duration::from_secs(5)))?, 1);
/// poller.deregister(a.as_raw_fd())?;
/// # std::io::Result::Ok(())
/// ```
pub struct Uring {
    /// Ring memory, the fd table and the deferred completions. Every access to the user side
    /// of the rings (SQ tail and entries, CQ head) happens with this lock held, which makes
    /// this process a single producer of the SQ and a single consumer of the CQ.
    state: Mutex<State>,
    /// Held by the one thread inside a shared ring's `wait` (never while taking `state` the
    /// other way round: the lock order is `waiter` then `state`). Owned mode's wait does not
    /// use it (see [`Uring::wait_owned`]).
    waiter: Mutex<WaitState>,
    /// Invariant: the io_uring instance whose rings `state.ring` maps; closed after they are
    /// unmapped (fields drop in declaration order).
    ring_fd: OwnedFd,
    wake: Receiver,
    /// `IORING_FEAT_EXT_ARG`: timed waits pass a timespec to `io_uring_enter` directly.
    ext_arg: bool,
    /// The kernel takes multishot polls (`IORING_POLL_ADD_MULTI`, Linux 5.13+): [`Mode::Edge`]
    /// is supported. Found by [`Uring::probe_multishot`] in `new`, fixed from then on.
    multishot: bool,
    /// `Some` in owned mode ([`Poller::new_owned`] on Linux 6.1+: `SINGLE_ISSUER |
    /// DEFER_TASKRUN`, set up disabled): the thread that enabled the ring, with the errno of
    /// that `IORING_REGISTER_ENABLE_RINGS` (0: enabled). Set once, by the first call that
    /// enters the ring ([`Uring::claim`]); from then on only that thread may make such calls.
    /// Owned mode implies `ext_arg` (see [`Uring::build_owned`]): its wait
    /// ([`Uring::wait_owned`]) never submits a fallback timeout.
    owner: Option<OnceLock<(ThreadId, i32)>>,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("ring_fd", &self.ring_fd)
            .field("ext_arg", &self.ext_arg)
            .field("multishot", &self.multishot)
            .field("owned", &self.owner.is_some())
            .finish()
    }
}

/// What `state` guards.
struct State {
    ring: Ring,
    /// fd -> registration. An fd is in here from `register` to `deregister`.
    table: FdMap<Entry>,
    /// Completions taken off the CQ by a thread other than the waiter (raw
    /// `(user_data, res, flags)`); the waiter reports them first. At most one per Level or
    /// Oneshot registration plus the notifier's and a timeout, since a single-shot poll is
    /// re-armed only once reported (the notifier's multishot poll posts once per write, and
    /// writes are coalesced until a wait consumes the wake-up), plus the removes that need
    /// a follow-up (`EALREADY`, one per registration being removed) and a recovery's cancel
    /// of the notifier's poll that found none (`ENOENT`, see [`Uring::notify_cancelled`]).
    /// [`Mode::Edge`] completions never land here: they are merged into their entry's
    /// [`Entry::pending`] at once.
    stash: Vec<(u64, i32, u32)>,
    /// The [`Mode::Edge`] registrations with readiness not yet reported, oldest first: epoll's
    /// ready list. A multishot poll may post several completions for one fd before a wait
    /// reports it; they are merged into its [`Entry::pending`], and the fd is in here once
    /// (exactly the entries with [`Entry::queued`]), so a wait reports it in one event.
    /// Waits report these after the single-shot completions that fit; the rest stay for the
    /// next wait. At most one slot per registration: its capacity is kept.
    ready: VecDeque<RawFd>,
    /// Re-arms (`fd`, interest, `user_data`) of reported polls that did not fit in the SQ while
    /// a wait reaped its completions. Submitting them there would sample readiness before the
    /// caller has consumed the events just reported, and report them again (a stale event
    /// for every fd past the SQ's size in a large batch). The next wait pushes them first;
    /// those whose registration was since modified or removed are dropped. Sets
    /// [`State::attention`].
    rearm: Vec<(RawFd, Interest, u64)>,
    /// The other requests a reap (or [`Uring::recover`]) queues, which may not submit either
    /// ([`State::defer`]): the `ASYNC_CANCEL` that follows a removal refused with `EALREADY`,
    /// the notifier's re-arm, a recovery's removals and cancel; here only when the SQ was
    /// full (or this held some already: they keep their order). The next wait pushes them
    /// before anything else. Kept for its capacity: no allocation per wait in steady state.
    /// Sets [`State::attention`].
    deferred: Vec<IoUringSqe>,
    /// The error that ended a reap early (flushing the kernel's overflow list: see
    /// [`Uring::reap`]). That round still returned the events it had collected; the next wait
    /// returns this before it consumes anything, so the caller sees it and nothing is lost.
    /// Sets [`State::attention`].
    error: Option<io::Error>,
    /// The kernel said it dropped completions (`EBADR`) and [`Uring::recover`] has not run
    /// since: set by a wait that saw it (which recovers after its reap) or by
    /// [`Uring::probe`] (the next wait recovers, if `is_stale` did not). Sets
    /// [`State::attention`].
    dropped: bool,
    /// The kernel's drop count ([`Ring::dropped`]) when last looked at: a wait that finds it
    /// moved recovers as from `EBADR`, which the kernel reports only to a call that blocks
    /// (a loop that only ever polls with a zero timeout would never hear of it).
    drops_seen: u32,
    /// A recovery outside a wait (in `is_stale`) re-opened the notifier's flag: the next wait
    /// reports a wake-up, since the one it stood for may have been among the dropped
    /// completions. Sets [`State::attention`].
    wake_due: bool,
    /// One of `rearm`, `deferred`, `error`, `dropped` and `wake_due` asks something of the next
    /// wait ([`State::needs_attention`]): the one check a wait makes for all of them
    /// ([`Uring::before_wait`]), set by whatever sets them and recomputed there.
    attention: bool,
    /// How many notifier polls were queued (wrapping): the tag of a recovery's cancel of the
    /// notifier's poll, which tells its completion whether a poll was queued after it.
    notify_seq: u32,
    /// Tests: an errno that the next io_uring_enter of a wait or of [`Uring::probe`] reports
    /// instead of its own result (the kernel's `EBADR` cannot be provoked at will).
    #[cfg(test)]
    inject_enter: Option<i32>,
    /// Tests: an errno that the next [`Uring::flush_overflow`] fails with, without entering.
    #[cfg(test)]
    inject_flush: Option<i32>,
    /// Source of registration generations (wraps; only equality with the current one counts).
    next_gen: u32,
    /// The `cancel_flags` of [`Uring::is_stale`]'s probe: `CANCEL_FD | CANCEL_USERDATA`, then
    /// `CANCEL_FD` alone once the kernel refused that (`EINVAL`), 0 once it refused both.
    probe_flags: u32,
    /// The kernel refused a multishot poll (`EINVAL`, Linux < 5.13): the notifier is a
    /// single-shot poll plus a `read(2)` per wake-up from then on. See [`Uring::notify_sqe`].
    notify_by_poll: bool,
    /// A wait is blocked in `io_uring_enter` without the lock: changes must be submitted now
    /// to take effect in it. Otherwise they stay queued and the next wait submits them in its
    /// own `io_uring_enter`, so a poll samples readiness when the wait starts (as epoll does),
    /// not when the fd was registered: a POLLOUT snapshot taken at `register` would hide data
    /// or a hang-up that arrives before the wait. Never set in owned mode, whose wait keeps
    /// the lock (only the owner thread registers, and it is the one waiting).
    waiting: bool,
}

impl State {
    /// Whether a wait round with `left` to go blocks in `io_uring_enter`: not if anything
    /// is already there to report (stashed, Edge-ready, or in the CQ), nor for a zero wait.
    #[inline(always)]
    fn must_block(&self, left: Option<Duration>) -> bool {
        let ready_now = !self.stash.is_empty() || !self.ready.is_empty() || self.ring.cq_len() > 0;
        !(ready_now || left == Some(Duration::ZERO))
    }

    /// What [`State::attention`] stands for.
    fn needs_attention(&self) -> bool {
        !self.rearm.is_empty()
            || !self.deferred.is_empty()
            || self.error.is_some()
            || self.dropped
            || self.wake_due
    }

    /// Queues `sqe` without submitting, for a reap or a recovery: in the SQ if it has room and
    /// nothing is deferred yet, else in [`State::deferred`] behind what is there, so that
    /// these requests reach the kernel in the order they were queued (a recovery's cancel of
    /// the notifier's poll must come after a re-arm of that poll queued before it).
    fn defer(&mut self, sqe: &IoUringSqe) {
        if self.deferred.is_empty() && self.ring.try_push(sqe) {
            return;
        }
        self.deferred.push(*sqe);
        self.attention = true;
    }

    /// The kernel dropped completions (it said `EBADR`, or its drop count moved): the next
    /// wait, or the caller, [`recover`](Uring::recover)s.
    #[cold]
    fn mark_dropped(&mut self) {
        self.dropped = true;
        self.attention = true;
    }

    /// Keeps the error that ended a reap early for the next wait (the first one, if two).
    #[cold]
    fn keep_error(&mut self, e: io::Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self.attention = true;
    }
}

/// One registration.
#[derive(Clone, Copy)]
struct Entry {
    token: u64,
    interest: Interest,
    mode: Mode,
    /// Tags this registration's requests; bumped by `modify`.
    gen: u32,
    /// A POLL_ADD with this generation is queued or in flight and not yet reaped (for
    /// [`Mode::Edge`]: not yet ended).
    armed: bool,
    /// [`Mode::Edge`]: readiness reported by the poll and not yet by a wait.
    pending: Ready,
    /// [`Mode::Edge`]: the fd is in [`State::ready`].
    queued: bool,
}

impl Entry {
    /// The entry's side of [`Uring::edge_completion`]: merges the completion's readiness into
    /// `pending`; returns whether the fd must be queued in [`State::ready`] (it has readiness
    /// and is not queued yet; marked queued) and whether the multishot poll ended and must be
    /// re-armed (a failed one is marked disarmed instead).
    fn edge_completion(&mut self, res: i32, flags: u32) -> (bool, bool) {
        let failed = res < 0 && res != -libc::ECANCELED;
        self.pending |= if failed {
            Ready::ERROR
        } else {
            ready_from(res.max(0).unsigned_abs())
        };
        let queue = !self.pending.is_empty() && !self.queued;
        self.queued |= queue;
        let ended = flags & IORING_CQE_F_MORE == 0;
        if ended && failed {
            self.armed = false;
        }
        (queue, ended && !failed)
    }
}

/// What only the waiter uses.
struct WaitState {
    /// The fallback timeout's timespec: boxed so its address is stable while the kernel has
    /// not yet read it (it is read when the TIMEOUT request is submitted).
    ts: Box<KernelTimespec>,
    /// Sequence for the fallback timeout's `user_data`.
    seq: u32,
    /// The `user_data` of a fallback timeout submitted and not yet completed. It stands
    /// for the whole wait (its deadline): the wait's later rounds keep it, and it is
    /// cancelled when the wait returns.
    timeout: Option<u64>,
    /// Tests: how many rounds (`wait_once` calls) the waits made.
    #[cfg(test)]
    rounds: u64,
}

/// The error of a push that found the SQ full again right after submitting.
#[cold]
fn sq_stays_full() -> io::Error {
    io::Error::new(io::ErrorKind::Other, "io_uring submission queue stays full")
}

/// One shared mapping; unmapped on drop.
///
/// Invariant: `ptr..ptr+len` is a mapping this value owns.
struct Mmap {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

impl Mmap {
    fn new(fd: RawFd, len: usize, offset: libc::off_t) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint) cannot alias any
        // Rust object; a failure is MAP_FAILED, checked below.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::Other, "mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    fn base(&self) -> *mut u8 {
        self.ptr.as_ptr().cast()
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is our mapping (invariant) and nothing points into it once
        // its owner (`Ring`) is dropped.
        unsafe { libc::munmap(self.ptr.as_ptr(), self.len) };
    }
}

/// The mapped SQ ring, CQ ring and SQE array, with typed pointers into them.
///
/// Invariants: every pointer points into one of the mappings below, which this value owns
/// and which stay mapped for as long as it lives (the pointer fields are declared first and
/// are plain pointers, so nothing dereferences them after the mappings drop); the offsets
/// came from the kernel's `io_uring_params` for this ring. The user-owned words (SQ tail,
/// SQEs and array, CQ head) are written only through `&mut self`, i.e. by the holder of
/// `Uring::state`; the kernel-owned words (SQ head, CQ tail, flags, drop count) are only
/// read, with `Acquire` (a unit test writes the drop count, to stand for the kernel).
struct Ring {
    sq_head: *const AtomicU32,
    sq_tail: *const AtomicU32,
    sq_flags: *const AtomicU32,
    sq_mask: u32,
    sq_entries: u32,
    sqes: *mut IoUringSqe,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cq_mask: u32,
    cq_entries: u32,
    cqes: *const IoUringCqe,
    /// The kernel's count of completions it dropped (`cq_off.overflow`; with
    /// `IORING_FEAT_NODROP` only when it could not allocate an overflow entry).
    cq_overflow: *const AtomicU32,
    /// Our copy of the SQ tail (we are its only writer).
    tail: u32,
    _sq_map: Mmap,
    /// `None` with `IORING_FEAT_SINGLE_MMAP` (the CQ ring shares the SQ ring's mapping).
    _cq_map: Option<Mmap>,
    _sqe_map: Mmap,
}

// SAFETY: the raw pointers point into mappings the `Ring` owns (not thread-local data), and
// the ring is only used through `Mutex<State>`, which serialises every access from this
// process; the kernel side synchronises through the atomics.
unsafe impl Send for Ring {}

impl Ring {
    fn map(fd: RawFd, p: &IoUringParams) -> io::Result<Self> {
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * mem::size_of::<u32>();
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * mem::size_of::<IoUringCqe>();
        let single = p.features & IORING_FEAT_SINGLE_MMAP != 0;
        let sq_map = Mmap::new(
            fd,
            if single { sq_len.max(cq_len) } else { sq_len },
            IORING_OFF_SQ_RING,
        )?;
        let cq_map = if single {
            None
        } else {
            Some(Mmap::new(fd, cq_len, IORING_OFF_CQ_RING)?)
        };
        let sqe_map = Mmap::new(
            fd,
            p.sq_entries as usize * mem::size_of::<IoUringSqe>(),
            IORING_OFF_SQES,
        )?;
        let sq = sq_map.base();
        let cq = cq_map.as_ref().map_or(sq, Mmap::base);
        // SAFETY: the kernel's offsets lie inside the mappings sized from them above.
        let at = |base: *mut u8, off: u32| unsafe { base.add(off as usize) };
        let sq_array = at(sq, p.sq_off.array).cast::<u32>();
        // SAFETY: the masks are u32 words the kernel initialised inside the mappings.
        let (sq_mask, cq_mask) = unsafe {
            (
                at(sq, p.sq_off.ring_mask).cast::<u32>().read(),
                at(cq, p.cq_off.ring_mask).cast::<u32>().read(),
            )
        };
        for i in 0..p.sq_entries {
            // SAFETY: the array has `sq_entries` u32 slots (sq_len above); nothing is
            // submitted yet, so the kernel is not reading it. Slot i always names SQE i.
            unsafe { sq_array.add(i as usize).write(i) };
        }
        let mut ring = Self {
            sq_head: at(sq, p.sq_off.head).cast(),
            sq_tail: at(sq, p.sq_off.tail).cast(),
            sq_flags: at(sq, p.sq_off.flags).cast(),
            sq_mask,
            sq_entries: p.sq_entries,
            sqes: sqe_map.base().cast(),
            cq_head: at(cq, p.cq_off.head).cast(),
            cq_tail: at(cq, p.cq_off.tail).cast(),
            cq_mask,
            cq_entries: p.cq_entries,
            cqes: at(cq, p.cq_off.cqes).cast(),
            cq_overflow: at(cq, p.cq_off.overflow).cast(),
            tail: 0,
            _sq_map: sq_map,
            _cq_map: cq_map,
            _sqe_map: sqe_map,
        };
        ring.tail = ring.load(ring.sq_tail, Ordering::Relaxed);
        Ok(ring)
    }

    fn load(&self, word: *const AtomicU32, order: Ordering) -> u32 {
        // SAFETY: `word` is one of our ring pointers: aligned, inside a live mapping
        // (invariant), and only accessed atomically by us and the kernel.
        unsafe { (*word).load(order) }
    }

    fn store(&mut self, word: *const AtomicU32, value: u32) {
        // SAFETY: as in `load`; `&mut self` makes us the only writer in this process.
        unsafe { (*word).store(value, Ordering::Release) }
    }

    /// Entries pushed and not yet consumed by the kernel.
    fn sq_pending(&self) -> u32 {
        self.tail
            .wrapping_sub(self.load(self.sq_head, Ordering::Acquire))
    }

    /// Whether an entry tagged `user_data` is queued and not yet consumed by the kernel.
    fn queued(&self, user_data: u64) -> bool {
        let n = self.sq_pending();
        (0..n).any(|i| {
            let idx = (self.tail.wrapping_sub(n).wrapping_add(i) & self.sq_mask) as usize;
            // SAFETY: `idx < sq_entries`; the slot lies in `head..tail`, written by us under
            // `&self` (the state lock), and the kernel only reads it.
            unsafe { ptr::addr_of!((*self.sqes.add(idx)).user_data).read() == user_data }
        })
    }

    /// Queues `sqe`; `false` if the SQ is full (submit, then retry).
    fn try_push(&mut self, sqe: &IoUringSqe) -> bool {
        if self.sq_pending() >= self.sq_entries {
            return false;
        }
        let idx = (self.tail & self.sq_mask) as usize;
        // SAFETY: `idx < sq_entries`, the SQE array's length; the slot lies outside
        // `head..tail`, so the kernel is done with it (the Acquire load of the head in
        // `sq_pending` orders its reads before this write).
        unsafe { self.sqes.add(idx).write(*sqe) };
        self.tail = self.tail.wrapping_add(1);
        // Release: the kernel sees the SQE contents before the new tail.
        self.store(self.sq_tail, self.tail);
        true
    }

    /// Completions posted and not yet taken.
    fn cq_len(&self) -> u32 {
        let tail = self.load(self.cq_tail, Ordering::Acquire);
        tail.wrapping_sub(self.load(self.cq_head, Ordering::Relaxed))
    }

    /// Takes the oldest completion: `(user_data, res, flags)`.
    fn pop(&mut self) -> Option<(u64, i32, u32)> {
        let head = self.load(self.cq_head, Ordering::Relaxed);
        if head == self.load(self.cq_tail, Ordering::Acquire) {
            return None;
        }
        let idx = (head & self.cq_mask) as usize;
        // SAFETY: `idx < cq_entries`, the CQE array's length; `head != tail` and the Acquire
        // load of the tail make the entry initialised and visible.
        let cqe = unsafe { self.cqes.add(idx).read() };
        // Release: the kernel may reuse the slot only after we have read it.
        self.store(self.cq_head, head.wrapping_add(1));
        Some((cqe.user_data, cqe.res, cqe.flags))
    }

    /// How many completions the kernel has dropped so far (wrapping).
    #[inline(always)]
    fn dropped(&self) -> u32 {
        self.load(self.cq_overflow, Ordering::Acquire)
    }

    /// The kernel holds completions that did not fit in the CQ (flushed by GETEVENTS).
    fn overflowed(&self) -> bool {
        self.load(self.sq_flags, Ordering::Acquire) & IORING_SQ_CQ_OVERFLOW != 0
    }
}

impl Poller for Uring {
    const NAME: &'static str = "uring";

    fn new() -> io::Result<Self> {
        Self::build(false)
    }

    /// On Linux 6.1+, a ring set up with `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN |
    /// TASKRUN_FLAG | R_DISABLED`: the kernel no longer finishes each poll completion as
    /// task work signalled to the thread (one `get_signal` per wake-up); it queues them on
    /// the ring and the owner's wait runs them in batches. The ring is enabled by the first
    /// thread that registers, modifies, deregisters, asks [`is_stale`](Poller::is_stale) or
    /// waits, which becomes its owner: those calls from any other thread fail with
    /// [`Unsupported`](io::ErrorKind::Unsupported) (the kernel would refuse them with
    /// `EEXIST`). [`notify`](Poller::notify) and the [`notifier`](Poller::notifier) work from
    /// any thread. Where the kernel refuses these flags (`EINVAL`: before Linux 6.1), this
    /// is [`new`](Poller::new), with no thread restriction.
    fn new_owned() -> io::Result<Self> {
        Self::build_owned(false)
    }

    fn supports(&self, mode: Mode) -> bool {
        mode != Mode::Edge || self.multishot
    }

    fn modify_deferred(&self) -> bool {
        true
    }

    fn register(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        self.claim()?;
        common::check_registration(fd, token, mode, self.supports(mode))?;
        if Some(fd) == self.wake.fd() {
            return Err(common::already_exists(fd));
        }
        // Report a closed fd now, as epoll does, rather than as a later ERROR event.
        common::check_open(fd)?;
        let mut st = self.lock();
        if st.table.contains_key(fd) {
            return Err(common::already_exists(fd));
        }
        self.arm(&mut st, fd, token, interest, mode)
    }

    fn modify(&self, fd: RawFd, token: u64, interest: Interest, mode: Mode) -> io::Result<()> {
        self.claim()?;
        common::check_registration(fd, token, mode, self.supports(mode))?;
        let mut st = self.lock();
        let old = *st.table.get(fd).ok_or_else(|| common::not_found(fd))?;
        if old.armed {
            self.push_change(&mut st, &poll_remove(user_ud(fd, old.gen)))?;
        }
        self.arm(&mut st, fd, token, interest, mode)
    }

    /// The probe is an `IORING_OP_ASYNC_CANCEL` of the fd's poll request matched by *file*
    /// (`IORING_ASYNC_CANCEL_FD`, Linux 5.19+, plus `IORING_ASYNC_CANCEL_USERDATA` on 6.6+),
    /// submitted and waited for: the kernel resolves the number to the file open there now,
    /// so `ENOENT` means the poll watches another (closed) file, and `EBADF` that the number
    /// is not open. A live poll is cancelled by it and re-armed at once (queued for the next
    /// wait, which samples readiness again: nothing is lost). Other completions arriving
    /// meanwhile are kept for the next wait. `Ok(false)` where the answer is unknown: a
    /// kernel without `CANCEL_FD`, no poll in the kernel to ask about ([`Mode::Oneshot`]
    /// after its report, or a re-arm not yet submitted), or completions the kernel dropped
    /// meanwhile (`EBADR`: recovered at once, see `Uring::recover`). Submits what is queued;
    /// the completions that brings are queued again (`Uring::resample`), so the next wait
    /// still samples readiness when it starts.
    fn is_stale(&self, fd: RawFd) -> io::Result<bool> {
        self.claim()?;
        common::check_fd(fd)?;
        let mut st = self.lock();
        let stale = self.is_stale_locked(&mut st, fd);
        // Completions it moved aside while a wait is blocked: the NOP queued then (see
        // `stash_cq`) wakes that wait, and a re-arm takes effect in it.
        self.submit_if_waiting(&mut st)?;
        stale
    }

    /// Submits now: deregistering releases the kernel's reference to the file at once, so a
    /// socket the caller closes next is closed (its peer sees the end of the stream) without
    /// waiting for the next `wait` (or forever, if none comes).
    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.claim()?;
        common::check_fd(fd)?;
        let mut st = self.lock();
        let old = st.table.remove(fd).ok_or_else(|| common::not_found(fd))?;
        if old.queued {
            st.ready.retain(|&f| f != fd);
        }
        if !old.armed {
            return self.submit_if_waiting(&mut st);
        }
        if !st.deferred.is_empty() {
            // Among them, perhaps, a recovery's removal of this fd's previous poll (see
            // `Uring::recover`), which did not fit in the SQ then: it goes with this one.
            self.flush_deferred(&mut st)?;
        }
        let target = user_ud(fd, old.gen);
        self.push_change(&mut st, &poll_remove(target))?;
        if st.waiting {
            // Everything queued takes effect in the blocked wait, as it would anyway.
            return self.submit(&mut st);
        }
        // Owned (DEFER_TASKRUN): the removal finishes in task work that runs only when the
        // owner enters the kernel for completions (without it the file stays held), so the
        // same call asks for them (none are waited for).
        let flags = if self.owner.is_some() {
            IORING_ENTER_GETEVENTS
        } else {
            0
        };
        let stashed = st.stash.len();
        self.submit_flags(&mut st, flags)?;
        // The submission took the re-arms queued for the next wait with it: what they
        // report now is queued again, to be sampled when that wait starts (as after a probe).
        self.stash_cq(&mut st, &mut None)?;
        if self.owner.is_some() {
            self.run_all_deferred(&mut st)?;
            self.cancel_if_refused(&mut st, target)?;
        }
        Self::resample(&mut st, stashed);
        Ok(())
    }

    /// Inlined into the caller (the reactor's loop, say), so that in owned mode the
    /// `io_uring_enter` instruction sits in the caller's loop: no frame returns across it
    /// (see `syscall::syscall6` for what such a return costs).
    #[inline(always)]
    fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        if self.claim()? {
            return self.wait_owned(events, timeout);
        }
        self.wait_shared(events, timeout)
    }

    fn notify(&self) -> io::Result<()> {
        self.wake.notifier().notify()
    }

    fn notifier(&self) -> Notifier {
        self.wake.notifier().clone()
    }
}

impl Uring {
    /// [`Poller::is_stale`] with the state locked.
    fn is_stale_locked(&self, st: &mut State, fd: RawFd) -> io::Result<bool> {
        let Some(&entry) = st.table.get(fd) else {
            return Ok(false);
        };
        if common::check_open(fd).is_err() {
            return Ok(true);
        }
        let ud = user_ud(fd, entry.gen);
        let in_kernel = |st: &State| {
            entry.armed
                && !st.ring.queued(ud)
                && !st.rearm.iter().any(|r| r.2 == ud)
                && !st.stash.iter().any(|c| c.0 == ud)
        };
        self.stash_cq(st, &mut None)?;
        while st.probe_flags != 0 && in_kernel(st) {
            let sqe = IoUringSqe {
                opcode: IORING_OP_ASYNC_CANCEL,
                fd,
                addr: ud,
                op_flags: st.probe_flags,
                user_data: PROBE_UD,
                ..IoUringSqe::default()
            };
            let stashed = st.stash.len();
            let res = self.probe(st, &sqe)?;
            Self::resample(st, stashed);
            match -res {
                libc::EINVAL if st.probe_flags & IORING_ASYNC_CANCEL_USERDATA != 0 => {
                    st.probe_flags = IORING_ASYNC_CANCEL_FD;
                }
                libc::EINVAL => st.probe_flags = 0,
                libc::EBADF => return Ok(true),
                // The kernel dropped completions, perhaps this answer, perhaps this poll's
                // report (ENOENT would then say "stale" of a live fd): recovered now, which
                // gives this registration a fresh poll too, queued: none in the kernel to
                // ask about. The wake-up the notifier may have lost is the next wait's.
                libc::EBADR => {
                    self.recover(st);
                    st.wake_due = true;
                    st.attention = true;
                    return Ok(false);
                }
                // No poll on this file; unless ours completed meanwhile, it watches another.
                libc::ENOENT => return Ok(in_kernel(st)),
                // Found and cancelled (`res` >= 0, or EALREADY: being cancelled): live. Re-arm
                // with a new generation; the old poll's completion is then dropped (and the
                // remove ends it if the kernel matched another poll of the same file).
                e if e <= 0 || e == libc::EALREADY => {
                    self.push_change(st, &poll_remove(ud))?;
                    self.arm(st, fd, entry.token, entry.interest, entry.mode)?;
                    return Ok(false);
                }
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
        Ok(false)
    }

    /// [`Poller::new`], with the notifier's single-shot poll from the start if `notify_by_poll`
    /// (as on kernels without multishot poll).
    fn build(notify_by_poll: bool) -> io::Result<Self> {
        let (ring_fd, p) = Self::setup(IORING_SETUP_CQSIZE)?;
        let mut poller = Self::with_ring(ring_fd, &p, notify_by_poll, None)?;
        // Decided now, so `supports` gives the same answer from the start. Forcing the
        // notifier's fallback (tests) stands for a kernel without multishot poll.
        poller.multishot = !notify_by_poll && poller.probe_multishot()?;
        if !poller.multishot {
            poller.lock().notify_by_poll = true;
        }
        // Queued only: the first wait submits it, so the kernel finishes its completions as
        // task work of the waiting thread (the multishot poll is never submitted again),
        // not of the thread that created the poller.
        let mut st = poller.lock();
        let sqe = poller.notify_sqe(&mut st);
        poller.push(&mut st, &sqe)?;
        drop(st);
        Ok(poller)
    }

    /// [`Poller::new_owned`]; `refused` stands for a kernel that refuses the owned-mode
    /// flags (tests), which gets exactly what [`Poller::new`] builds.
    ///
    /// The ring is set up disabled, so that its owner is the thread that first enters it
    /// ([`Uring::claim`]), not necessarily this one. Nothing here enters it: the multishot
    /// probe of `new` is skipped (`DEFER_TASKRUN` is Linux 6.1, multishot poll 5.13), and the
    /// notifier's poll is queued for the first wait, as in `new`.
    fn build_owned(refused: bool) -> io::Result<Self> {
        let flags = IORING_SETUP_CQSIZE
            | IORING_SETUP_R_DISABLED
            | IORING_SETUP_SINGLE_ISSUER
            | IORING_SETUP_DEFER_TASKRUN
            | IORING_SETUP_TASKRUN_FLAG;
        let setup = if refused {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            Self::setup(flags)
        };
        let (ring_fd, p) = match setup {
            Ok(ring) => ring,
            // Unknown setup flags: a kernel before 6.1.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Self::build(false),
            Err(e) => return Err(e),
        };
        if p.features & IORING_FEAT_EXT_ARG == 0 {
            // Every kernel with these flags (6.1) has EXT_ARG (5.11); owned mode's wait
            // relies on it (see `owner`), so a kernel without gets the shared ring.
            return Self::build(false);
        }
        let mut poller = Self::with_ring(ring_fd, &p, false, Some(OnceLock::new()))?;
        poller.multishot = true;
        let mut st = poller.lock();
        let sqe = poller.notify_sqe(&mut st);
        poller.push(&mut st, &sqe)?;
        drop(st);
        Ok(poller)
    }

    /// `io_uring_setup(2)` with `flags` (and our CQ size).
    fn setup(flags: u32) -> io::Result<(OwnedFd, IoUringParams)> {
        // SAFETY: io_uring_params is plain integers; all-zero is valid (and required for the
        // reserved fields).
        let mut p: IoUringParams = unsafe { MaybeUninit::zeroed().assume_init() };
        p.flags = flags;
        p.cq_entries = CQ_ENTRIES;
        // SAFETY: `p` is a valid, writable io_uring_params for the duration of the call.
        let fd = cvt(unsafe {
            libc::syscall(libc::SYS_io_uring_setup, SQ_ENTRIES, ptr::addr_of_mut!(p))
        })?;
        let fd = RawFd::try_from(fd)
            .map_err(|_| io::Error::new(io::ErrorKind::Other, "io_uring_setup: bad fd"))?;
        // SAFETY: `fd` was just returned by io_uring_setup and nothing else owns it.
        Ok((unsafe { OwnedFd::from_raw_fd(fd) }, p))
    }

    /// The poller around a ring just set up (`multishot` still to be decided; nothing
    /// queued).
    fn with_ring(
        ring_fd: OwnedFd,
        p: &IoUringParams,
        notify_by_poll: bool,
        owner: Option<OnceLock<(ThreadId, i32)>>,
    ) -> io::Result<Self> {
        let ring = Ring::map(ring_fd.as_raw_fd(), p)?;
        let drops_seen = ring.dropped();
        Ok(Self {
            state: Mutex::new(State {
                ring,
                table: FdMap::new(),
                stash: Vec::new(),
                ready: VecDeque::new(),
                rearm: Vec::new(),
                deferred: Vec::new(),
                error: None,
                dropped: false,
                drops_seen,
                wake_due: false,
                attention: false,
                notify_seq: 0,
                #[cfg(test)]
                inject_enter: None,
                #[cfg(test)]
                inject_flush: None,
                next_gen: 0,
                probe_flags: IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_USERDATA,
                notify_by_poll,
                waiting: false,
            }),
            waiter: Mutex::new(WaitState {
                ts: Box::default(),
                seq: 0,
                timeout: None,
                #[cfg(test)]
                rounds: 0,
            }),
            ring_fd,
            wake: Receiver::new_fd()?,
            ext_arg: p.features & IORING_FEAT_EXT_ARG != 0,
            multishot: false,
            owner,
        })
    }

    /// In owned mode, the check every call that may enter the ring makes first: the first
    /// such call enables the ring (`IORING_REGISTER_ENABLE_RINGS`), which makes its thread
    /// the ring's `SINGLE_ISSUER` owner; afterwards, calls from another thread fail with
    /// `Unsupported` instead of the kernel's bare `EEXIST`. Free otherwise. One atomic load
    /// and a thread-local read once claimed. Returns whether the poller is in owned mode.
    fn claim(&self) -> io::Result<bool> {
        let Some(owner) = &self.owner else {
            return Ok(false);
        };
        let me = current_thread();
        let &(id, errno) = owner.get_or_init(|| {
            // SAFETY: `ring_fd` is our ring (invariant); ENABLE_RINGS takes no argument
            // (null, 0).
            let res = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    self.ring_fd.as_raw_fd(),
                    IORING_REGISTER_ENABLE_RINGS,
                    ptr::null::<libc::c_void>(),
                    0,
                )
            };
            let errno = cvt(res).err().and_then(|e| e.raw_os_error()).unwrap_or(0);
            (me, errno)
        });
        if id != me {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this io_uring poller was made with new_owned and is owned by another thread \
                 (the first that registered or waited): only notify works from here",
            ));
        }
        if errno != 0 {
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(true)
    }

    /// Owned mode, after a wait's `io_uring_enter`: one call runs at most 20 items of
    /// deferred task work (Linux 6.13+), so while the kernel says more is pending
    /// (`IORING_SQ_TASKRUN`) it enters again without waiting, for one wait to report what
    /// is ready; bounded by [`TASKRUN_ROUNDS`] and by the room left in the CQ.
    #[inline]
    fn run_deferred(&self, st: &State) -> io::Result<()> {
        if st.ring.load(st.ring.sq_flags, Ordering::Acquire) & IORING_SQ_TASKRUN == 0 {
            return Ok(());
        }
        self.run_deferred_more(st)
    }

    /// [`run_deferred`](Self::run_deferred) once the kernel says task work is pending.
    #[inline(never)]
    fn run_deferred_more(&self, st: &State) -> io::Result<()> {
        for _ in 0..TASKRUN_ROUNDS {
            let pending = st.ring.load(st.ring.sq_flags, Ordering::Acquire) & IORING_SQ_TASKRUN;
            if pending == 0
                || st.ring.cq_len() + TASKRUN_CQ_ROOM > st.ring.cq_entries
                || st.ring.overflowed()
            {
                break;
            }
            match self.enter(0, 0, IORING_ENTER_GETEVENTS, None) {
                Ok(_) => {}
                // A signal, or completions in the overflow list: reaping copes.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Owned mode, `deregister`: runs the deferred task work until the kernel says none is
    /// left, moving the completions it posts to the stash. The kernel runs a bounded batch
    /// per `GETEVENTS` (20 items on Linux 6.13+), in order, so the removal's (which drops the
    /// ring's reference to the file) may wait behind many wake-ups of other polls; the
    /// caller's promise is that the file is released when `deregister` returns. Bounded
    /// (1 024 calls of at least 20 items: more than one wake-up for each fd a process can
    /// have open here), against work that keeps coming.
    #[cold]
    #[inline(never)]
    fn run_all_deferred(&self, st: &mut State) -> io::Result<()> {
        for _ in 0..1024 {
            if st.ring.load(st.ring.sq_flags, Ordering::Acquire) & IORING_SQ_TASKRUN == 0 {
                break;
            }
            match self.enter(0, 0, IORING_ENTER_GETEVENTS, None) {
                Ok(_) => {}
                // A signal, or completions in the overflow list (flushed by stash_cq).
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            self.stash_cq(st, &mut None)?;
        }
        Ok(())
    }

    /// Owned mode, `deregister`: a poll woken and not yet finished (its task work was
    /// pending) is not `POLL_REMOVE`'s to take: it says `EALREADY`, and the `ASYNC_CANCEL`
    /// that a reap queues for that would go out with a later wait, the file held until
    /// then. Cancelled here instead (it marks the poll cancelled whoever owns it; Linux
    /// 6.1+, as owned mode) and its task work run, so the file is released when
    /// `deregister` returns. Rare: the common removal stays the cheaper `POLL_REMOVE`.
    fn cancel_if_refused(&self, st: &mut State, target: u64) -> io::Result<()> {
        let refused = remove_ud(target);
        let Some(i) = st
            .stash
            .iter()
            .position(|&(ud, res, _)| ud == refused && res == -libc::EALREADY)
        else {
            return Ok(());
        };
        st.stash.remove(i);
        self.push_change(st, &async_cancel(target))?;
        self.submit_flags(st, IORING_ENTER_GETEVENTS)?;
        self.stash_cq(st, &mut None)?;
        self.run_all_deferred(st)
    }

    /// Whether the kernel takes multishot polls (Linux 5.13+; older kernels refuse
    /// `IORING_POLL_ADD_MULTI` in `sqe.len` with `EINVAL` while preparing the request, before
    /// it looks at the file): submits one on the notifier's eventfd, idle at this point, with
    /// a POLL_REMOVE of it right behind, and waits for its result (`ECANCELED`: taken, then
    /// removed). One `io_uring_enter` in `new`, before anything else is queued; the creating
    /// thread reaps both completions itself, so no task work of this ring is left for it.
    fn probe_multishot(&self) -> io::Result<bool> {
        let mut st = self.lock();
        let sqe = IoUringSqe {
            len: IORING_POLL_ADD_MULTI,
            ..poll_add(self.wake_fd(), Interest::READABLE, PROBE_UD)
        };
        self.push(&mut st, &sqe)?;
        // EBADR (dropped completions, the first wait recovers) is Linux 5.19+: multishot too.
        let res = self.probe(&mut st, &poll_remove(PROBE_UD))?;
        Ok(res != -libc::EINVAL)
    }

    /// Enters a fresh registration of `fd` (a new generation) and queues its poll; submitted
    /// now only if a wait is blocked (see [`State::waiting`]).
    fn arm(
        &self,
        st: &mut State,
        fd: RawFd,
        token: u64,
        interest: Interest,
        mode: Mode,
    ) -> io::Result<()> {
        st.next_gen = st.next_gen.wrapping_add(1);
        let entry = Entry {
            token,
            interest,
            mode,
            gen: st.next_gen,
            armed: true,
            pending: Ready::empty(),
            queued: false,
        };
        // Readiness the old registration had not reported yet is dropped: the new poll
        // samples the fd's current readiness when it is armed.
        if st.table.insert(fd, entry).is_some_and(|old| old.queued) {
            st.ready.retain(|&f| f != fd);
        }
        self.push_change(st, &poll_for(fd, interest, mode, user_ud(fd, entry.gen)))?;
        self.submit_if_waiting(st)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One `io_uring_enter(2)`; returns how many SQEs it submitted.
    #[inline(always)]
    fn enter(
        &self,
        to_submit: u32,
        min_complete: u32,
        flags: u32,
        arg: Option<&IoUringGeteventsArg>,
    ) -> io::Result<u32> {
        let (argp, argsz) = match arg {
            Some(a) => (
                (a as *const IoUringGeteventsArg).cast::<libc::c_void>(),
                mem::size_of::<IoUringGeteventsArg>(),
            ),
            None => (ptr::null(), 0),
        };
        let args = [
            self.ring_fd.as_raw_fd() as usize,
            to_submit as usize,
            min_complete as usize,
            flags as usize,
            argp as usize,
            argsz,
        ];
        // SAFETY: `ring_fd` is our ring (invariant); `argp` is null (no sigmask) or, with
        // IORING_ENTER_EXT_ARG, a live io_uring_getevents_arg of `argsz` bytes whose `ts`
        // points to a live timespec; the kernel copies both before returning.
        let n = unsafe { crate::syscall::syscall6(libc::SYS_io_uring_enter, args) }?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    /// Queues `sqe`, submitting first if the SQ is full. For a wait's own requests (at its
    /// start, where submitting samples readiness as the wait should); a change made between
    /// waits uses [`push_change`](Self::push_change).
    fn push(&self, st: &mut State, sqe: &IoUringSqe) -> io::Result<()> {
        if st.ring.try_push(sqe) {
            return Ok(());
        }
        self.submit(st)?;
        if st.ring.try_push(sqe) {
            Ok(())
        } else {
            Err(sq_stays_full())
        }
    }

    /// [`push`](Self::push) for a change (register, modify, deregister, a probe's re-arm).
    #[inline]
    fn push_change(&self, st: &mut State, sqe: &IoUringSqe) -> io::Result<()> {
        if st.ring.try_push(sqe) {
            return Ok(());
        }
        self.push_change_full(st, sqe)
    }

    /// [`push_change`](Self::push_change) on a full SQ. The submission takes with it the
    /// re-arms the last wait queued for the next one (a large batch of Level reports fills
    /// the SQ with them, and a handler that registers an fd lands here), whose polls then
    /// sample readiness before the caller has handled those reports: what they report now
    /// is queued again, to be sampled when the next wait starts (as after a probe), else
    /// every such fd would be reported again with nothing to read. `sqe` goes first: the
    /// re-arms may fill the SQ again. (While a wait is blocked, the change takes effect in
    /// it, and so do the re-arms: nothing to undo.)
    #[cold]
    #[inline(never)]
    fn push_change_full(&self, st: &mut State, sqe: &IoUringSqe) -> io::Result<()> {
        let stashed = st.stash.len();
        self.submit(st)?;
        if !st.ring.try_push(sqe) {
            return Err(sq_stays_full());
        }
        if !st.waiting {
            self.stash_cq(st, &mut None)?;
            Self::resample(st, stashed);
        }
        Ok(())
    }

    /// Submits now if a wait is blocked (so the change takes effect in it); otherwise leaves
    /// the SQEs for the next wait. See [`State::waiting`].
    fn submit_if_waiting(&self, st: &mut State) -> io::Result<()> {
        if st.waiting {
            self.submit(st)
        } else {
            Ok(())
        }
    }

    /// Submits everything queued (no waiting). Called with the state lock held, by
    /// register/modify/deregister and when the SQ is full. Before that, it moves completions
    /// off a CQ that is half full so they never pile up in the kernel's overflow list while
    /// nobody waits.
    fn submit(&self, st: &mut State) -> io::Result<()> {
        self.submit_flags(st, 0)
    }

    /// [`submit`](Self::submit) with these `io_uring_enter` flags on each call.
    fn submit_flags(&self, st: &mut State, flags: u32) -> io::Result<()> {
        if st.ring.cq_len() >= st.ring.cq_entries / 2 || st.ring.overflowed() {
            self.steal(st)?;
        }
        let mut stuck = 0;
        loop {
            let n = st.ring.sq_pending();
            if n == 0 {
                return Ok(());
            }
            match self.enter(n, 0, flags, None) {
                Ok(k) if k > 0 => stuck = 0,
                Ok(_) => stuck += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EBUSY: completions are waiting in the overflow list (kernels < 5.19 refuse
                // to submit then); EAGAIN: no memory for requests right now.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    stuck += 1;
                    if stuck > 64 {
                        return Err(e);
                    }
                    self.steal(st)?;
                }
                Err(e) => return Err(e),
            }
            if stuck > 64 {
                return Err(io::Error::new(
                    io::ErrorKind::Other,
                    "io_uring does not take submissions",
                ));
            }
        }
    }

    /// Moves the CQ's live completions to `stash` (dropping stale and internal ones) and
    /// flushes the kernel's overflow list (see [`Uring::stash_cq`]).
    fn steal(&self, st: &mut State) -> io::Result<()> {
        self.stash_cq(st, &mut None).map(drop)
    }

    /// Moves the CQ's live completions to `stash` (dropping stale and internal ones; merging
    /// [`Mode::Edge`] ones into their entries, see [`Uring::edge_completion`]), flushing the
    /// kernel's overflow list, and the result of [`PROBE_UD`] to `probe`; returns whether it
    /// kept any.
    ///
    /// If it took any completion off the CQ while a wait is blocked (or about to block:
    /// [`State::waiting`]) and the stash or the Edge-ready queue then holds something for
    /// that wait to report, it also queues a NOP, which the caller must submit before it
    /// lets go of the lock (`submit_if_waiting`): the kernel wakes a waiter only for
    /// completions posted after the CQ head it saw when it went to sleep, so one that entered
    /// after these were moved off would sleep through them; the NOP's completion comes
    /// after. Also when it took only an earlier such NOP's completion (a probe's `enter`
    /// reaps its own): that NOP was the waiter's wake-up.
    fn stash_cq(&self, st: &mut State, probe: &mut Option<i32>) -> io::Result<bool> {
        let had = st.ring.cq_len() > 0 || st.ring.overflowed();
        let kept = self.stash_cq_inner(st, probe)?;
        if st.waiting && had && (!st.stash.is_empty() || !st.ready.is_empty()) {
            let nop = IoUringSqe {
                opcode: IORING_OP_NOP,
                user_data: INTERNAL_UD,
                ..IoUringSqe::default()
            };
            // Not `push`, which may submit, and so steal again: the SQ is made room in
            // here. The SQ is full only if nothing was submitted since the last round.
            while !st.ring.try_push(&nop) {
                retry(|| self.enter(st.ring.sq_pending(), 0, 0, None))?;
            }
        }
        Ok(kept)
    }

    fn stash_cq_inner(&self, st: &mut State, probe: &mut Option<i32>) -> io::Result<bool> {
        let mut kept = false;
        loop {
            while let Some((ud, res, flags)) = st.ring.pop() {
                let live = match decode(ud) {
                    Ud::Internal => {
                        if ud == PROBE_UD {
                            *probe = Some(res);
                        }
                        false
                    }
                    Ud::Notify { .. } | Ud::Timeout => true,
                    // Only an `EALREADY` asks for more (see `complete_other`).
                    Ud::Remove { .. } => res == -libc::EALREADY,
                    // Only an `ENOENT` does (see `notify_cancelled`).
                    Ud::NotifyCancel { .. } => res == -libc::ENOENT,
                    Ud::User { fd, gen } => match st.table.get(fd) {
                        Some(e) if e.gen == gen && e.mode == Mode::Edge => {
                            kept |= Self::edge_completion(st, fd, ud, res, flags);
                            false
                        }
                        Some(e) => e.gen == gen,
                        None => false,
                    },
                };
                if live {
                    st.stash.push((ud, res, flags));
                    kept = true;
                }
            }
            if !st.ring.overflowed() {
                return Ok(kept);
            }
            self.flush_overflow(st)?;
        }
    }

    /// Has the kernel move the completions of its overflow list into the CQ (a `GETEVENTS`
    /// that waits for none). Out of line: the CQ overflows only when nobody reaped for long.
    #[cold]
    #[inline(never)]
    fn flush_overflow(
        &self,
        #[cfg_attr(not(test), allow(unused_variables))] st: &mut State,
    ) -> io::Result<()> {
        #[cfg(test)]
        if let Some(errno) = st.inject_flush.take() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        retry(|| self.enter(0, 0, IORING_ENTER_GETEVENTS, None)).map(drop)
    }

    /// Turns the registrations' completions stashed from `from` on (by a [`probe`], or after
    /// `deregister`'s submission) back into queued polls. That submission took the re-arms
    /// queued for the next wait with it, so those completions sampled readiness before the caller had handled the
    /// last wait's events: reported as they are, the next wait would miss what became ready
    /// since (a level report without data written after it). Queued again, the next wait
    /// samples afresh, as it would have without the probe.
    ///
    /// [`probe`]: Self::probe
    fn resample(st: &mut State, from: usize) {
        let mut i = from;
        while i < st.stash.len() {
            let (ud, _, _) = st.stash[i];
            match decode(ud) {
                Ud::User { fd, .. } => {
                    st.stash.remove(i);
                    // stash_cq kept only current generations.
                    if let Some((interest, mode)) = st.table.get(fd).map(|e| (e.interest, e.mode)) {
                        Self::rearm(st, fd, interest, mode, ud);
                    }
                }
                _ => i += 1,
            }
        }
    }

    /// Submits everything queued and `sqe` and waits for the result of the request tagged
    /// [`PROBE_UD`] (`sqe`, or one queued before it), stashing the other completions that
    /// arrive meanwhile. A blocked waiter is woken by
    /// them (the CQ tail moves) and reports the stash.
    ///
    /// `-EBADR` if the kernel said it dropped completions (the result may be one of them, and
    /// waiting on would then never end): marked in [`State::dropped`], for the caller or the
    /// next wait to [`recover`](Self::recover).
    fn probe(&self, st: &mut State, sqe: &IoUringSqe) -> io::Result<i32> {
        self.push(st, sqe)?;
        let mut result = None;
        loop {
            let entered = self.enter(st.ring.sq_pending(), 1, IORING_ENTER_GETEVENTS, None);
            let entered = injected(st, entered);
            match entered {
                Ok(_) => {}
                // EBUSY: the CQ overflowed (flushed by stash_cq); EINTR: a signal.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBADR) => {
                    st.mark_dropped();
                    return Ok(-libc::EBADR);
                }
                Err(e) => return Err(e),
            }
            self.stash_cq(st, &mut result)?;
            if let Some(res) = result {
                return Ok(res);
            }
        }
    }

    /// One round of `wait`: submit what is queued, wait for a completion (or the time
    /// left), then turn completions into events.
    fn wait_once(
        &self,
        ws: &mut WaitState,
        events: &mut Events,
        left: Option<Duration>,
    ) -> io::Result<Round> {
        let mut st = self.lock();
        let mut notified = false;
        if st.attention {
            notified = self.before_wait(&mut st)?;
        }
        #[cfg(test)]
        {
            ws.rounds += 1;
        }
        let block = !notified && st.must_block(left);
        // Without EXT_ARG: a TIMEOUT request for the wait's deadline, unless an earlier round
        // of this wait has one in flight (a round that ends without an event, on internal
        // completions, keeps it: cancelling it there would end the next round at once, on
        // the removal's completion, and the wait would spin until its deadline).
        if let Some(d) = left.filter(|_| block && !self.ext_arg && ws.timeout.is_none()) {
            ws.seq = ws.seq.wrapping_add(1);
            let ud = (u64::from(ws.seq) << 32) | u64::from(TIMEOUT_LOW);
            *ws.ts = kernel_timespec(d);
            let sqe = IoUringSqe {
                opcode: IORING_OP_TIMEOUT,
                fd: -1,
                addr: (&*ws.ts as *const KernelTimespec) as u64,
                len: 1,
                off: 0, // a pure timeout, not "after n completions"
                user_data: ud,
                ..IoUringSqe::default()
            };
            self.push(&mut st, &sqe)?;
            ws.timeout = Some(ud);
        }
        let to_submit = st.ring.sq_pending();
        // The blocking call, without the state lock, so other threads can register and
        // submit meanwhile; their completions wake this call.
        st.waiting = block;
        drop(st);
        // Without EXT_ARG the limit is the TIMEOUT request queued above.
        let entered = self.enter_wait(to_submit, block, left.filter(|_| self.ext_arg));

        let mut st = self.lock();
        // Also after a failed call: other threads' changes wait for the next wait again.
        st.waiting = false;
        let lost = Self::check_entered(&mut st, entered)?;
        notified |= self.reap(&mut st, &mut ws.timeout, events);
        if lost {
            self.recover(&mut st);
            notified = true;
        }
        Ok(Round { notified })
    }

    /// The end of a shared ring's wait: a fallback timeout still in flight (the wait ended
    /// before its deadline) is cancelled, with the next submission (not `push`, whose error
    /// would lose the events just reaped).
    #[inline]
    fn end_wait(&self, ws: &mut WaitState) {
        if let Some(ud) = ws.timeout.take() {
            self.lock()
                .defer(&aimed_at(IORING_OP_TIMEOUT_REMOVE, ud, INTERNAL_UD));
        }
    }

    /// What a wait does first when [`State::attention`] is set, before it consumes anything:
    /// returns the error a reap kept ([`State::error`]); recovers if [`Uring::probe`] saw
    /// dropped completions; pushes the requests a reap left in [`State::deferred`], then
    /// the re-arms in [`State::rearm`]. Returns whether this round reports a wake-up (a
    /// recovery re-opened the notifier's flag), in which case it does not block.
    #[cold]
    #[inline(never)]
    fn before_wait(&self, st: &mut State) -> io::Result<bool> {
        if let Some(e) = st.error.take() {
            st.attention = st.needs_attention();
            return Err(e);
        }
        if st.dropped {
            self.recover(st);
            st.wake_due = true;
        }
        let res = self.flush_deferred(st).and_then(|()| self.flush_rearm(st));
        // After an error, the wake-up stays due, for the next wait.
        let woke = res.is_ok() && mem::take(&mut st.wake_due);
        st.attention = st.needs_attention();
        res.map(|()| woke)
    }

    /// What a wait's `io_uring_enter` returned: `Ok(false)` if it went well, else as
    /// [`enter_failed`](Self::enter_failed).
    #[inline(always)]
    fn check_entered(st: &mut State, entered: io::Result<()>) -> io::Result<bool> {
        let entered = injected(st, entered);
        match entered {
            Ok(()) if st.ring.dropped() == st.drops_seen => Ok(false),
            // The drop count moved since the last recovery (or since the ring was set up),
            // with no `EBADR` to say so (this wait did not block): as `EBADR`.
            Ok(()) => {
                st.mark_dropped();
                Ok(true)
            }
            Err(e) => Self::enter_failed(st, e),
        }
    }

    /// A wait's `io_uring_enter` failed with `e`. `EBADR` (Linux 5.19+): the kernel dropped
    /// completions, because the CQ was full and it could not allocate an overflow entry for
    /// them, and says so once; marked in [`State::dropped`] and `Ok(true)`: the round reaps
    /// what is there, then [`recover`](Self::recover)s (or, if it fails first, the next wait
    /// does). Any other error is returned (nothing was consumed).
    #[cold]
    #[inline(never)]
    fn enter_failed(st: &mut State, e: io::Error) -> io::Result<bool> {
        if e.raw_os_error() != Some(libc::EBADR) {
            return Err(e);
        }
        st.mark_dropped();
        Ok(true)
    }

    /// Recovers from completions the kernel dropped (`EBADR`). Which ones is unknown, and a
    /// lost completion leaves a registration marked armed with no poll in the kernel (it
    /// would never report again) or the notifier's poll dead (a `notify` would never wake a
    /// wait), so:
    ///
    /// * every registration marked armed is armed anew with a fresh generation, as
    ///   [`modify`](Poller::modify) does: a `POLL_REMOVE` of the old poll (its completion,
    ///   or `ENOENT` if it is gone, is ignored for its old generation), then a new poll,
    ///   which reports the fd if it is ready when it is armed: a lost report comes back
    ///   (perhaps spuriously). Its token, interest and mode stay, and so does the readiness
    ///   an Edge registration has not reported yet ([`Entry::pending`], [`State::ready`]).
    ///   Oneshot registrations already reported (not armed) stay as they are. Re-arms
    ///   already queued under the old generation are dropped by [`flush_rearm`], or, if in
    ///   the SQ, submitted ahead of the removal, which ends them.
    /// * the notifier's flag is re-opened (after a drain: [`Receiver::reset`]), since the
    ///   wake-up it stands for may be lost; the caller reports a wake-up for it (spurious
    ///   at worst).
    /// * the notifier's poll gets an `IORING_OP_ASYNC_CANCEL` ([`NOTIFY_CANCEL_LOW`]) whose
    ///   result says whether it lived: see [`notify_cancelled`](Self::notify_cancelled).
    ///
    /// Nothing is submitted here (this runs in a wait, after its reap, or in `is_stale`):
    /// the requests are queued with [`State::defer`] and [`Uring::rearm`].
    ///
    /// [`flush_rearm`]: Self::flush_rearm
    #[cold]
    #[inline(never)]
    fn recover(&self, st: &mut State) {
        st.dropped = false;
        // Whatever the count says was dropped so far is covered by this recovery.
        st.drops_seen = st.ring.dropped();
        let mut fresh = Vec::new();
        for (fd, e) in st.table.iter_mut() {
            if e.armed {
                st.next_gen = st.next_gen.wrapping_add(1);
                let old = user_ud(fd, e.gen);
                e.gen = st.next_gen;
                fresh.push((fd, e.interest, e.mode, old, user_ud(fd, e.gen)));
            }
        }
        for (fd, interest, mode, old, new) in fresh {
            st.defer(&poll_remove(old));
            Self::rearm(st, fd, interest, mode, new);
        }
        let target = if st.notify_by_poll {
            NOTIFY_POLL_UD
        } else {
            NOTIFY_MULTI_UD
        };
        let cancel = aimed_at(
            IORING_OP_ASYNC_CANCEL,
            target,
            notify_cancel_ud(st.notify_seq),
        );
        st.defer(&cancel);
        self.wake.reset();
        st.attention = st.needs_attention();
    }

    /// The completion (`res`) of a recovery's cancel of the notifier's poll, queued when
    /// [`State::notify_seq`] was `seq`; returns whether it consumed a wake-up. `0`: the poll
    /// was alive and is cancelled now; its own completion (`ECANCELED`, no `F_MORE`) follows
    /// and re-arms it, as for any poll of the notifier that ends. `EALREADY`: alive and
    /// completing: nothing to do (if that ends it, its end re-arms it). `ENOENT`: gone, its
    /// completion dropped, or posted and handled
    /// before this one (the kernel posts completions in order, and takes the poll out of
    /// its table in the same task work that posts its end), in which case a new poll was
    /// queued since this cancel: so a new poll is queued only if none was
    /// (`seq == notify_seq`), after a drain (`Receiver::reset`; the write it eats is this
    /// round's wake-up). Exactly one poll of the notifier lives on either way.
    #[cold]
    #[inline(never)]
    fn notify_cancelled(&self, st: &mut State, seq: u32, res: i32) -> bool {
        if res != -libc::ENOENT || seq != st.notify_seq {
            return false;
        }
        self.wake.reset();
        let sqe = self.notify_sqe(st);
        st.defer(&sqe);
        true
    }

    /// The `io_uring_enter` of a wait round: submits `to_submit` and, if `block`, waits for
    /// a completion for at most `timeout` (passed to the kernel with
    /// `IORING_ENTER_EXT_ARG`; `None`: no limit here). ETIME (the timeout passed), EINTR (a
    /// signal: `wait_loop` waits the rest) and EBUSY (the CQ overflowed: reaping flushes it)
    /// end the wait without an error; EBADR (dropped completions) is returned, for the caller
    /// to recover ([`enter_failed`](Self::enter_failed)). Inlined, so the instruction sits in
    /// the caller's loop.
    #[inline(always)]
    fn enter_wait(&self, to_submit: u32, block: bool, timeout: Option<Duration>) -> io::Result<()> {
        let ts;
        let arg;
        let (flags, arg) = match timeout {
            Some(d) if block => {
                ts = kernel_timespec(d);
                arg = IoUringGeteventsArg {
                    sigmask: 0,
                    sigmask_sz: 0,
                    pad: 0,
                    ts: (&ts as *const KernelTimespec) as u64,
                };
                (IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, Some(&arg))
            }
            _ => (IORING_ENTER_GETEVENTS, None),
        };
        match self.enter(to_submit, u32::from(block), flags, arg) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// [`Poller::wait`] on a shared ring (not [`Poller::new_owned`]): out of line.
    #[inline(never)]
    fn wait_shared(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let mut ws = self.waiter.lock().unwrap_or_else(|p| p.into_inner());
        let res = common::wait_loop(events, timeout, |events, left| {
            self.wait_once(&mut ws, events, left)
        });
        self.end_wait(&mut ws);
        res
    }

    /// [`Poller::wait`] in owned mode: the state lock is taken once and kept across
    /// `io_uring_enter` (only the owner thread may take it: every other caller fails
    /// [`claim`](Self::claim) first), and a timed wait passes its timeout to the kernel
    /// (`IORING_ENTER_EXT_ARG`, which owned mode implies), so the waiter state of
    /// [`wait_once`](Self::wait_once) is not needed.
    #[inline(always)]
    fn wait_owned(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let mut st = self.lock();
        common::wait_loop(
            events,
            timeout,
            #[inline(always)]
            |events, left| self.wait_once_owned(&mut st, events, left),
        )
    }

    /// One round of [`wait_owned`](Self::wait_owned): as [`wait_once`](Self::wait_once),
    /// then [`run_deferred`](Self::run_deferred) for the task work the kernel left.
    #[inline(always)]
    fn wait_once_owned(
        &self,
        st: &mut State,
        events: &mut Events,
        left: Option<Duration>,
    ) -> io::Result<Round> {
        let mut notified = false;
        if st.attention {
            notified = self.before_wait(st)?;
        }
        let block = !notified && st.must_block(left);
        let entered = self.enter_wait(st.ring.sq_pending(), block, left);
        let lost = Self::check_entered(st, entered)?;
        self.run_deferred(st)?;
        // No fallback timeout in owned mode: a timeout completion is never ours.
        notified |= self.reap(st, &mut None, events);
        if lost {
            self.recover(st);
            notified = true;
        }
        Ok(Round { notified })
    }

    /// Turns the stash, then the CQ, into events (as many as fit), then reports the
    /// [`Mode::Edge`] registrations in [`State::ready`] (one event per fd, however many
    /// completions its poll posted); returns whether the notifier fired. Completions are
    /// handled while the events stored plus the Edge fds queued leave room, so every fd
    /// queued gets its slot in this wait unless it was queued before and the buffer is full.
    /// Once it is full, the rest of the CQ is moved aside ([`Uring::stash_cq`]: Edge
    /// completions merge into their entries, the others wait in the stash), so that an Edge
    /// fd reported now is not reported again by the next wait for a wake-up that came before
    /// this one. `timeout` is the waiter's fallback timeout ([`WaitState::timeout`]), cleared
    /// when its completion arrives. Out of line: the wait, with its `io_uring_enter`, is
    /// inlined into the caller's loop, and a call made after the system call costs nothing
    /// extra (a return *across* it does); inlined as well, it made the caller's loop larger
    /// and the many-events case (fanin) about 1 % slower.
    ///
    /// Never fails: an error here would lose the events already taken off the CQ (and the
    /// Oneshot registrations already marked disarmed for them). The requests it queues do not
    /// submit ([`Uring::rearm`], [`State::defer`]); an error flushing the kernel's overflow
    /// list ends it early, with the events collected so far, and is kept for the next wait
    /// ([`State::error`]); the completions not taken stay in the kernel.
    #[inline(never)]
    fn reap(&self, st: &mut State, timeout: &mut Option<u64>, events: &mut Events) -> bool {
        let mut notified = false;
        if !st.stash.is_empty() {
            let mut used = 0;
            while used < st.stash.len() && events.remaining() > st.ready.len() {
                let (ud, res, flags) = st.stash[used];
                used += 1;
                notified |= self.complete(st, timeout, events, ud, res, flags);
            }
            st.stash.drain(..used);
        }
        loop {
            if events.remaining() <= st.ready.len() {
                // Not `stash_cq`: no wait is blocked (`waiting` is false), so no NOP to queue.
                if let Err(e) = self.stash_cq_inner(st, &mut None) {
                    st.keep_error(e);
                }
                break;
            }
            match st.ring.pop() {
                Some((ud, res, flags)) => {
                    notified |= self.complete(st, timeout, events, ud, res, flags);
                }
                None if st.ring.overflowed() => {
                    if let Err(e) = self.flush_overflow(st) {
                        st.keep_error(e);
                        break;
                    }
                }
                None => break,
            }
        }
        while events.remaining() > 0 {
            let Some(fd) = st.ready.pop_front() else {
                break;
            };
            if let Some(e) = st.table.get_mut(fd) {
                events.push(e.token, e.pending);
                e.pending = Ready::empty();
                e.queued = false;
            }
        }
        notified
    }

    /// Handles one completion; returns whether it was the notifier's. The notifier's
    /// multishot poll, the completion of every cross-thread wake-up, is handled inline; the
    /// rest out of line.
    #[inline]
    fn complete(
        &self,
        st: &mut State,
        timeout: &mut Option<u64>,
        events: &mut Events,
        ud: u64,
        res: i32,
        flags: u32,
    ) -> bool {
        if ud == NOTIFY_MULTI_UD && flags & IORING_CQE_F_MORE != 0 {
            // One eventfd write, one completion; the poll stays armed and the counter is
            // never read, as with epoll's EPOLLET (see `notify_sqe`).
            self.wake.reset_edge();
            return true;
        }
        self.complete_other(st, timeout, events, ud, res, flags)
    }

    /// [`complete`](Self::complete) for all but a live multishot notifier poll. What it
    /// queues does not submit (see [`reap`](Self::reap)).
    #[inline(never)]
    fn complete_other(
        &self,
        st: &mut State,
        timeout: &mut Option<u64>,
        events: &mut Events,
        ud: u64,
        res: i32,
        flags: u32,
    ) -> bool {
        match decode(ud) {
            Ud::Notify { multi: true } if res == -libc::EINVAL => {
                // No multishot poll before Linux 5.13: a single-shot poll from now on.
                st.notify_by_poll = true;
                let sqe = self.notify_sqe(st);
                st.defer(&sqe);
                false
            }
            Ud::Notify { .. } => {
                // A single-shot poll, or a multishot one the kernel ended (cancelled, or a CQ
                // overflow it could not record): drain, re-open the flag, arm again. Drained
                // first, so the new poll does not fire on old writes: it fires for the
                // writes of notifies that come after the flag is open (`Receiver::reset`).
                self.wake.reset();
                let sqe = self.notify_sqe(st);
                st.defer(&sqe);
                true
            }
            Ud::NotifyCancel { seq } => self.notify_cancelled(st, seq, res),
            Ud::Internal => false,
            Ud::Remove { target } => {
                if res == -libc::EALREADY {
                    // The poll was being woken (its task work pending, which in owned mode
                    // runs only in the owner's next wait): `POLL_REMOVE` does not touch a poll
                    // it cannot take ownership of, and a multishot poll would live on,
                    // holding its file open after the caller closed the fd. An
                    // `ASYNC_CANCEL` marks it cancelled whoever owns it.
                    st.defer(&async_cancel(target));
                }
                false
            }
            Ud::Timeout => {
                if *timeout == Some(ud) {
                    *timeout = None;
                }
                false
            }
            Ud::User { fd, gen } => {
                let Some(entry) = st.table.get_mut(fd) else {
                    return false;
                };
                if entry.gen != gen {
                    return false;
                }
                if entry.mode == Mode::Edge {
                    // As `Self::edge_completion`, without a second lookup.
                    let (interest, mode) = (entry.interest, entry.mode);
                    let (queue, rearm) = entry.edge_completion(res, flags);
                    if rearm {
                        Self::rearm(st, fd, interest, mode, ud);
                    }
                    if queue {
                        st.ready.push_back(fd);
                    }
                    return false;
                }
                let entry = *entry;
                // Cancelled by the kernel (not by us: ours have old generations) or empty:
                // nothing to report, arm again.
                if res == -libc::ECANCELED || res == 0 {
                    Self::rearm(st, fd, entry.interest, entry.mode, ud);
                    return false;
                }
                let ready = if res < 0 {
                    Ready::ERROR
                } else {
                    ready_from(res.unsigned_abs())
                };
                events.push(entry.token, ready);
                if entry.mode == Mode::Level {
                    // Re-armed now, submitted by the next wait: it completes at once if the
                    // fd is still ready, which is what level-triggered means.
                    Self::rearm(st, fd, entry.interest, entry.mode, ud);
                } else if let Some(e) = st.table.get_mut(fd) {
                    e.armed = false;
                }
                false
            }
        }
    }

    /// A completion of the current poll of the [`Mode::Edge`] registration of `fd` (tagged
    /// `ud`): merges its readiness into [`Entry::pending`] and queues the fd in
    /// [`State::ready`] if it is not there yet; returns whether it queued it. A completion
    /// without `IORING_CQE_F_MORE` ends the multishot request (cancelled by the kernel, a
    /// CQE it could not post, or the kernel's own reasons): it is re-armed with the same
    /// `user_data`, and the new request reports the fd's readiness when it is armed, so a
    /// wake-up missed in between shows as a (maybe spurious) report, never as a lost one.
    /// A failed poll (`res < 0` other than `ECANCELED`, e.g. `EBADF` once the number is
    /// closed) reports [`Ready::ERROR`] and is not re-armed (that would fail again at every
    /// wait); [`modify`](Poller::modify) arms it anew.
    fn edge_completion(st: &mut State, fd: RawFd, ud: u64, res: i32, flags: u32) -> bool {
        let Some(e) = st.table.get_mut(fd) else {
            return false;
        };
        let (interest, mode) = (e.interest, e.mode);
        let (queue, rearm) = e.edge_completion(res, flags);
        if rearm {
            Self::rearm(st, fd, interest, mode, ud);
        }
        if queue {
            st.ready.push_back(fd);
        }
        queue
    }

    /// Queues the re-arm of a poll that just completed (or, for [`Mode::Edge`], ended), for
    /// the next wait to submit: in the SQ if it has room, else in [`State::rearm`] (never
    /// submitted from inside a reap).
    fn rearm(st: &mut State, fd: RawFd, interest: Interest, mode: Mode, ud: u64) {
        if !st.ring.try_push(&poll_for(fd, interest, mode, ud)) {
            st.rearm.push((fd, interest, ud));
            st.attention = true;
        }
    }

    /// Pushes the re-arms left in [`State::rearm`] whose registration is still current
    /// (submitting whenever the SQ fills: this runs at the start of a wait). After an error
    /// the ones not pushed yet stay for the next wait (dropping them would leave their
    /// registrations marked armed with no poll), as do re-arms queued meanwhile (a
    /// submission that moved completions aside).
    fn flush_rearm(&self, st: &mut State) -> io::Result<()> {
        self.flush_queued(
            st,
            |st| &mut st.rearm,
            |this, st, &(fd, interest, ud)| {
                let current = match decode(ud) {
                    Ud::User { gen, .. } => st
                        .table
                        .get(fd)
                        .filter(|e| e.gen == gen && e.armed)
                        .map(|e| e.mode),
                    _ => None,
                };
                match current {
                    Some(mode) => this.push(st, &poll_for(fd, interest, mode, ud)),
                    None => Ok(()),
                }
            },
        )
    }

    /// Pushes the requests left in [`State::deferred`], in order (submitting whenever the SQ
    /// fills: this runs at the start of a wait). After an error the ones not pushed yet stay,
    /// in order, for the next wait.
    fn flush_deferred(&self, st: &mut State) -> io::Result<()> {
        self.flush_queued(
            st,
            |st| &mut st.deferred,
            |this, st, sqe| this.push(st, sqe),
        )
    }

    /// Runs `push` on each item of the list `list` picks out of the state ([`State::rearm`]
    /// or [`State::deferred`]), in order, until one fails; the items not done stay, ahead of
    /// any that the pushes' submissions queued meanwhile. The list's memory is kept: no
    /// allocation per wait in steady state.
    fn flush_queued<T>(
        &self,
        st: &mut State,
        list: fn(&mut State) -> &mut Vec<T>,
        mut push: impl FnMut(&Self, &mut State, &T) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut items = mem::take(list(st));
        let mut res = Ok(());
        let mut done = 0;
        for item in &items {
            res = push(self, st, item);
            if res.is_err() {
                break;
            }
            done += 1;
        }
        items.drain(..done);
        items.append(list(st));
        *list(st) = items;
        res
    }

    /// The notifier's request, counted in [`State::notify_seq`] (the caller queues it): a
    /// multishot `IORING_POLL_ADD` of its eventfd, which
    /// posts a completion for every write (the eventfd wakes its waiters on each write, and
    /// the counter, never read, keeps it readable) and stays armed. A wake-up then costs
    /// neither a `read(2)` nor a re-arm in the next wait: only the flag is re-opened
    /// ([`Receiver::reset_edge`]): a notify that races with that either found the flag set
    /// (the wait returns anyway) or writes, which posts a new completion. This is mio's
    /// EPOLLET waker on io_uring. Without multishot poll ([`State::notify_by_poll`]), a
    /// single-shot poll, drained and re-armed after each wake-up.
    fn notify_sqe(&self, st: &mut State) -> IoUringSqe {
        st.notify_seq = st.notify_seq.wrapping_add(1);
        let fd = self.wake_fd();
        if st.notify_by_poll {
            return poll_add(fd, Interest::READABLE, NOTIFY_POLL_UD);
        }
        IoUringSqe {
            len: IORING_POLL_ADD_MULTI,
            ..poll_add(fd, Interest::READABLE, NOTIFY_MULTI_UD)
        }
    }

    fn wake_fd(&self) -> RawFd {
        self.wake.fd().expect("eventfd notifier")
    }

    /// How many registrations the table holds (for leak tests).
    #[cfg(test)]
    fn registrations(&self) -> usize {
        self.lock().table.len()
    }
}

/// The calling thread's id, without the `Arc` clone of `thread::current()`.
fn current_thread() -> ThreadId {
    thread_local!(static ME: ThreadId = std::thread::current().id());
    ME.try_with(|id| *id)
        .unwrap_or_else(|_| std::thread::current().id())
}

/// The poll request of a registration in `mode`: multishot for [`Mode::Edge`], else
/// single-shot.
fn poll_for(fd: RawFd, interest: Interest, mode: Mode, user_data: u64) -> IoUringSqe {
    let sqe = poll_add(fd, interest, user_data);
    if mode == Mode::Edge {
        IoUringSqe {
            len: IORING_POLL_ADD_MULTI,
            ..sqe
        }
    } else {
        sqe
    }
}

/// A single-shot `IORING_OP_POLL_ADD` for `interest`.
fn poll_add(fd: RawFd, interest: Interest, user_data: u64) -> IoUringSqe {
    let mask = poll_flags(interest);
    IoUringSqe {
        opcode: IORING_OP_POLL_ADD,
        fd,
        // poll32_events is "word-reversed for BE" (the kernel swaps the halves back), which
        // also keeps pre-5.9 kernels, reading a u16 `poll_events`, working.
        op_flags: if cfg!(target_endian = "big") {
            mask.rotate_left(16)
        } else {
            mask
        },
        user_data,
        ..IoUringSqe::default()
    }
}

/// A request (`opcode`: a poll or timeout removal, a cancel) aimed at the request tagged
/// `target`, tagged `user_data` itself.
fn aimed_at(opcode: u8, target: u64, user_data: u64) -> IoUringSqe {
    IoUringSqe {
        opcode,
        fd: -1,
        addr: target,
        user_data,
        ..IoUringSqe::default()
    }
}

/// An `IORING_OP_POLL_REMOVE` of the poll tagged `target`.
fn poll_remove(target: u64) -> IoUringSqe {
    aimed_at(IORING_OP_POLL_REMOVE, target, remove_ud(target))
}

/// An `IORING_OP_ASYNC_CANCEL` of the request tagged `target` (its completion ignored).
fn async_cancel(target: u64) -> IoUringSqe {
    aimed_at(IORING_OP_ASYNC_CANCEL, target, INTERNAL_UD)
}

fn poll_flags(interest: Interest) -> u32 {
    let mut f = 0;
    if interest.contains(Interest::READABLE) {
        f |= libc::POLLIN | libc::POLLRDHUP;
    }
    if interest.contains(Interest::WRITABLE) {
        f |= libc::POLLOUT;
    }
    if interest.contains(Interest::PRIORITY) {
        f |= libc::POLLPRI;
    }
    f.unsigned_abs().into()
}

fn ready_from(mask: u32) -> Ready {
    let has = |flag: libc::c_short| mask & u32::from(flag.unsigned_abs()) != 0;
    let mut r = Ready::empty();
    if has(libc::POLLIN) {
        r |= Ready::READABLE;
    }
    if has(libc::POLLOUT) {
        r |= Ready::WRITABLE;
    }
    if has(libc::POLLPRI) {
        r |= Ready::PRIORITY;
    }
    if has(libc::POLLERR) || has(libc::POLLNVAL) {
        r |= Ready::ERROR;
    }
    if has(libc::POLLHUP) || has(libc::POLLRDHUP) {
        r |= Ready::HUP;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// io_uring cannot be used here (`ENOSYS`, `EPERM`, `Unsupported`: see tests/util's
    /// `uring_unavailable`) and `IOLOOP_REQUIRE_URING=1` is not set: the tests that need a
    /// ring return without running.
    fn no_ring() -> bool {
        static NO_RING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let no = *NO_RING.get_or_init(|| {
            matches!(
                Uring::new().map_err(|e| e.kind()),
                Err(io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied)
            )
        });
        no && std::env::var_os("IOLOOP_REQUIRE_URING").map_or(true, |v| v != "1")
    }

    #[test]
    fn user_data_round_trips() {
        match decode(user_ud(7, 0xdead_beef)) {
            Ud::User { fd, gen } => assert_eq!((fd, gen), (7, 0xdead_beef)),
            _ => panic!("not a user completion"),
        }
        match decode(user_ud(i32::MAX, u32::MAX)) {
            Ud::User { fd, gen } => assert_eq!((fd, gen), (i32::MAX, u32::MAX)),
            _ => panic!("not a user completion"),
        }
        assert!(matches!(
            decode(NOTIFY_MULTI_UD),
            Ud::Notify { multi: true }
        ));
        assert!(matches!(
            decode(NOTIFY_POLL_UD),
            Ud::Notify { multi: false }
        ));
        assert!(matches!(decode(INTERNAL_UD), Ud::Internal));
        assert!(matches!(
            decode(u64::from(TIMEOUT_LOW) | 5 << 32),
            Ud::Timeout
        ));
        // A removal names its target; an fd too high to mark is not retried.
        let target = user_ud(7, 0xdead_beef);
        assert!(matches!(decode(remove_ud(target)), Ud::Remove { target: t } if t == target));
        assert_eq!(remove_ud(user_ud(i32::MAX, 1)), INTERNAL_UD);
        assert_eq!(remove_ud(user_ud(i32::MAX - 4, 1)), INTERNAL_UD);
        assert!(matches!(
            decode(remove_ud(user_ud(i32::MAX - 5, 1))),
            Ud::Remove { .. }
        ));
        // A recovery's cancel of the notifier's poll keeps its tag.
        assert!(matches!(
            decode(notify_cancel_ud(0xdead_beef)),
            Ud::NotifyCancel { seq: 0xdead_beef }
        ));
    }

    /// A level-triggered batch larger than the SQ: the re-arms of the fds reported in one wait
    /// must not be submitted before the caller has read them, or the next wait reports them
    /// again with nothing to read.
    #[test]
    fn big_level_batch_reports_no_stale_events() {
        level_batches(SQ_ENTRIES as usize * 2, 3, |_, _| {});
    }

    /// As above, with an fd registered by the first handler of the batch (an accept, say)
    /// while the SQ is full of the batch's re-arms: the submission that makes room for it
    /// must not make those re-arms report before the other handlers have read.
    #[test]
    fn register_in_a_big_level_batch_reports_no_stale_events() {
        let extra: Vec<(UnixStream, UnixStream)> =
            (0..3).map(|_| UnixStream::pair().unwrap()).collect();
        level_batches(SQ_ENTRIES as usize * 3 / 2, extra.len(), |p, round| {
            let (x, _) = &extra[round];
            let token = 10_000 + round as u64;
            p.register(x.as_raw_fd(), token, Interest::READABLE, Mode::Level)
                .unwrap();
        });
    }

    /// `rounds` rounds of a level-triggered batch of `n` pairs: every fd written, then
    /// reported (a report with nothing to read fails) and read, and nothing reported once
    /// all are read; `first(poller, round)` runs when the round's first report is handled.
    fn level_batches(n: usize, rounds: usize, mut first: impl FnMut(&Uring, usize)) {
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..n).map(|_| UnixStream::pair().unwrap()).collect();
        for (i, (_, b)) in pairs.iter().enumerate() {
            b.set_nonblocking(true).unwrap();
            p.register(b.as_raw_fd(), i as u64, Interest::READABLE, Mode::Level)
                .unwrap();
        }
        let mut events = Events::with_capacity(n + 8);
        for round in 0..rounds {
            for (a, _) in &pairs {
                (&*a).write_all(b"x").unwrap();
            }
            let mut left = n;
            let mut handled = false;
            while left > 0 {
                p.wait(&mut events, Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                for ev in events.iter() {
                    if !handled {
                        handled = true;
                        first(&p, round);
                    }
                    let mut buf = [0u8; 1];
                    let got = (&pairs[ev.token() as usize].1).read(&mut buf);
                    assert_eq!(got.ok(), Some(1), "stale event for token {}", ev.token());
                    left -= 1;
                }
            }
            p.wait(&mut events, Some(std::time::Duration::ZERO))
                .unwrap();
            assert_eq!(events.len(), 0, "events after every fd was drained");
        }
    }

    #[test]
    fn table_does_not_leak() {
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        let (a, _b) = UnixStream::pair().unwrap();
        for i in 0..5000 {
            p.register(a.as_raw_fd(), i, Interest::READABLE, Mode::Level)
                .unwrap();
            p.deregister(a.as_raw_fd()).unwrap();
        }
        assert_eq!(p.registrations(), 0);
        let mut events = Events::with_capacity(8);
        assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
        assert!(p.lock().stash.is_empty());
    }

    /// One wait round's `notified`, with at most `timeout` of blocking.
    fn notified(p: &Uring, timeout: Duration) -> bool {
        let mut ws = p.waiter.lock().unwrap();
        let mut events = Events::with_capacity(8);
        let round = p.wait_once(&mut ws, &mut events, Some(timeout)).unwrap();
        assert_eq!(events.len(), 0);
        round.notified
    }

    /// 100 000 notifies before a wait are one wake-up, consumed by it (nothing left to wake
    /// the next wait), and a notify after that wake-up wakes again; with the notifier's READ
    /// and with the poll fallback.
    #[test]
    fn notifies_coalesce_and_wake_again() {
        if no_ring() {
            return;
        }
        for by_poll in [false, true] {
            let p = Uring::build(by_poll).expect("io_uring_setup");
            let n = p.notifier();
            for _round in 0..3 {
                for _ in 0..100_000 {
                    n.notify().unwrap();
                }
                assert!(notified(&p, Duration::from_secs(5)), "by_poll {by_poll}");
                // Consumed: the next waits are not woken.
                assert!(!notified(&p, Duration::ZERO), "by_poll {by_poll}");
                assert!(!notified(&p, Duration::from_millis(1)), "by_poll {by_poll}");
                n.notify().unwrap();
                assert!(notified(&p, Duration::from_secs(5)), "by_poll {by_poll}");
            }
            // The mode in use: multishot poll on this kernel (Linux 5.13+).
            assert_eq!(p.lock().notify_by_poll, by_poll);
        }
    }

    /// The notifier's multishot poll is submitted by the first waiting thread; once that thread
    /// has exited, the kernel finishes its completions in a worker, and wake-ups still arrive.
    #[test]
    fn notify_after_the_first_waiting_thread_exited() {
        if no_ring() {
            return;
        }
        let p = std::sync::Arc::new(Uring::new().expect("io_uring_setup"));
        let p2 = p.clone();
        std::thread::spawn(move || assert!(!notified(&p2, Duration::ZERO)))
            .join()
            .unwrap();
        for _ in 0..3 {
            p.notify().unwrap();
            assert!(notified(&p, Duration::from_secs(5)));
            assert!(!notified(&p, Duration::ZERO));
        }
    }

    /// `is_stale`: a live registration is not (and still reports readiness afterwards, in
    /// both modes, with the completions of other fds that arrived during the probe kept); a
    /// number whose file was closed and replaced by another (dup2 over it: no window in
    /// which a parallel test could take the number) is.
    #[test]
    fn is_stale_tells_a_reused_number_from_a_live_one() {
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        let mut events = Events::with_capacity(8);
        let wait = |p: &Uring, events: &mut Events, t: Duration| -> Vec<(u64, Ready)> {
            p.wait(events, Some(t)).unwrap();
            events.iter().map(|e| (e.token(), e.ready())).collect()
        };
        for mode in [Mode::Level, Mode::Oneshot, Mode::Edge] {
            let (a, mut a_peer) = UnixStream::pair().unwrap();
            let (c, mut c_peer) = UnixStream::pair().unwrap();
            let fd = a.as_raw_fd();
            p.register(fd, 1, Interest::READABLE, mode).unwrap();
            assert!(wait(&p, &mut events, Duration::ZERO).is_empty());
            // c's poll is queued, submitted by the probe, and completes during it.
            c_peer.write_all(b"c").unwrap();
            p.register(c.as_raw_fd(), 2, Interest::READABLE, Mode::Oneshot)
                .unwrap();
            for _ in 0..3 {
                assert!(!p.is_stale(fd).unwrap(), "{mode:?}");
            }
            assert_ne!(p.lock().probe_flags, 0, "CANCEL_FD is Linux 5.19+");
            assert_eq!(
                wait(&p, &mut events, Duration::from_secs(5)),
                [(2, Ready::READABLE)]
            );
            a_peer.write_all(b"x").unwrap();
            assert_eq!(
                wait(&p, &mut events, Duration::from_secs(5)),
                [(1, Ready::READABLE)],
                "{mode:?}"
            );
            // Reported and not yet re-armed (Oneshot) or re-armed but not submitted (Level):
            // no poll in the kernel to ask, so not stale. (Edge: the multishot poll is
            // still in the kernel, found live, and re-armed.)
            assert!(!p.is_stale(fd).unwrap(), "{mode:?}");
            p.deregister(c.as_raw_fd()).unwrap();
            p.deregister(fd).unwrap();
        }

        for mode in [Mode::Level, Mode::Edge] {
            let (a, _a_peer) = UnixStream::pair().unwrap();
            let (b, mut b_peer) = UnixStream::pair().unwrap();
            let n = std::os::fd::IntoRawFd::into_raw_fd(a);
            p.register(n, 1, Interest::READABLE, mode).unwrap();
            assert!(wait(&p, &mut events, Duration::ZERO).is_empty());
            assert!(!p.is_stale(n).unwrap(), "{mode:?}");
            assert!(wait(&p, &mut events, Duration::ZERO).is_empty());
            // SAFETY: dup2 takes only integers; `n` is ours (from into_raw_fd), and is closed
            // below.
            assert_eq!(unsafe { libc::dup2(b.as_raw_fd(), n) }, n);
            assert!(p.is_stale(n).unwrap(), "{mode:?}");
            // Still stale after asking (nothing was cancelled), and the old poll reports
            // nothing of the new file.
            assert!(p.is_stale(n).unwrap(), "{mode:?}");
            b_peer.write_all(b"x").unwrap();
            assert!(wait(&p, &mut events, Duration::ZERO).is_empty());
            p.deregister(n).unwrap();
            assert!(!p.is_stale(n).unwrap(), "not registered");
            // SAFETY: `n` is ours (the dup2 above) and nothing else uses it.
            unsafe { libc::close(n) };
        }
        assert_eq!(
            p.is_stale(-1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    /// The events of one non-blocking wait, as `(token, ready)`.
    fn poll_now(p: &Uring, events: &mut Events) -> Vec<(u64, Ready)> {
        p.wait(events, Some(Duration::ZERO)).unwrap();
        events.iter().map(|e| (e.token(), e.ready())).collect()
    }

    fn nonblocking_pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// `supports(Edge)` is decided in `new` (this kernel has multishot poll), and is `false`
    /// where the multishot probe is skipped as on a kernel without it.
    #[test]
    fn edge_support_is_decided_in_new() {
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        assert!(p.supports(Mode::Edge), "multishot poll is Linux 5.13+");
        assert!(p.lock().stash.is_empty(), "the probe left nothing behind");
        let mut events = Events::with_capacity(8);
        assert!(poll_now(&p, &mut events).is_empty());
        let old = Uring::build(true).expect("io_uring_setup");
        assert!(!old.supports(Mode::Edge));
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(
            old.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Edge)
                .unwrap_err()
                .kind(),
            io::ErrorKind::Unsupported
        );
    }

    /// A multishot poll the kernel ends (here: cancelled, as the kernel does on its own, e.g.
    /// when it cannot post a completion) is re-armed with the same `user_data`: nothing is
    /// reported for the end itself; an fd still ready then is reported once by the new
    /// poll (spurious, never lost); and new data after that is reported once, as before.
    #[test]
    fn edge_multishot_ended_by_the_kernel_is_rearmed() {
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        let mut events = Events::with_capacity(8);
        let (a, mut b) = nonblocking_pair();
        let fd = a.as_raw_fd();
        p.register(fd, 1, Interest::READABLE, Mode::Edge).unwrap();
        assert!(poll_now(&p, &mut events).is_empty());
        let gen = p.lock().table.get(fd).unwrap().gen;
        let ud = user_ud(fd, gen);
        for ready_at_end in [false, true] {
            if ready_at_end {
                b.write_all(b"x").unwrap();
                assert_eq!(poll_now(&p, &mut events), [(1, Ready::READABLE)]);
                assert!(poll_now(&p, &mut events).is_empty());
            }
            let cancel = aimed_at(IORING_OP_ASYNC_CANCEL, ud, PROBE_UD);
            let found = p.probe(&mut p.lock(), &cancel).unwrap();
            assert_eq!(found, 0, "the multishot poll was in flight");
            let reported: Vec<_> = (0..4).flat_map(|_| poll_now(&p, &mut events)).collect();
            if ready_at_end {
                assert_eq!(reported, [(1, Ready::READABLE)]);
            } else {
                assert!(reported.is_empty(), "{reported:?}");
            }
            let e = p.lock().table.get(fd).copied().unwrap();
            assert!(e.armed && e.gen == gen, "re-armed under the same user_data");
            // The new request reports new data, once per write.
            for _ in 0..2 {
                b.write_all(b"y").unwrap();
                assert_eq!(poll_now(&p, &mut events), [(1, Ready::READABLE)]);
                assert!(poll_now(&p, &mut events).is_empty());
            }
            let mut buf = [0u8; 16];
            while (&a).read(&mut buf).is_ok() {}
        }
        // A final completion that carries readiness (what the kernel posts when it ends a
        // multishot poll because it could not post a CQE with `F_MORE`): reported, and the
        // poll re-armed. Simulated by taking the real poll's end off the CQ and handing over
        // a final POLLIN instead.
        let cancel = async_cancel(ud);
        {
            let mut st = p.lock();
            p.push(&mut st, &cancel).unwrap();
            let mut ended = false;
            while !ended {
                retry(|| p.enter(st.ring.sq_pending(), 1, IORING_ENTER_GETEVENTS, None)).unwrap();
                while let Some((cqe_ud, res, flags)) = st.ring.pop() {
                    if cqe_ud == ud {
                        assert_eq!((res, flags & IORING_CQE_F_MORE), (-libc::ECANCELED, 0));
                        ended = true;
                    }
                }
            }
            let mask = libc::POLLIN.unsigned_abs().into();
            assert!(Uring::edge_completion(&mut st, fd, ud, mask, 0));
        }
        assert_eq!(poll_now(&p, &mut events), [(1, Ready::READABLE)]);
        assert!(poll_now(&p, &mut events).is_empty());
        b.write_all(b"z").unwrap();
        assert_eq!(poll_now(&p, &mut events), [(1, Ready::READABLE)]);
        assert!(poll_now(&p, &mut events).is_empty());
        p.deregister(fd).unwrap();
        assert!(poll_now(&p, &mut events).is_empty());
    }

    /// `modify` to Edge reports the fd once if it is ready, with the new token and interest;
    /// the old multishot poll's completions (and its end) are dropped; switching to Level and
    /// back works.
    #[test]
    fn edge_reports_once_after_modify() {
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        let mut events = Events::with_capacity(8);
        let (a, mut b) = nonblocking_pair();
        let fd = a.as_raw_fd();
        p.register(fd, 1, Interest::READABLE, Mode::Edge).unwrap();
        assert!(poll_now(&p, &mut events).is_empty());
        b.write_all(b"x").unwrap();
        assert_eq!(poll_now(&p, &mut events), [(1, Ready::READABLE)]);
        assert!(poll_now(&p, &mut events).is_empty());
        // Unread data: the modified registration reports it once.
        p.modify(fd, 2, Interest::READABLE, Mode::Edge).unwrap();
        assert_eq!(poll_now(&p, &mut events), [(2, Ready::READABLE)]);
        assert!(poll_now(&p, &mut events).is_empty());
        p.modify(fd, 3, Interest::READABLE | Interest::WRITABLE, Mode::Edge)
            .unwrap();
        assert_eq!(
            poll_now(&p, &mut events),
            [(3, Ready::READABLE | Ready::WRITABLE)]
        );
        assert!(poll_now(&p, &mut events).is_empty());
        // A wake-up of the old poll queued but not yet reported is not reported under the
        // new registration (which reports the current state instead, once).
        b.write_all(b"y").unwrap();
        p.modify(fd, 4, Interest::READABLE, Mode::Edge).unwrap();
        assert_eq!(poll_now(&p, &mut events), [(4, Ready::READABLE)]);
        assert!(poll_now(&p, &mut events).is_empty());
        // To Level: every wait; back to Edge: once.
        p.modify(fd, 5, Interest::READABLE, Mode::Level).unwrap();
        for _ in 0..3 {
            assert_eq!(poll_now(&p, &mut events), [(5, Ready::READABLE)]);
        }
        p.modify(fd, 6, Interest::READABLE, Mode::Edge).unwrap();
        assert_eq!(poll_now(&p, &mut events), [(6, Ready::READABLE)]);
        assert!(poll_now(&p, &mut events).is_empty());
        // Drained: nothing; new data: once.
        let mut buf = [0u8; 16];
        while (&a).read(&mut buf).is_ok() {}
        assert!(poll_now(&p, &mut events).is_empty());
        b.write_all(b"z").unwrap();
        assert_eq!(poll_now(&p, &mut events), [(6, Ready::READABLE)]);
        assert!(poll_now(&p, &mut events).is_empty());
        assert!(!p.is_stale(fd).unwrap());
        p.deregister(fd).unwrap();
        assert!(p.lock().ready.is_empty());
    }

    /// Several completions of one Edge fd before a wait (several wake-ups, some of them
    /// already taken off the CQ by another caller) are one event in that wait, with the
    /// readiness of all of them; with a small events buffer, each fd is reported once
    /// across the waits that drain them.
    #[test]
    fn edge_no_duplicate_events_for_one_fd_in_one_wait() {
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        let mut events = Events::with_capacity(8);
        let (a, mut b) = nonblocking_pair();
        let fd = a.as_raw_fd();
        p.register(fd, 1, Interest::READABLE | Interest::WRITABLE, Mode::Edge)
            .unwrap();
        assert_eq!(poll_now(&p, &mut events), [(1, Ready::WRITABLE)]);
        assert!(poll_now(&p, &mut events).is_empty());
        b.write_all(b"1").unwrap();
        // Taken off the CQ as register/modify/deregister of another thread would.
        p.stash_cq(&mut p.lock(), &mut None).unwrap();
        assert_eq!(p.lock().ready.len(), 1);
        b.write_all(b"2").unwrap();
        b.write_all(b"3").unwrap();
        // Each write woke the socket, and this thread (the poll's submitter) posted the
        // completion on its way back from `write`.
        assert!(p.lock().ring.cq_len() >= 2, "one completion per wake-up");
        let got = poll_now(&p, &mut events);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, 1);
        assert!(got[0].1.contains(Ready::READABLE));
        assert!(poll_now(&p, &mut events).is_empty());

        // Three fds, two wake-ups each, a buffer of two events.
        let pairs: Vec<_> = (0..3).map(|_| nonblocking_pair()).collect();
        for (i, (a, _)) in pairs.iter().enumerate() {
            p.register(a.as_raw_fd(), 10 + i as u64, Interest::READABLE, Mode::Edge)
                .unwrap();
        }
        assert!(poll_now(&p, &mut events).is_empty());
        for _ in 0..2 {
            for (_, b) in &pairs {
                (&*b).write_all(b"x").unwrap();
            }
        }
        let mut small = Events::with_capacity(2);
        let mut tokens: Vec<u64> = Vec::new();
        for _ in 0..4 {
            let got = poll_now(&p, &mut small);
            assert!(got.len() <= 2);
            assert!(got.iter().all(|&(_, r)| r == Ready::READABLE));
            tokens.extend(got.iter().map(|&(t, _)| t));
        }
        tokens.sort_unstable();
        assert_eq!(tokens, [10, 11, 12], "each fd once");
        for (a, _) in &pairs {
            p.deregister(a.as_raw_fd()).unwrap();
        }
        p.deregister(fd).unwrap();
        let st = p.lock();
        assert!(st.ready.is_empty() && st.stash.is_empty());
    }

    /// Owned mode on this kernel (6.1+) is the kernel's: the ring is disabled until the
    /// first call claims it (a raw `io_uring_enter` fails with `EBADFD`), then
    /// `SINGLE_ISSUER` makes a raw `io_uring_enter` from another thread fail with `EEXIST`
    /// (which `claim` turns into `Unsupported` before it gets there).
    #[test]
    fn owned_ring_is_single_issuer_in_the_kernel() {
        if no_ring() {
            return;
        }
        let p = Uring::new_owned().expect("io_uring_setup");
        assert!(
            p.owner.is_some(),
            "SINGLE_ISSUER | DEFER_TASKRUN is Linux 6.1+"
        );
        assert!(p.supports(Mode::Edge));
        let raw = |p: &Uring| p.enter(0, 0, IORING_ENTER_GETEVENTS, None).map(|_| ());
        assert_eq!(raw(&p).unwrap_err().raw_os_error(), Some(libc::EBADFD));
        let mut events = Events::with_capacity(8);
        assert!(poll_now(&p, &mut events).is_empty());
        raw(&p).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(raw(&p).unwrap_err().raw_os_error(), Some(libc::EEXIST));
                assert_eq!(p.claim().unwrap_err().kind(), io::ErrorKind::Unsupported);
            });
        });
        // Notifies coalesce and wake again, as with `new`.
        let n = p.notifier();
        for _round in 0..3 {
            for _ in 0..1000 {
                n.notify().unwrap();
            }
            assert!(notified(&p, Duration::from_secs(5)));
            assert!(!notified(&p, Duration::ZERO));
            n.notify().unwrap();
            assert!(notified(&p, Duration::from_secs(5)));
        }
    }

    /// Where the kernel refuses the owned-mode flags (forced here), `new_owned` builds what
    /// `new` does: probed multishot poll, no thread restriction (registered on one thread,
    /// waited and probed on another), notifier working.
    #[test]
    fn owned_fallback_builds_a_working_poller() {
        if no_ring() {
            return;
        }
        let p = Uring::build_owned(true).expect("io_uring_setup");
        assert!(p.owner.is_none());
        assert!(p.supports(Mode::Edge), "probed, as in new");
        let (a, mut b) = nonblocking_pair();
        let fd = a.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(|| p.register(fd, 1, Interest::READABLE, Mode::Edge).unwrap());
        });
        let mut events = Events::with_capacity(8);
        assert!(poll_now(&p, &mut events).is_empty());
        b.write_all(b"x").unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut events = Events::with_capacity(8);
                p.wait(&mut events, Some(Duration::from_secs(5))).unwrap();
                let got: Vec<_> = events.iter().map(|e| (e.token(), e.ready())).collect();
                assert_eq!(got, [(1, Ready::READABLE)]);
                // Drained first: asking re-arms a live Edge poll, which reports a ready fd.
                let mut buf = [0u8; 8];
                while (&a).read(&mut buf).is_ok() {}
                assert!(!p.is_stale(fd).unwrap());
            });
        });
        p.notify().unwrap();
        assert!(notified(&p, Duration::from_secs(5)));
        p.deregister(fd).unwrap();
        assert!(poll_now(&p, &mut events).is_empty());
    }

    /// The IORING_OP_TIMEOUT path that kernels without EXT_ARG take.
    #[test]
    fn timeout_fallback_never_early() {
        if no_ring() {
            return;
        }
        let mut p = Uring::new().expect("io_uring_setup");
        p.ext_arg = false;
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut events = Events::with_capacity(8);
        for _ in 0..3 {
            let t = Duration::from_millis(20);
            let start = std::time::Instant::now();
            assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
            assert!(start.elapsed() >= t);
        }
        p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Oneshot)
            .unwrap();
        b.write_all(b"x").unwrap();
        assert_eq!(
            p.wait(&mut events, Some(Duration::from_secs(5))).unwrap(),
            1
        );
        let t = Duration::from_millis(10);
        let start = std::time::Instant::now();
        assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
        assert!(start.elapsed() >= t);
    }

    /// Without EXT_ARG, a timed wait that ends early (on an event) leaves its TIMEOUT
    /// request to cancel, and the next wait's first round ends on that removal's
    /// completion: the rounds after keep the new wait's own TIMEOUT rather than cancel and
    /// submit one each time, which would end every round at once (a wait spinning through
    /// its whole timeout). Counted in rounds, for a wait with nothing to report.
    #[test]
    fn timeout_fallback_waits_without_spinning() {
        if no_ring() {
            return;
        }
        let mut p = Uring::new().expect("io_uring_setup");
        p.ext_arg = false;
        let (a, mut b) = UnixStream::pair().unwrap();
        p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Oneshot)
            .unwrap();
        let mut events = Events::with_capacity(8);
        for _ in 0..3 {
            b.write_all(b"x").unwrap();
            assert_eq!(
                p.wait(&mut events, Some(Duration::from_secs(5))).unwrap(),
                1
            );
            (&a).read_exact(&mut [0u8; 1]).unwrap();
            p.modify(a.as_raw_fd(), 1, Interest::READABLE, Mode::Oneshot)
                .unwrap();
            let before = p.waiter.lock().unwrap().rounds;
            let t = Duration::from_millis(50);
            let start = std::time::Instant::now();
            assert_eq!(p.wait(&mut events, Some(t)).unwrap(), 0);
            assert!(start.elapsed() >= t);
            let rounds = p.waiter.lock().unwrap().rounds - before;
            assert!(rounds <= 4, "an idle wait took {rounds} rounds");
        }
    }

    /// A completion that arrives between a waiter's last look at the CQ and its
    /// `io_uring_enter` and is moved to the stash by another thread's `is_stale` still wakes
    /// the waiter, also when the probe's own `io_uring_enter` reaps the NOP queued for that
    /// wake-up and finds nothing to keep (a stale number: `ENOENT`). Played on one thread,
    /// in the order of `wait_once`'s steps.
    #[test]
    fn a_probe_leaves_the_waiter_its_wake_up() {
        use std::os::fd::IntoRawFd;
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        let (a, b) = UnixStream::pair().unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)
            .unwrap();
        let cfd = c.into_raw_fd();
        p.register(cfd, 2, Interest::READABLE, Mode::Level).unwrap();
        let mut events = Events::with_capacity(8);
        assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
        let other = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: both fds are open; `cfd` (whose socket this closes) is owned by this test.
        assert_eq!(unsafe { libc::dup2(other.as_raw_fd(), cfd) }, cfd);
        // The waiter's first half: nothing to report, so it will block.
        {
            let mut st = p.lock();
            assert!(st.must_block(None));
            st.waiting = true;
        }
        (&b).write_all(b"x").unwrap();
        assert!(
            p.is_stale(cfd).unwrap(),
            "the number is open on another file"
        );
        // The waiter's second half: the probe left a completion in the CQ for it, so this
        // returns at once (a lost wake-up would block until the timeout).
        p.enter_wait(0, true, Some(Duration::from_secs(5))).unwrap();
        let mut st = p.lock();
        st.waiting = false;
        assert!(
            st.ring.cq_len() > 0,
            "the waiter was left nothing to wake it"
        );
        assert_eq!(st.stash.len(), 1);
        drop(st);
        assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 1);
        assert_eq!(events.iter().next().unwrap().token(), 1);
        p.deregister(cfd).unwrap();
        // SAFETY: `cfd` is open (the /dev/null duplicate) and owned by this test.
        unsafe { libc::close(cfd) };
    }

    /// How the tests below make the poller recover from dropped completions: by calling
    /// [`Uring::recover`] itself, or through a wait or an `is_stale` probe whose
    /// `io_uring_enter` reports `EBADR` (injected: the kernel drops a completion only when
    /// it cannot allocate memory).
    #[derive(Clone, Copy, Debug)]
    enum Recovery {
        Direct,
        WaitEbadr,
        ProbeEbadr,
        /// The kernel's drop count moves (no `EBADR`): a zero-timeout wait recovers.
        DropCount,
    }

    /// One `io_uring_enter` that submits what is queued and waits for a completion for at
    /// most `t` (`IORING_ENTER_EXT_ARG`).
    fn enter_timed(p: &Uring, st: &State, t: Duration) {
        let ts = kernel_timespec(t);
        let arg = IoUringGeteventsArg {
            sigmask: 0,
            sigmask_sz: 0,
            pad: 0,
            ts: (&ts as *const KernelTimespec) as u64,
        };
        let flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
        match p.enter(st.ring.sq_pending(), 1, flags, Some(&arg)) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => panic!("io_uring_enter: {e}"),
        }
    }

    /// Kills the kernel's polls of every armed registration (and of the notifier, if
    /// `notifier`) behind the table's back, and throws their completions away, as the kernel
    /// does when it drops them: an `ASYNC_CANCEL` of each, then every completion is taken
    /// off the CQ and discarded until each of those polls has posted its end (and each
    /// cancel its result).
    fn lose_completions(p: &Uring, notifier: bool) {
        let mut st = p.lock();
        assert!(p.ext_arg, "EXT_ARG is Linux 5.11+");
        assert!(st.stash.is_empty() && st.ready.is_empty());
        let mut polls: std::collections::HashSet<u64> = st
            .table
            .iter()
            .filter(|(_, e)| e.armed)
            .map(|(fd, e)| user_ud(fd, e.gen))
            .collect();
        if notifier {
            polls.insert(NOTIFY_MULTI_UD);
        }
        for &ud in &polls {
            p.push(&mut st, &aimed_at(IORING_OP_ASYNC_CANCEL, ud, PROBE_UD))
                .unwrap();
        }
        let mut cancels = polls.len();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cancels > 0 || !polls.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "polls not ended: {polls:?}"
            );
            enter_timed(p, &st, Duration::from_millis(100));
            while let Some((ud, _, flags)) = st.ring.pop() {
                if ud == PROBE_UD {
                    cancels -= 1;
                } else if flags & IORING_CQE_F_MORE == 0 {
                    polls.remove(&ud);
                }
            }
        }
        assert!(!st.ring.overflowed());
    }

    /// The poll requests alive in the kernel (`PollList` of the ring's fdinfo), if the kernel
    /// lists them.
    fn live_polls(p: &Uring) -> Option<usize> {
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", p.ring_fd.as_raw_fd())).ok()?;
        let (_, list) = info.split_once("PollList:\n")?;
        Some(
            list.lines()
                .take_while(|l| l.starts_with(' ') || l.starts_with('\t'))
                .filter(|l| l.contains("op=6,"))
                .count(),
        )
    }

    /// Waits until `want` (tokens) have all been reported, for at most 5 s; returns every
    /// token reported meanwhile. Each reported fd is read dry (`pairs[token].0`).
    fn collect(
        p: &Uring,
        events: &mut Events,
        pairs: &[(UnixStream, UnixStream)],
        want: &std::collections::BTreeSet<u64>,
    ) -> std::collections::BTreeSet<u64> {
        let mut got = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !got.is_superset(want) {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            p.wait(events, Some(deadline - now)).unwrap();
            for ev in events.iter() {
                got.insert(ev.token());
                let mut buf = [0u8; 16];
                while (&pairs[ev.token() as usize].0).read(&mut buf).is_ok() {}
            }
        }
        got
    }

    /// A `notify` from another thread, made once this thread's wait is about to block in
    /// `io_uring_enter` (or blocks there), wakes it within 5 s.
    fn notify_wakes_blocked_wait(p: &Uring) -> bool {
        std::thread::scope(|s| {
            s.spawn(|| {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !p.lock().waiting && std::time::Instant::now() < deadline {
                    std::thread::yield_now();
                }
                p.notify().unwrap();
            });
            notified(p, Duration::from_secs(5))
        })
    }

    /// Completions the kernel dropped (`EBADR`) are recovered: with the kernel's polls of
    /// every registration (Level, Oneshot, Edge; some readable when they were lost, some
    /// not) and of the notifier (or not: then it must stay one poll) gone and their
    /// completions thrown away, and a `notify` whose wake-up was lost with them, nothing is
    /// reported (the hang this fixes); after a recovery (direct, or through a wait or an
    /// `is_stale` probe that saw `EBADR`), every fd readable before is reported with its
    /// token, every fd made readable after too, a wait with nothing ready and no notify
    /// times out with no event and no wake-up, the kernel holds exactly one poll per armed
    /// registration plus one of the notifier (where its fdinfo lists them), and a `notify`
    /// from another thread wakes a blocked wait, twice. On a shared ring and on an owned one.
    #[test]
    fn dropped_completions_are_recovered() {
        if no_ring() {
            return;
        }
        for owned in [false, true] {
            let p = if owned {
                Uring::new_owned()
            } else {
                Uring::new()
            }
            .expect("io_uring_setup");
            if owned && p.owner.is_none() {
                eprintln!("owned mode needs Linux 6.1+: skipped");
                continue;
            }
            recovers_from_dropped_completions(&p, owned);
        }
    }

    fn recovers_from_dropped_completions(p: &Uring, owned: bool) {
        use std::collections::BTreeSet;
        const PER: usize = 2;
        let modes = [Mode::Level, Mode::Oneshot, Mode::Edge];
        // Token i: mode `modes[i / (2 * PER)]`; readable before the loss if `early(i)`.
        let mode_of = |i: usize| modes[i / (2 * PER)];
        let early = |i: usize| (i / PER) % 2 == 0;
        let pairs: Vec<_> = (0..modes.len() * 2 * PER)
            .map(|_| nonblocking_pair())
            .collect();
        for (i, (a, _)) in pairs.iter().enumerate() {
            p.register(a.as_raw_fd(), i as u64, Interest::READABLE, mode_of(i))
                .unwrap();
        }
        let tokens = |f: &dyn Fn(usize) -> bool| -> BTreeSet<u64> {
            (0..pairs.len())
                .filter(|&i| f(i))
                .map(|i| i as u64)
                .collect()
        };
        let level_fd = pairs[0].0.as_raw_fd();
        assert_eq!(mode_of(0), Mode::Level);
        let mut events = Events::with_capacity(64);
        // With the notifier's poll lost too, or alive (its completions were not among the
        // lost ones: the recovery must not add a second poll).
        for (how, notifier_lost) in [
            (Recovery::Direct, true),
            (Recovery::WaitEbadr, true),
            (Recovery::ProbeEbadr, true),
            (Recovery::DropCount, true),
            (Recovery::Direct, false),
            (Recovery::WaitEbadr, false),
            (Recovery::DropCount, false),
        ] {
            let what = format!("owned {owned}, {how:?}, notifier lost {notifier_lost}");
            // The Oneshot registrations reported last time: armed again.
            for (i, (a, _)) in pairs.iter().enumerate() {
                if mode_of(i) == Mode::Oneshot {
                    p.modify(a.as_raw_fd(), i as u64, Interest::READABLE, Mode::Oneshot)
                        .unwrap();
                }
            }
            assert!(poll_now(p, &mut events).is_empty(), "{what}");
            for (i, (_, b)) in pairs.iter().enumerate() {
                if early(i) {
                    (&*b).write_all(b"x").unwrap();
                }
            }
            lose_completions(p, notifier_lost);
            // The loss: no report of the readable fds (and no wake-up for a notify).
            if notifier_lost {
                p.notify().unwrap();
            }
            assert!(!notified(p, Duration::ZERO), "{what}");
            match how {
                Recovery::Direct => p.recover(&mut p.lock()),
                Recovery::WaitEbadr => {
                    p.lock().inject_enter = Some(libc::EBADR);
                    // Not an error: the wait recovers and returns as woken.
                    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
                }
                Recovery::DropCount => {
                    // As the kernel counts a completion it drops (the count is in the
                    // shared CQ ring; only the kernel writes it otherwise).
                    let mut st = p.lock();
                    let n = st.ring.dropped().wrapping_add(1);
                    let word = st.ring.cq_overflow;
                    st.ring.store(word, n);
                    drop(st);
                    assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
                    assert_eq!(p.lock().drops_seen, n, "{what}");
                }
                Recovery::ProbeEbadr => {
                    p.lock().inject_enter = Some(libc::EBADR);
                    assert!(!p.is_stale(level_fd).unwrap(), "{what}");
                    // Recovered in there; the wake-up is the next wait's (which also
                    // reports the fds, re-armed and ready: collected below).
                    let st = p.lock();
                    assert!(st.wake_due && st.attention, "{what}");
                }
            }
            assert!(!p.lock().dropped, "{what}");
            let want = tokens(&early);
            assert_eq!(collect(p, &mut events, &pairs, &want), want, "{what}");
            assert!(!p.lock().wake_due, "{what}");
            for (i, (_, b)) in pairs.iter().enumerate() {
                if !early(i) {
                    (&*b).write_all(b"y").unwrap();
                }
            }
            let want = tokens(&|i| !early(i));
            assert_eq!(collect(p, &mut events, &pairs, &want), want, "{what}");
            // The wake-ups the recovery left (spurious) are consumed; then none comes
            // without a notify.
            let mut settled = false;
            for _ in 0..8 {
                if !notified(p, Duration::ZERO) {
                    settled = true;
                    break;
                }
            }
            assert!(settled, "{what}: woken again and again");
            assert!(!notified(p, Duration::from_millis(20)), "{what}");
            // Level and Edge polls (Oneshot ones reported, disarmed) and the notifier's.
            if let Some(n) = live_polls(p) {
                assert_eq!(n, 4 * PER + 1, "{what}: polls in the kernel");
            }
            for _ in 0..2 {
                assert!(notify_wakes_blocked_wait(p), "{what}");
                assert!(!notified(p, Duration::ZERO), "{what}");
            }
            assert!(!notified(p, Duration::from_millis(20)), "{what}");
        }
        for (a, _) in &pairs {
            p.deregister(a.as_raw_fd()).unwrap();
        }
        assert!(poll_now(p, &mut events).is_empty());
        if let Some(n) = live_polls(p) {
            assert_eq!(n, 1, "owned {owned}: only the notifier's poll is left");
        }
    }

    /// A reap never submits (nor fails on) what it queues: a notifier poll that ends in a
    /// wait whose Level re-arms filled the SQ is kept in `deferred`, the wait returns every
    /// event of its round (each fd once: submitting the re-arms then would have reported
    /// the unread fds again in the same wait), the next wait pushes it first (and reports
    /// nothing stale once the fds are read), and the notifier works again, with one poll.
    #[test]
    fn reap_defers_what_does_not_fit() {
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        let n = SQ_ENTRIES as usize + 44;
        let pairs: Vec<_> = (0..n).map(|_| nonblocking_pair()).collect();
        for (i, (a, _)) in pairs.iter().enumerate() {
            p.register(a.as_raw_fd(), i as u64, Interest::READABLE, Mode::Level)
                .unwrap();
        }
        let mut events = Events::with_capacity(n + 8);
        assert!(poll_now(&p, &mut events).is_empty());
        for (_, b) in &pairs {
            (&*b).write_all(b"x").unwrap();
        }
        {
            // The notifier's poll ends (cancelled, as the kernel may end it) after every
            // fd's completion, which the writes posted; all of them are moved aside.
            let mut st = p.lock();
            let cancel = aimed_at(IORING_OP_ASYNC_CANCEL, NOTIFY_MULTI_UD, PROBE_UD);
            assert_eq!(p.probe(&mut st, &cancel).unwrap(), 0);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !st.stash.iter().any(|c| c.0 == NOTIFY_MULTI_UD) {
                assert!(std::time::Instant::now() < deadline);
                enter_timed(&p, &st, Duration::from_millis(100));
                p.stash_cq(&mut st, &mut None).unwrap();
            }
            assert_eq!(st.stash.len(), n + 1);
            assert_eq!(st.stash[n].0, NOTIFY_MULTI_UD);
        }
        assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), n);
        let mut tokens: Vec<u64> = events.iter().map(|e| e.token()).collect();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), n, "each fd once");
        {
            let st = p.lock();
            assert_eq!(
                st.ring.sq_pending(),
                SQ_ENTRIES,
                "the SQ is full of re-arms"
            );
            assert_eq!(st.rearm.len(), n - SQ_ENTRIES as usize);
            assert_eq!(st.deferred.len(), 1, "the notifier's re-arm is deferred");
            assert_eq!(st.deferred[0].user_data, NOTIFY_MULTI_UD);
            assert!(st.attention);
        }
        for (a, _) in &pairs {
            let mut buf = [0u8; 4];
            assert_eq!((&*a).read(&mut buf).unwrap(), 1);
        }
        assert!(poll_now(&p, &mut events).is_empty(), "nothing stale");
        {
            let st = p.lock();
            assert!(st.deferred.is_empty() && st.rearm.is_empty() && !st.attention);
            assert!(st.deferred.capacity() > 0, "capacity kept");
        }
        assert!(!notified(&p, Duration::from_millis(20)));
        if let Some(live) = live_polls(&p) {
            assert_eq!(live, n + 1, "one poll per fd and the notifier's");
        }
        for _ in 0..2 {
            assert!(notify_wakes_blocked_wait(&p));
            assert!(!notified(&p, Duration::ZERO));
        }
        for (a, _) in &pairs {
            p.deregister(a.as_raw_fd()).unwrap();
        }
    }

    /// An error flushing the kernel's overflow list in a reap ends it early but does not lose
    /// the events it collected: the wait returns them (a Oneshot fd, disarmed once
    /// reported, would otherwise never be reported), the next wait returns the error before
    /// it consumes anything, and the one after reports the completion that was in the
    /// overflow list.
    #[test]
    fn reap_error_keeps_the_events_of_its_round() {
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        let (a, mut a_peer) = nonblocking_pair();
        let (b, mut b_peer) = nonblocking_pair();
        p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Oneshot)
            .unwrap();
        p.register(b.as_raw_fd(), 2, Interest::READABLE, Mode::Oneshot)
            .unwrap();
        let mut events = Events::with_capacity(8);
        assert!(poll_now(&p, &mut events).is_empty());
        // a's completion first (this thread submitted the poll and posts it on its way back
        // from `write`), then NOPs up to a full CQ...
        a_peer.write_all(b"x").unwrap();
        let nop = IoUringSqe {
            opcode: IORING_OP_NOP,
            user_data: INTERNAL_UD,
            ..IoUringSqe::default()
        };
        let fill = |st: &mut State, mut k: u32| {
            while k > 0 {
                let batch = k.min(SQ_ENTRIES);
                for _ in 0..batch {
                    assert!(st.ring.try_push(&nop));
                }
                let submitted = retry(|| p.enter(batch, 0, 0, None)).unwrap();
                assert_eq!(submitted, batch);
                k -= batch;
            }
        };
        {
            let mut st = p.lock();
            assert_eq!(st.ring.cq_len(), 1);
            fill(&mut st, CQ_ENTRIES - 1);
            assert_eq!(st.ring.cq_len(), CQ_ENTRIES);
        }
        // ...so that b's completion, and more NOPs, go to the overflow list.
        b_peer.write_all(b"x").unwrap();
        {
            let mut st = p.lock();
            fill(&mut st, 8);
            assert!(st.ring.overflowed());
            st.inject_flush = Some(libc::ENOMEM);
        }
        assert_eq!(
            p.wait(&mut events, Some(Duration::from_secs(5))).unwrap(),
            1
        );
        let got: Vec<_> = events.iter().map(|e| (e.token(), e.ready())).collect();
        assert_eq!(got, [(1, Ready::READABLE)]);
        let err = p.wait(&mut events, Some(Duration::ZERO)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM));
        assert!(p.lock().ring.overflowed(), "nothing consumed");
        assert_eq!(
            p.wait(&mut events, Some(Duration::from_secs(5))).unwrap(),
            1
        );
        let got: Vec<_> = events.iter().map(|e| (e.token(), e.ready())).collect();
        assert_eq!(got, [(2, Ready::READABLE)]);
        assert!(poll_now(&p, &mut events).is_empty());
        assert!(!p.lock().attention);
    }

    /// Owned mode: the removal's task work (which drops the ring's reference to the file)
    /// waits behind the wake-ups of other polls, more than one `GETEVENTS` runs; still, the
    /// file is released when `deregister` returns, and those wake-ups are reported by the
    /// next wait (each fd once).
    #[test]
    fn owned_deregister_releases_the_file_behind_many_wake_ups() {
        if no_ring() {
            return;
        }
        let p = Uring::new_owned().expect("io_uring_setup");
        if p.owner.is_none() {
            return; // a kernel before 6.1: the shared ring
        }
        let pairs: Vec<_> = (0..200).map(|_| nonblocking_pair()).collect();
        for (i, (a, _)) in pairs.iter().enumerate() {
            p.register(a.as_raw_fd(), i as u64, Interest::READABLE, Mode::Level)
                .unwrap();
        }
        let (x, peer) = nonblocking_pair();
        peer.set_nonblocking(true).unwrap();
        p.register(x.as_raw_fd(), 999, Interest::READABLE, Mode::Level)
            .unwrap();
        let mut events = Events::with_capacity(512);
        assert!(poll_now(&p, &mut events).is_empty());
        for (_, b) in &pairs {
            (&*b).write_all(b"x").unwrap();
        }
        p.deregister(x.as_raw_fd()).unwrap();
        drop(x);
        assert_eq!((&peer).read(&mut [0u8; 8]).unwrap(), 0, "end of file");
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < pairs.len() {
            p.wait(&mut events, Some(Duration::from_secs(5))).unwrap();
            assert!(!events.is_empty(), "missing: {}", pairs.len() - seen.len());
            for e in events.iter() {
                assert!(seen.insert(e.token()), "{} twice", e.token());
                let a = &pairs[e.token() as usize].0;
                assert_eq!((&*a).read(&mut [0u8; 8]).unwrap(), 1);
            }
        }
    }

    /// Owned mode: deregistering an Edge fd whose multishot poll was just woken (its task
    /// work pending on the ring) releases the file when `deregister` returns.
    #[test]
    fn owned_deregister_of_a_woken_edge_poll_releases_the_file() {
        if no_ring() {
            return;
        }
        let p = Uring::new_owned().expect("io_uring_setup");
        if p.owner.is_none() {
            return; // a kernel before 6.1: the shared ring
        }
        let (x, peer) = nonblocking_pair();
        peer.set_nonblocking(true).unwrap();
        p.register(x.as_raw_fd(), 1, Interest::READABLE, Mode::Edge)
            .unwrap();
        let mut events = Events::with_capacity(8);
        assert!(poll_now(&p, &mut events).is_empty());
        (&peer).write_all(b"x").unwrap();
        assert_eq!((&x).read(&mut [0u8; 8]).unwrap(), 1);
        p.deregister(x.as_raw_fd()).unwrap();
        drop(x);
        assert_eq!((&peer).read(&mut [0u8; 8]).unwrap(), 0, "end of file");
        assert!(poll_now(&p, &mut events).is_empty());
    }

    /// A recovery whose removal of a live poll did not fit in the SQ (deferred) does not keep
    /// that poll, and its file, past `deregister`: the file is released at once, so the peer
    /// of a socket closed right after reads the end of the stream.
    #[test]
    fn deregister_after_a_deferred_recovery_releases_the_file() {
        if no_ring() {
            return;
        }
        let p = Uring::new().expect("io_uring_setup");
        let (a, b) = nonblocking_pair();
        b.set_nonblocking(true).unwrap();
        p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)
            .unwrap();
        let mut events = Events::with_capacity(8);
        assert!(poll_now(&p, &mut events).is_empty());
        {
            // The SQ full (as a reap's re-arms can leave it) when the recovery runs: the
            // removal of the live poll is deferred.
            let mut st = p.lock();
            let nop = IoUringSqe {
                opcode: IORING_OP_NOP,
                user_data: INTERNAL_UD,
                ..IoUringSqe::default()
            };
            while st.ring.try_push(&nop) {}
            p.recover(&mut st);
            assert!(st
                .deferred
                .iter()
                .any(|sqe| sqe.opcode == IORING_OP_POLL_REMOVE));
        }
        p.deregister(a.as_raw_fd()).unwrap();
        drop(a);
        let mut buf = [0u8; 1];
        assert_eq!((&b).read(&mut buf).unwrap(), 0, "end of file");
        assert!(poll_now(&p, &mut events).is_empty());
        assert!(p.lock().deferred.is_empty());
    }
}
