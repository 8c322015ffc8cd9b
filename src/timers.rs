//! The timer queue: deadline order, FIFO among equal deadlines, O(1) cancel, bounded garbage.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Identifies a scheduled timeout; pass it to
/// [`IoLoop::remove_timeout`](crate::IoLoop::remove_timeout).
///
/// Ids are never reused while the timeout is pending, and an id whose timeout has fired or
/// was removed is simply unknown afterwards (removing it again returns `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeoutId {
    /// The loop that issued it: another loop's id is unknown here.
    owner: u32,
    slot: u32,
    gen: u32,
}

/// What runs when a timer is due. A periodic callback is lent out (`f: None`) while it runs,
/// so its timer stays pending and can be cancelled from inside it.
pub(crate) enum Callback<F, G> {
    Once(F),
    /// Boxed: periodic timers are rare, and keeping this variant as small as `Once` keeps every
    /// slot of the table small (the firing loop's slot lookups are its cache misses).
    Every(Box<Periodic<G>>),
}

/// A periodic timer's period and (unless lent out) callback.
pub(crate) struct Periodic<G> {
    pub(crate) period: Duration,
    pub(crate) f: Option<G>,
}

struct Slot<F, G> {
    gen: u32,
    callback: Option<Callback<F, G>>,
}

/// Heap entry: (deadline in ns after `Timers::base`, negative before it; sequence number,
/// slot, generation); ordered by deadline, then FIFO among equal deadlines. 24 bytes, like a
/// bare `(Instant, u64)` key.
type Key = Reverse<(i64, u64, u32, u32)>;

pub(crate) struct Timers<F, G> {
    heap: BinaryHeap<Key>,
    slots: Vec<Slot<F, G>>,
    free: Vec<u32>,
    seq: u64,
    /// Heap entries whose slot was cancelled (lazily deleted).
    stale: usize,
    /// Stamped into every [`TimeoutId`] this queue issues.
    owner: u32,
    /// The zero of the heap's deadlines (when the queue was made): earlier deadlines are
    /// negative, so deadlines long past keep their order too. Nanoseconds in an `i64`
    /// reach 292 years either way; farther ones saturate.
    base: Instant,
}

/// `now + delay`, or a deadline far enough away to mean "never" when that overflows `Instant`.
pub(crate) fn deadline_after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// See [`Timers::mark`].
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    seq: u64,
    now: Instant,
    now_ns: i64,
}

/// A due timer taken out of the queue.
pub(crate) enum Due<F, G> {
    Once(F),
    /// A periodic timer, already re-queued at its next tick; give `G` back with
    /// [`Timers::restore_every`] after running it.
    Every(TimeoutId, G),
}

impl<F, G> Timers<F, G> {
    pub(crate) fn new(owner: u32) -> Self {
        Self {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
            stale: 0,
            owner,
            base: Instant::now(),
        }
    }

    /// `deadline` as heap nanoseconds (saturating at both ends).
    #[inline]
    fn to_ns(&self, deadline: Instant) -> i64 {
        match deadline.checked_duration_since(self.base) {
            Some(after) => nanos(after),
            None => nanos(self.base.duration_since(deadline)).saturating_neg(),
        }
    }

    #[inline]
    fn to_instant(&self, ns: i64) -> Instant {
        let d = Duration::from_nanos(ns.unsigned_abs());
        if ns >= 0 {
            deadline_after(self.base, d)
        } else {
            self.base.checked_sub(d).unwrap_or(self.base)
        }
    }

