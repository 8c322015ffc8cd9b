//! The reusable events buffer.

use crate::Ready;

/// One readiness report: the token given at registration and what is ready.
///
/// On targets with epoll this is the kernel's own `epoll_event` (`#[repr(transparent)]`):
/// `epoll_wait` writes straight into the [`Events`] buffer and [`ready`](Event::ready)
/// decodes the kernel's flags when asked, so a wait copies and converts nothing. Events
/// from the other backends are stored in the same form.
#[cfg(ioloop_has_epoll)]
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Event(libc::epoll_event);

/// One readiness report: the token given at registration and what is ready.
#[cfg(not(ioloop_has_epoll))]
#[derive(Clone, Copy)]
pub struct Event {
    token: u64,
    ready: Ready,
}

#[cfg(ioloop_has_epoll)]
impl Event {
    /// An event of the reserved token that is the notifier's edge (`EPOLLIN`), not the
    /// hang-up or error of `Epoll::is_stale`'s probe registration (which asks for nothing).
    #[inline]
    fn is_notifier_edge(&self) -> bool {
        self.0.events & libc::EPOLLIN as u32 != 0
    }

    /// Builds an event (handy in tests and for backends outside this crate).
    pub const fn new(token: u64, ready: Ready) -> Self {
        Self(libc::epoll_event {
            events: epoll::from_ready(ready),
            u64: token,
        })
    }

    /// The token the fd was registered with.
    #[inline]
    pub const fn token(&self) -> u64 {
        self.0.u64
    }

    /// What is ready.
    #[inline]
    pub const fn ready(&self) -> Ready {
        epoll::to_ready(self.0.events)
    }
}

#[cfg(not(ioloop_has_epoll))]
impl Event {
    /// Builds an event (handy in tests and for backends outside this crate).
    pub const fn new(token: u64, ready: Ready) -> Self {
        Self { token, ready }
    }

    /// The token the fd was registered with.
    #[inline]
    pub const fn token(&self) -> u64 {
        self.token
    }

    /// What is ready.
    #[inline]
    pub const fn ready(&self) -> Ready {
        self.ready
    }
}

/// The same on every target: `ready()` is a few bit operations that inline into these.
impl Event {
    /// Shorthand for `ready().contains(Ready::READABLE)`.
    #[inline]
    pub const fn is_readable(&self) -> bool {
        self.ready().contains(Ready::READABLE)
    }

    /// Shorthand for `ready().contains(Ready::WRITABLE)`.
    #[inline]
    pub const fn is_writable(&self) -> bool {
        self.ready().contains(Ready::WRITABLE)
    }

    /// Shorthand for `ready().intersects(Ready::ERROR | Ready::HUP)`.
    #[inline]
    pub const fn is_error_or_hup(&self) -> bool {
        self.ready().intersects(Ready::ERROR.union(Ready::HUP))
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.token() == other.token() && self.ready() == other.ready()
    }
}

impl Eq for Event {}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("token", &self.token())
            .field("ready", &self.ready())
            .finish()
    }
}

/// epoll's flags as [`Ready`] and back: the one mapping (see the table on [`Ready`]).
#[cfg(ioloop_has_epoll)]
pub(crate) mod epoll {
    use crate::Ready;

    pub(crate) const READABLE: u32 = libc::EPOLLIN as u32;
    pub(crate) const WRITABLE: u32 = libc::EPOLLOUT as u32;
    pub(crate) const ERROR: u32 = libc::EPOLLERR as u32;
    pub(crate) const PRIORITY: u32 = libc::EPOLLPRI as u32;

