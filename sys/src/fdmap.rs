//! [`FdMap`]: the per-fd table of the backends that look registrations up by fd number
//! (io_uring, kqueue, and the poll/select registry).

use std::os::fd::RawFd;

/// A map from fd number to `T`, stored densely: slot `fd` of a vector. The kernel hands out
/// the lowest free fd numbers, so the vector stays about as long as the process's highest
/// registered fd, and a lookup is an index, not a hash or a search (std's `HashMap` hashes an
/// `i32` with SipHash: ~100 instructions per lookup, several lookups per event on io_uring).
/// The reactor's handler table and the task layer's source table are indexed by fd the
/// same way. The vector only grows (at `insert`), so steady-state use never allocates.
///
/// Keys are non-negative: the backends reject a negative fd before they get here
/// ([`crate::common::check_fd`]); a negative one is simply never found.
pub(crate) struct FdMap<T> {
    slots: Vec<Option<T>>,
}

impl<T> FdMap<T> {
    pub(crate) const fn new() -> Self {
        Self { slots: Vec::new() }
    }

    /// How many fds have an entry (a walk over every slot).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|v| v.is_some()).count()
    }

    pub(crate) fn contains_key(&self, fd: RawFd) -> bool {
        self.get(fd).is_some()
    }

    #[inline]
    pub(crate) fn get(&self, fd: RawFd) -> Option<&T> {
        self.slots.get(usize::try_from(fd).ok()?)?.as_ref()
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, fd: RawFd) -> Option<&mut T> {
        self.slots.get_mut(usize::try_from(fd).ok()?)?.as_mut()
    }

    /// Sets `fd`'s entry; returns the one it replaces.
    ///
    /// # Panics
    ///
    /// If `fd` is negative (the callers check it first).
    pub(crate) fn insert(&mut self, fd: RawFd, value: T) -> Option<T> {
        let i = usize::try_from(fd).expect("negative fd in FdMap::insert");
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i].replace(value)
    }

    /// The entries, by fd number (a walk over every slot: for cold paths).
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (RawFd, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i as RawFd, v.as_ref()?)))
    }

    /// The entries, mutably, by fd number (a walk over every slot: for cold paths).
    #[cfg(any(ioloop_has_uring, test))]
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (RawFd, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, v)| Some((i as RawFd, v.as_mut()?)))
    }

    /// Takes `fd`'s entry out.
    pub(crate) fn remove(&mut self, fd: RawFd) -> Option<T> {
        self.slots.get_mut(usize::try_from(fd).ok()?)?.take()
    }
}

#[cfg(test)]
mod tests {
    use super::FdMap;

    #[test]
    fn behaves_as_a_map() {
        let mut m = FdMap::new();
        assert_eq!(m.len(), 0);
        assert!(m.get(3).is_none() && m.get(-1).is_none() && !m.contains_key(1000));
        assert_eq!(m.insert(5, 'a'), None);
        assert_eq!(m.insert(2, 'b'), None);
        assert_eq!(m.insert(5, 'c'), Some('a'));
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(5), Some(&'c'));
        *m.get_mut(2).unwrap() = 'd';
        assert_eq!(m.get(2), Some(&'d'));
        assert!(m.get(3).is_none() && m.get_mut(4).is_none() && m.get(6).is_none());
        assert_eq!(m.remove(5), Some('c'));
        assert_eq!(m.remove(5), None);
        assert_eq!(m.remove(-7), None);
        assert_eq!(m.remove(99), None);
        assert_eq!(m.len(), 1);
        assert!(!m.contains_key(5) && m.contains_key(2));
        m.insert(0, 'e');
        for (_, v) in m.iter_mut() {
            *v = v.to_ascii_uppercase();
        }
        assert_eq!(m.iter().collect::<Vec<_>>(), [(0, &'E'), (2, &'D')]);
    }
}