    /// Schedules `callback` at `deadline`.
    pub(crate) fn insert(&mut self, deadline: Instant, callback: Callback<F, G>) -> TimeoutId {
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    callback: None,
                });
                u32::try_from(self.slots.len() - 1).expect("more than 2^32 timers")
            }
        };
        let s = &mut self.slots[slot as usize];
        s.callback = Some(callback);
        let gen = s.gen;
        self.push_key(deadline, slot, gen);
        TimeoutId {
            owner: self.owner,
            slot,
            gen,
        }
    }

    fn push_key(&mut self, deadline: Instant, slot: u32, gen: u32) {
        self.seq += 1;
        let ns = self.to_ns(deadline);
        self.heap.push(Reverse((ns, self.seq, slot, gen)));
    }

    /// Cancels a pending timer and returns its callback, for the caller to drop once it has
    /// let go of the timers (a callback's captures may use the loop when dropped: a `Sleep`
    /// cancels its own timer); `None` if `id` is not pending (fired, removed, or unknown).
    pub(crate) fn remove(&mut self, id: TimeoutId) -> Option<Callback<F, G>> {
        if id.owner != self.owner {
            return None;
        }
        let s = self
            .slots
            .get_mut(id.slot as usize)
            .filter(|s| s.gen == id.gen)?;
        let callback = s.callback.take()?;
        self.release(id.slot);
        self.stale += 1;
        self.compact();
        Some(callback)
    }

    /// Ends the current use of `slot` (its callback already taken): a new generation, so
    /// that the ids handed out for it are unknown from now on, and back to the free list,
    /// unless the generation wrapped: the slot is then retired for good, since its next
    /// use would hand out the ids of its first one again.
    fn release(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.gen = s.gen.wrapping_add(1);
        if s.gen != 0 {
            self.free.push(slot);
        }
    }

    /// Rebuilds the heap once cancelled entries outnumber live ones, so garbage stays bounded
    /// by the live count (amortised O(1) per cancel).
    fn compact(&mut self) {
        if self.stale > 64 && self.stale > self.heap.len() / 2 {
            let slots = &self.slots;
            self.heap.retain(|Reverse((_, _, slot, gen))| {
                let s = &slots[*slot as usize];
                s.gen == *gen && s.callback.is_some()
            });
            self.stale = 0;
        }
    }

    /// How many timers are pending.
    pub(crate) fn len(&self) -> usize {
        self.heap.len() - self.stale
    }

    /// Heap entries, live and cancelled (for tests of the garbage bound).
    pub(crate) fn heap_len(&self) -> usize {
        self.heap.len()
    }

    fn is_live(&self, slot: u32, gen: u32) -> bool {
        let s = &self.slots[slot as usize];
        s.gen == gen && s.callback.is_some()
    }

    /// The earliest live deadline, dropping cancelled entries from the top.
    #[inline]
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, _, slot, gen))) = self.heap.peek().copied() {
            if self.is_live(slot, gen) {
                return Some(self.to_instant(deadline));
            }
            self.heap.pop();
            self.stale -= 1;
        }
        None
    }

    /// What a round of [`pop_due`](Self::pop_due) calls fires: timers due at `now` and
    /// inserted before this call (not those the fired ones add). `now` is converted once here
    /// rather than per fired timer.
    pub(crate) fn mark(&self, now: Instant) -> Mark {
        Mark {
            seq: self.seq,
            now,
            now_ns: self.to_ns(now),
        }
    }

    /// Takes the next timer due at `now` that was scheduled up to `mark`. A one-shot timer
    /// leaves the queue; a periodic one is re-queued at once at its next tick (previous
    /// deadline + period, skipping ticks already missed rather than bursting).
    pub(crate) fn pop_due(&mut self, mark: &Mark) -> Option<Due<F, G>> {
        let Mark {
            seq: mark,
            now,
            now_ns,
        } = *mark;
        loop {
            let Reverse((deadline, seq, slot, gen)) = *self.heap.peek()?;
            if !self.is_live(slot, gen) {
                self.heap.pop();
                self.stale -= 1;
                continue;
            }
            if deadline > now_ns || seq > mark {
                return None;
            }
            self.heap.pop();
            let s = &mut self.slots[slot as usize];
            match &mut s.callback {
                Some(Callback::Every(p)) => {
                    let period = p.period;
                    let f = p.f.take();
                    let deadline = self.to_instant(deadline);
                    self.push_key(next_tick(deadline, period, now), slot, gen);
                    match f {
                        Some(f) => {
                            let id = TimeoutId {
                                owner: self.owner,
                                slot,
                                gen,
                            };
                            return Some(Due::Every(id, f));
                        }
                        // Lent out: it is running further up the stack (a nested run).
                        None => continue,
                    }
                }
                Some(Callback::Once(_)) => {
                    let Some(Callback::Once(f)) = s.callback.take() else {
                        unreachable!()
                    };
                    self.release(slot);
                    return Some(Due::Once(f));
                }
                None => unreachable!("live timer slot without a callback"),
            }
        }
    }

    /// Gives a periodic callback back after it ran, if its timer is still pending; else
    /// returns it, for the caller to drop once it has let go of the timers (see
    /// [`remove`](Self::remove)).
    pub(crate) fn restore_every(&mut self, id: TimeoutId, g: G) -> Option<G> {
        match self.slots.get_mut(id.slot as usize) {
            Some(Slot {
                gen,
                callback: Some(Callback::Every(p)),
            }) if *gen == id.gen => {
                p.f = Some(g);
                None
            }
            _ => Some(g),
        }
    }
}

