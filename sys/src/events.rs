//! The reusable events buffer.

use crate::Ready;

/// One readiness report: the token given at registration and what is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    token: u64,
    ready: Ready,
}

impl Event {
    /// Builds an event (handy in tests and for backends outside this crate).
    pub const fn new(token: u64, ready: Ready) -> Self {
        Self { token, ready }
    }

    /// The token the fd was registered with.
    pub const fn token(&self) -> u64 {
        self.token
    }

    /// What is ready.
    pub const fn ready(&self) -> Ready {
        self.ready
    }

    /// Shorthand for `ready().contains(Ready::READABLE)`.
    pub const fn is_readable(&self) -> bool {
        self.ready.contains(Ready::READABLE)
    }

    /// Shorthand for `ready().contains(Ready::WRITABLE)`.
    pub const fn is_writable(&self) -> bool {
        self.ready.contains(Ready::WRITABLE)
    }

    /// Shorthand for `ready().intersects(Ready::ERROR | Ready::HUP)`.
    pub const fn is_error_or_hup(&self) -> bool {
        self.ready.intersects(Ready::ERROR.union(Ready::HUP))
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
#[derive(Clone)]
pub struct Events {
    list: Vec<Event>,
    cap: usize,
    /// The epoll backend's kernel output array, kept here rather than in the poller so that a
    /// wait (which has `&mut Events`) needs no lock to reuse it. Empty until an epoll wait.
    #[cfg(ioloop_has_epoll)]
    pub(crate) raw_epoll: Vec<libc::epoll_event>,
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
            #[cfg(ioloop_has_epoll)]
            raw_epoll: Vec::new(),
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
        self.list.push(Event { token, ready });
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
