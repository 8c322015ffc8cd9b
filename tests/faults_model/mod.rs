//! A model of what the reactor must dispatch, driven by a sequence of operations; shared by
//! the proptest in `tests/model.rs` and the cargo-fuzz target in `fuzz/fuzz_targets/ops.rs`.
//!
//! The world: a few slots, each possibly holding a socket pair whose read end may have a
//! level-triggered handler, plus timers either due now or an hour away. After every
//! [`Op::Run`] (one `run_once`), the dispatches must be exactly the model's: each registered
//! read end whose interest includes READABLE and that has unread data gets `READABLE`, each
//! whose interest includes WRITABLE gets `WRITABLE` (its send buffer is never full here), and
//! nothing else — in particular never a removed, closed, or reused registration. Due timers
//! fire in creation order, cancelled ones never.
//!
//! One documented exception: io_uring samples readiness when its poll request completes, which
//! can be before the wait. A read end that received data after the previous run and was drained
//! before this one may still be reported `READABLE` once on that backend (a spurious report,
//! never a lost one); the model accepts exactly that and nothing more.
#![allow(dead_code)]

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use ioloop::{Interest, IoLoop, Poller, Ready, TimeoutId};

/// How many socket slots the operations address.
pub const SLOTS: u8 = 6;

/// One step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// Create a socket pair in the slot (if empty); it usually reuses fd numbers just freed.
    Open(u8),
    /// Remove the slot's handler (if any) and close both ends.
    Close(u8),
    /// `add_handler` on the slot's read end; interest bits: 1 READABLE, 2 WRITABLE.
    Add(u8, u8),
    /// `update_handler` with the interest bits.
    Update(u8, u8),
    /// `remove_handler`.
    Remove(u8),
    /// Write 1..=255 bytes to the slot's read end (from its peer).
    Write(u8, u8),
    /// Read everything pending, outside the loop.
    Drain(u8),
    /// `call_later(0)` (true) or `call_later(1 h)` (false).
    TimerAdd(bool),
    /// `remove_timeout` of the n-th timer created (modulo their number).
    TimerCancel(u8),
    /// One `run_once` (not blocking), then compare what ran with the model.
    Run,
}

impl Op {
    /// Decodes two bytes into an operation (for the fuzzer).
    pub fn from_bytes(kind: u8, arg: u8) -> Op {
        let slot = arg % SLOTS;
        let bits = (arg / SLOTS) % 4;
        match kind % 11 {
            0 => Op::Open(slot),
            1 => Op::Close(slot),
            2 => Op::Add(slot, bits),
            3 => Op::Update(slot, bits),
            4 => Op::Remove(slot),
            5 => Op::Write(slot, arg.max(1)),
            6 => Op::Drain(slot),
            7 => Op::TimerAdd(arg & 1 == 0),
            8 => Op::TimerCancel(arg),
            _ => Op::Run,
        }
    }
}

/// Operations from raw bytes, two per operation.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    data.chunks_exact(2)
        .map(|c| Op::from_bytes(c[0], c[1]))
        .collect()
}

fn interest(bits: u8) -> Interest {
    let mut i = Interest::empty();
    if bits & 1 != 0 {
        i |= Interest::READABLE;
    }
    if bits & 2 != 0 {
        i |= Interest::WRITABLE;
    }
    i
}

struct Slot {
    reader: UnixStream,
    writer: UnixStream,
    pending: usize,
    /// Data was written since the previous [`Op::Run`] (io_uring may report it even if drained).
    wrote_since_run: bool,
    /// (registration id, interest).
    reg: Option<(u64, Interest)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TimerState {
    Pending,
    Done,
}

struct Timer {
    id: TimeoutId,
    due_now: bool,
    state: TimerState,
    /// Its index in creation order.
    index: usize,
}

/// What the loop's handlers and timers saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Io { reg: u64, fd: RawFd, ready: u8 },
    Timer(usize),
}