    // `Ready`'s bits are epoll's for these five (checked here at compile time), and
    // `EPOLLRDHUP` is `EPOLLHUP` shifted left by 9.
    const _: () = {
        assert!(READABLE == Ready::READABLE.bits() as u32);
        assert!(WRITABLE == Ready::WRITABLE.bits() as u32);
        assert!(ERROR == Ready::ERROR.bits() as u32);
        assert!(libc::EPOLLHUP as u32 == Ready::HUP.bits() as u32);
        assert!(PRIORITY == Ready::PRIORITY.bits() as u32);
        assert!(libc::EPOLLRDHUP as u32 == (libc::EPOLLHUP as u32) << 9);
    };

    /// The flags [`to_ready`] keeps as they are.
    const SAME: u32 = READABLE | WRITABLE | ERROR | libc::EPOLLHUP as u32 | PRIORITY;

    /// The kernel's flags as [`Ready`]: a mask, with `EPOLLRDHUP` folded into `HUP`
    /// (branch-free: this runs once per event).
    #[inline]
    pub(crate) const fn to_ready(flags: u32) -> Ready {
        let hup = (flags & libc::EPOLLRDHUP as u32) >> 9;
        // The mask keeps the result within the bits of `Ready`, so it fits a `u8`.
        Ready::from_bits_retain(((flags & SAME) | hup) as u8)
    }

    /// `ready` as epoll flags that [`to_ready`] maps back to exactly `ready`.
    #[inline]
    pub(crate) const fn from_ready(ready: Ready) -> u32 {
        let mut f = 0;
        if ready.contains(Ready::READABLE) {
            f |= READABLE;
        }
        if ready.contains(Ready::WRITABLE) {
            f |= WRITABLE;
        }
        if ready.contains(Ready::ERROR) {
            f |= ERROR;
        }
        if ready.contains(Ready::HUP) {
            f |= libc::EPOLLHUP as u32;
        }
        if ready.contains(Ready::PRIORITY) {
            f |= PRIORITY;
        }
        f
    }
}

/// A buffer of [`Event`]s that [`Poller::wait`](crate::Poller::wait) fills.
///
/// It is allocated once, at the capacity given, and reused by every wait: a wait reports at
/// most [`capacity`](Events::capacity) events and leaves the rest for the next one.
///
/// # Examples
///
/// ```
/// let events = ioloop_sys::Events::with_capacity(256);
/// assert_eq!(events.capacity(), 256);
/// assert!(events.is_empty());
/// ```
pub struct Events {
    /// Invariant: `list.capacity() >= cap`, so the epoll backend can let the kernel write
    /// up to `cap - len` events past the end.
    list: Vec<Event>,
    cap: usize,
}

impl Clone for Events {
    fn clone(&self) -> Self {
        let mut list = Vec::with_capacity(self.cap);
        list.extend_from_slice(&self.list);
        Self {
            list,
            cap: self.cap,
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("list", &self.list)
            .field("capacity", &self.cap)
            .finish()
    }
}

impl Events {
    /// Creates a buffer for up to `capacity` events per wait (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        let cap = capacity.max(1);
        Self {
            list: Vec::with_capacity(cap),
            cap,
        }
    }