/// `d` in nanoseconds, saturating at `i64::MAX` (i64 arithmetic rather than `as_nanos`'
/// u128: this runs per insert).
#[inline]
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(d.subsec_nanos()))
}

/// The first `deadline + k * period` (k >= 1) that is after `now`.
fn next_tick(deadline: Instant, period: Duration, now: Instant) -> Instant {
    let next = deadline_after(deadline, period);
    if next > now {
        return next;
    }
    let behind = now.duration_since(deadline).as_nanos();
    let k = u32::try_from(behind / period.as_nanos().max(1) + 1).unwrap_or(u32::MAX);
    let next = deadline_after(deadline, period.saturating_mul(k));
    if next > now {
        next
    } else {
        deadline_after(now, period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type T = Timers<u32, u32>;

    #[test]
    fn deadline_order_then_fifo() {
        let mut t = T::new(0);
        let base = Instant::now();
        t.insert(base + Duration::from_millis(2), Callback::Once(3));
        t.insert(base + Duration::from_millis(1), Callback::Once(1));
        t.insert(base + Duration::from_millis(1), Callback::Once(2));
        let now = base + Duration::from_millis(5);
        let mark = t.mark(now);
        let mut order = Vec::new();
        while let Some(Due::Once(v)) = t.pop_due(&mark) {
            order.push(v);
        }
        assert_eq!(order, [1, 2, 3]);
        assert_eq!(t.len(), 0);
    }

    /// A slot whose generation wraps is retired: a new timer never gets an id that an old
    /// timer of the same slot had, so a stale id stays unknown.
    #[test]
    fn a_slot_is_retired_when_its_generation_wraps() {
        let mut t = T::new(0);
        let far = Instant::now() + Duration::from_secs(3600);
        let first = t.insert(far, Callback::Once(1));
        assert!(t.remove(first).is_some());
        // Reused: same slot, next generation.
        let second = t.insert(far, Callback::Once(2));
        assert_eq!(second.slot, first.slot);
        assert_ne!(second.gen, first.gen);
        // Fast-forward to the last generation before the wrap.
        t.slots[second.slot as usize].gen = u32::MAX;
        let last = TimeoutId {
            gen: u32::MAX,
            ..second
        };
        assert!(t.remove(last).is_some());
        let next = t.insert(far, Callback::Once(3));
        assert_ne!(next.slot, first.slot, "the wrapped slot was reused");
        assert!(t.remove(first).is_none(), "a stale id removed a new timer");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cancelled_garbage_stays_bounded() {
        let mut t = T::new(0);
        let far = Instant::now() + Duration::from_secs(3600);
        let live = t.insert(far, Callback::Once(0));
        for i in 0..100_000 {
            let id = t.insert(far, Callback::Once(i));
            assert!(t.remove(id).is_some());
            assert!(t.remove(id).is_none(), "second remove of the same id");
        }
        assert_eq!(t.len(), 1);
        assert!(t.heap_len() <= 200, "heap holds {} entries", t.heap_len());
        assert!(t.remove(live).is_some());
    }

    #[test]
    fn periodic_skips_missed_ticks() {
        let base = Instant::now();
        let p = Duration::from_millis(10);
        assert_eq!(next_tick(base, p, base), base + p);
        // 35 ms late: the next tick is base + 40 ms, not four ticks in a burst.
        assert_eq!(
            next_tick(base, p, base + Duration::from_millis(35)),
            base + 4 * p
        );
        assert_eq!(
            next_tick(base, p, base + Duration::from_millis(40)),
            base + 5 * p
        );
    }

    /// Deadlines long before the queue was made (an `Instant` kept from days ago) keep
    /// their order.
    #[test]
    fn long_past_deadlines_keep_their_order() {
        let mut t = T::new(0);
        let now = Instant::now();
        let ago = |h: u64| now.checked_sub(Duration::from_secs(h * 3600));
        let (Some(h48), Some(h72), Some(h1)) = (ago(48), ago(72), ago(1)) else {
            return; // an `Instant` that far back is not representable here
        };
        t.insert(h48, Callback::Once(48));
        t.insert(h72, Callback::Once(72));
        t.insert(h1, Callback::Once(1));
        assert_eq!(t.next_deadline(), Some(h72));
        let mark = t.mark(now);
        let mut order = Vec::new();
        while let Some(Due::Once(v)) = t.pop_due(&mark) {
            order.push(v);
        }
        assert_eq!(order, [72, 48, 1]);
    }

    #[test]
    fn huge_delay_does_not_overflow() {
        let now = Instant::now();
        assert!(deadline_after(now, Duration::MAX) > now);
    }
}