fn ready_bits(r: Ready) -> u8 {
    let mut b = 0;
    for (k, f) in [Ready::READABLE, Ready::WRITABLE, Ready::ERROR, Ready::HUP]
        .into_iter()
        .enumerate()
    {
        if r.contains(f) {
            b |= 1 << k;
        }
    }
    b
}

/// Runs `ops` on a new loop of backend `P`, panicking at the first divergence from the model.
pub fn run_ops<P: Poller>(ops: &[Op]) {
    let lp = IoLoop::<P>::with_backend().expect("IoLoop");
    let seen = Rc::new(RefCell::new(Vec::<Seen>::new()));
    let mut slots: Vec<Option<Slot>> = (0..SLOTS).map(|_| None).collect();
    let mut timers: Vec<Timer> = Vec::new();
    let mut next_reg = 0u64;
    for (step, &op) in ops.iter().enumerate() {
        let ctx = || format!("{}: step {step} {op:?}", P::NAME);
        match op {
            Op::Open(s) => {
                let slot = &mut slots[s as usize];
                if slot.is_none() {
                    let (reader, writer) = UnixStream::pair().unwrap();
                    reader.set_nonblocking(true).unwrap();
                    writer.set_nonblocking(true).unwrap();
                    *slot = Some(Slot {
                        reader,
                        writer,
                        pending: 0,
                        wrote_since_run: false,
                        reg: None,
                    });
                }
            }
            Op::Close(s) => {
                if let Some(slot) = slots[s as usize].take() {
                    if slot.reg.is_some() {
                        lp.remove_handler(&slot.reader)
                            .unwrap_or_else(|e| panic!("{}: {e}", ctx()));
                    }
                }
            }
            Op::Add(s, bits) => {
                let Some(slot) = slots[s as usize].as_mut() else {
                    continue;
                };
                let reg = next_reg;
                let fd = slot.reader.as_raw_fd();
                let seen2 = seen.clone();
                let res = lp.add_handler(fd, interest(bits), move |_, got, ready| {
                    seen2.borrow_mut().push(Seen::Io {
                        reg,
                        fd: got,
                        ready: ready_bits(ready),
                    });
                });
                match (&slot.reg, res) {
                    (None, Ok(())) => {
                        slot.reg = Some((reg, interest(bits)));
                        next_reg += 1;
                    }
                    (Some(_), Err(e)) if e.kind() == ErrorKind::AlreadyExists => {}
                    (r, res) => panic!("{}: registered {r:?}, add_handler gave {res:?}", ctx()),
                }
            }
            Op::Update(s, bits) => {
                let Some(slot) = slots[s as usize].as_mut() else {
                    continue;
                };
                let res = lp.update_handler(&slot.reader, interest(bits));
                match (&mut slot.reg, res) {
                    (Some((_, i)), Ok(())) => *i = interest(bits),
                    (None, Err(e)) if e.kind() == ErrorKind::NotFound => {}
                    (r, res) => panic!("{}: registered {r:?}, update gave {res:?}", ctx()),
                }
            }
            Op::Remove(s) => {
                let Some(slot) = slots[s as usize].as_mut() else {
                    continue;
                };
                let res = lp.remove_handler(&slot.reader);
                match (slot.reg.take(), res) {
                    (Some(_), Ok(())) => {}
                    (None, Err(e)) if e.kind() == ErrorKind::NotFound => {}
                    (r, res) => panic!("{}: registered {r:?}, remove gave {res:?}", ctx()),
                }
            }
            Op::Write(s, n) => {
                if let Some(slot) = slots[s as usize].as_mut() {
                    let buf = [0x5a; 255];
                    (&slot.writer).write_all(&buf[..n as usize]).unwrap();
                    slot.pending += n as usize;
                    slot.wrote_since_run = true;
                }
            }
            Op::Drain(s) => {
                if let Some(slot) = slots[s as usize].as_mut() {
                    let mut buf = [0u8; 4096];
                    let mut got = 0;
                    loop {
                        match (&slot.reader).read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => panic!("{}: read: {e}", ctx()),
                        }
                    }
                    assert_eq!(got, slot.pending, "{}: bytes pending", ctx());
                    slot.pending = 0;
                }
            }
            Op::TimerAdd(due_now) => {
                let index = timers.len();
                let delay = if due_now {
                    Duration::ZERO
                } else {
                    Duration::from_secs(3600)
                };
                let seen2 = seen.clone();
                let id = lp.call_later(delay, move |_| seen2.borrow_mut().push(Seen::Timer(index)));
                timers.push(Timer {
                    id,
                    due_now,
                    state: TimerState::Pending,
                    index,
                });
            }
            Op::TimerCancel(k) => {
                if timers.is_empty() {
                    continue;
                }
                let n = timers.len();
                let t = &mut timers[k as usize % n];
                let was_pending = t.state == TimerState::Pending;
                assert_eq!(lp.remove_timeout(t.id), was_pending, "{}", ctx());
                t.state = TimerState::Done;
            }
            Op::Run => {
                // Expected dispatches (sorted: their order among fds is the backend's).
                let mut want_io: Vec<Seen> = Vec::new();
                for slot in slots.iter().flatten() {
                    let Some((reg, int)) = slot.reg else { continue };
                    let mut ready = Ready::empty();
                    if int.contains(Interest::READABLE) && slot.pending > 0 {
                        ready |= Ready::READABLE;
                    }
                    if int.contains(Interest::WRITABLE) {
                        ready |= Ready::WRITABLE;
                    }
                    if !ready.is_empty() {
                        want_io.push(Seen::Io {
                            reg,
                            fd: slot.reader.as_raw_fd(),
                            ready: ready_bits(ready),
                        });
                    }
                }
                want_io.sort();
                // Due timers fire in creation order, after the I/O.
                let mut want_timers = Vec::new();
                for t in timers.iter_mut() {
                    if t.due_now && t.state == TimerState::Pending {
                        want_timers.push(Seen::Timer(t.index));
                        t.state = TimerState::Done;
                    }
                }
                // Never block: a timer due now (fires after the model's own, FIFO).
                let nudge = lp.call_later(Duration::ZERO, |_| {});
                lp.run_once()
                    .unwrap_or_else(|e| panic!("{}: run_once: {e}", ctx()));
                assert!(
                    !lp.remove_timeout(nudge),
                    "{}: the nudge did not fire",
                    ctx()
                );
                let got = std::mem::take(&mut *seen.borrow_mut());
                let split = got
                    .iter()
                    .position(|s| matches!(s, Seen::Timer(_)))
                    .unwrap_or(got.len());
                let (io, tm) = got.split_at(split);
                let mut io = io.to_vec();
                if P::NAME == "uring" {
                    // Drop only a stale READABLE of a drained read end written since the last
                    // run (see the module docs); everything else must match exactly.
                    let readable = ready_bits(Ready::READABLE);
                    io.retain_mut(|s| {
                        let Seen::Io { reg, ready, .. } = s else {
                            return true;
                        };
                        let stale = slots.iter().flatten().any(|sl| {
                            sl.reg.map(|(r, _)| r) == Some(*reg)
                                && sl.pending == 0
                                && sl.wrote_since_run
                        });
                        if stale {
                            *ready &= !readable;
                        }
                        *ready != 0
                    });
                }
                for slot in slots.iter_mut().flatten() {
                    slot.wrote_since_run = false;
                }
                io.sort();
                assert_eq!(io, want_io, "{}: dispatches", ctx());
                assert_eq!(tm, &want_timers[..], "{}: timers", ctx());
            }
        }
        let regs = slots.iter().flatten().filter(|s| s.reg.is_some()).count();
        assert_eq!(lp.handler_count(), regs, "{}: handler_count", ctx());
        let live = timers
            .iter()
            .filter(|t| t.state == TimerState::Pending)
            .count();
        assert_eq!(lp.timer_count(), live, "{}: timer_count", ctx());
    }
}