    /// How many events one wait can report.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// How many events the last wait stored.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the last wait stored no event.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The events of the last wait.
    pub fn iter(&self) -> std::slice::Iter<'_, Event> {
        self.list.iter()
    }

    /// The events of the last wait, as a slice.
    pub fn as_slice(&self) -> &[Event] {
        &self.list
    }

    /// Forgets the stored events; the capacity stays.
    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// Room left in this wait.
    pub(crate) fn remaining(&self) -> usize {
        self.cap - self.list.len()
    }

    /// Stores an event; never grows past the capacity (callers check `remaining`).
    pub(crate) fn push(&mut self, token: u64, ready: Ready) {
        debug_assert!(self.list.len() < self.cap);
        self.list.push(Event::new(token, ready));
    }

    /// Lets `fill` store up to [`remaining`](Events::remaining) raw epoll events after the
    /// ones already stored (`fill` gets the array and its room, returns how many it stored),
    /// then drops the notifier's event (token [`RESERVED_TOKEN`](crate::RESERVED_TOKEN))
    /// from those; returns whether there was one.
    #[cfg(ioloop_has_epoll)]
    #[inline]
    pub(crate) fn fill_epoll(
        &mut self,
        fill: impl FnOnce(*mut libc::epoll_event, usize) -> std::io::Result<usize>,
    ) -> std::io::Result<bool> {
        let len = self.list.len();
        let spare = self.list.spare_capacity_mut();
        let room = spare.len().min(self.cap - len);
        let n = fill(spare.as_mut_ptr().cast(), room)?;
        assert!(n <= room, "the kernel stored more events than asked");
        // SAFETY: `fill` (the kernel) initialised the first `n <= room` entries past `len`,
        // inside the capacity; `Event` is `repr(transparent)` over `epoll_event`.
        unsafe { self.list.set_len(len + n) };
        // The reserved token is the notifier's; `Epoll::is_stale`'s brief probe registration
        // carries it too (with no interest, so only a hang-up or an error is reported for it,
        // never `EPOLLIN`, which every notifier edge has): every such event is dropped, and
        // only the notifier's count as a wake-up.
        let new = &self.list[len..];
        match new.iter().position(|e| e.token() == crate::RESERVED_TOKEN) {
            // The usual case: the notifier's event is the last one (often the only one).
            Some(i) if len + i + 1 == self.list.len() => {
                let notified = self.list[len + i].is_notifier_edge();
                self.list.truncate(len + i);
                Ok(notified)
            }
            Some(i) => {
                let mut notified = false;
                let mut j = len + i;
                while j < self.list.len() {
                    if self.list[j].token() == crate::RESERVED_TOKEN {
                        notified |= self.list.remove(j).is_notifier_edge();
                    } else {
                        j += 1;
                    }
                }
                Ok(notified)
            }
            None => Ok(false),
        }
    }

    /// Adds `ready` to the event stored at `index` in this wait (kqueue's split read/write
    /// reports of one fd; the backend remembers where it stored each fd's event, so merging
    /// is O(1) instead of a scan of the events stored so far).
    #[cfg(ioloop_has_kqueue)]
    pub(crate) fn merge_at(&mut self, index: usize, ready: Ready) {
        if let Some(ev) = self.list.get_mut(index) {
            ev.ready |= ready;
        }
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = &'a Event;
    type IntoIter = std::slice::Iter<'a, Event>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fill_epoll` drops the notifier's events (token `RESERVED_TOKEN`) wherever they are
    /// in the batch, keeps the events stored before the batch, and says whether it dropped
    /// one: the notifier last (the `truncate` path), alone, first, twice, absent.
    #[cfg(ioloop_has_epoll)]
    #[test]
    fn fill_epoll_drops_exactly_the_notifier_events() {
        const N: u64 = crate::RESERVED_TOKEN;
        /// Tokens stored before the batch, the batch, the tokens expected, whether notified.
        /// `P` is the probe of `Epoll::is_stale` (the reserved token, a hang-up only).
        type Case = (&'static [u64], &'static [u64], &'static [u64], bool);
        const P: u64 = u64::MAX - 1;
        let cases: [Case; 11] = [
            (&[], &[N], &[], true),
            (&[], &[1, N], &[1], true),
            (&[], &[N, 2], &[2], true),
            (&[], &[1, N, 2, N], &[1, 2], true),
            (&[], &[1, 2], &[1, 2], false),
            (&[5], &[N], &[5], true),
            (&[5], &[1, N, 3], &[5, 1, 3], true),
            (&[], &[P], &[], false),
            (&[], &[1, P], &[1], false),
            (&[], &[P, 2, N], &[2], true),
            (&[], &[N, 2, P], &[2], true),
        ];
        for (before, batch, want, notified) in cases {
            let mut events = Events::with_capacity(8);
            for &t in before {
                events.push(t, Ready::READABLE);
            }
            let got = events
                .fill_epoll(|out, room| {
                    assert!(batch.len() <= room);
                    for (i, &t) in batch.iter().enumerate() {
                        let ev = if t == P {
                            libc::epoll_event {
                                events: libc::EPOLLHUP as u32,
                                u64: N,
                            }
                        } else {
                            libc::epoll_event {
                                events: libc::EPOLLIN as u32,
                                u64: t,
                            }
                        };
                        // SAFETY: `out` has room for `room >= batch.len()` events.
                        unsafe { out.add(i).write(ev) };
                    }
                    Ok(batch.len())
                })
                .unwrap();
            let tokens: Vec<u64> = events.iter().map(Event::token).collect();
            assert_eq!(
                (tokens.as_slice(), got),
                (want, notified),
                "{before:?} + {batch:?}"
            );
        }
    }

    #[test]
    fn every_ready_round_trips_through_an_event() {
        for bits in 0..=Ready::all().bits() {
            let ready = Ready::from_bits(bits).unwrap();
            let ev = Event::new(7, ready);
            assert_eq!((ev.token(), ev.ready()), (7, ready));
            assert_eq!(ev.is_readable(), ready.contains(Ready::READABLE));
            assert_eq!(ev.is_writable(), ready.contains(Ready::WRITABLE));
            assert_eq!(
                ev.is_error_or_hup(),
                ready.intersects(Ready::ERROR | Ready::HUP)
            );
        }
    }

    #[test]
    fn a_clone_keeps_the_capacity() {
        let mut events = Events::with_capacity(16);
        events.push(1, Ready::READABLE);
        let copy = events.clone();
        assert_eq!(copy.as_slice(), events.as_slice());
        assert!(copy.list.capacity() >= 16);
    }

    /// `to_ready`'s mask against the mapping spelled out flag by flag, for every combination
    /// of the flags epoll can report (and some it does not, which it must ignore).
    #[cfg(ioloop_has_epoll)]
    #[test]
    fn the_mask_maps_every_flag_combination() {
        let named = [
            (libc::EPOLLIN, Ready::READABLE),
            (libc::EPOLLOUT, Ready::WRITABLE),
            (libc::EPOLLERR, Ready::ERROR),
            (libc::EPOLLHUP, Ready::HUP),
            (libc::EPOLLRDHUP, Ready::HUP),
            (libc::EPOLLPRI, Ready::PRIORITY),
        ];
        let ignored = [
            libc::EPOLLRDNORM,
            libc::EPOLLRDBAND,
            libc::EPOLLWRNORM,
            libc::EPOLLWRBAND,
            libc::EPOLLMSG,
            0x20, // POLLNVAL's bit: epoll never sets it
            libc::EPOLLET,
            libc::EPOLLONESHOT,
        ];
        let all: Vec<libc::c_int> = named.iter().map(|&(f, _)| f).chain(ignored).collect();
        for combo in 0u32..(1 << all.len()) {
            let mut flags = 0;
            let mut want = Ready::empty();
            for (i, &f) in all.iter().enumerate() {
                if combo & (1 << i) != 0 {
                    flags |= f;
                    if let Some(&(_, r)) = named.get(i) {
                        want |= r;
                    }
                }
            }
            assert_eq!(epoll::to_ready(flags as u32), want, "flags {flags:#x}");
        }
    }

    #[cfg(ioloop_has_epoll)]
    #[test]
    fn kernel_flags_map_as_documented() {
        let ev = |flags: libc::c_int| {
            Event(libc::epoll_event {
                events: flags as u32,
                u64: 1,
            })
        };
        assert_eq!(ev(libc::EPOLLPRI).ready(), Ready::PRIORITY);
        assert_eq!(ev(libc::EPOLLRDHUP).ready(), Ready::HUP);
        assert_eq!(
            ev(libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLPRI)
                .ready(),
            Ready::all()
        );
        assert_eq!(ev(0).ready(), Ready::empty());
    }
}
