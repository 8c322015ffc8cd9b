//! The registration table the poll and select backends share.
//!
//! poll(2) and select(2) keep no state in the kernel: every wait hands the kernel the whole
//! set of fds again. So these backends keep the registrations here (fd → token, interest, mode,
//! armed), build the kernel's set from them at the start of each round, and map the results
//! back through this table afterwards.
//!
//! Cross-thread changes: the table is locked only while a round builds its set and while it
//! maps the results, never during the system call. A `register`/`modify`/`deregister` made
//! while a round is blocked in the kernel wakes it through a second, internal notifier (the
//! `changed` receiver); that wake-up is not the user's notify, so [`common::wait_loop`] simply
//! runs another round with the new set, within the same deadline. The two notifiers share
//! one file (`changed` writes to a duplicate of the user's fd, with a flag of its own), so a
//! round watches one fd for both: every fd in the set costs the kernel a wait-queue entry per
//! round, and the waker bench measured the second one. Every registration carries
//! a generation, so a result for an fd whose registration changed during the system call is
//! dropped instead of being reported with a stale token or to a disarmed oneshot.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::common::{self, Round};
use crate::fdmap::FdMap;
use crate::notify::Receiver;
use crate::{Events, Interest, Mode, Notifier, Ready};

/// The generation of the slot that watches the notifiers' fd.
const WAKE: u64 = 0;
/// The first generation a registration gets.
const FIRST_GEN: u64 = 1;

/// The longest one system call blocks. macOS `select` fails with `EINVAL` beyond 10^8 s and
/// other systems have similar limits; [`common::wait_loop`] starts another round when a round
/// ends with nothing, so capping a round never ends a wait early.
const MAX_ROUND: Duration = Duration::from_secs(24 * 60 * 60);

/// One registration.
#[derive(Debug, Clone, Copy)]
struct Entry {
    token: u64,
    interest: Interest,
    mode: Mode,
    /// False once a [`Mode::Oneshot`] registration has reported, until `modify`.
    armed: bool,
    /// Changes on every `register`/`modify`; results for an older generation are dropped.
    gen: u64,
    /// Where the fd is in [`Table::fds`].
    index: usize,
}

struct Table {
    /// fd -> registration: an index, not a search, for the lookups every re-arm and every
    /// reported fd make (a `BTreeMap` here took ~640 instructions per event on a fan-in of
    /// 1 000 sockets: callgrind).
    entries: FdMap<Entry>,
    /// The registered fds, in no particular order (each entry knows its place): what a round
    /// walks, so that it costs the registrations' count, however sparse their numbers.
    fds: Vec<RawFd>,
    next_gen: u64,
    /// A round has built its set from this table and may be blocked in the kernel: changes
    /// must wake it.
    waiting: bool,
}

/// Registrations plus the two notifiers (the user's, and the internal "table changed" one),
/// which wake through one fd.
pub(crate) struct Registry {
    table: Mutex<Table>,
    /// The user's notifier; its wake-up ends the wait.
    user: Receiver,
    /// Woken when the table changes during a round; its wake-up only restarts the round.
    changed: Receiver,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.lock();
        f.debug_struct("Registry")
            .field("registered", &table.fds.len())
            .field("wake_fd", &self.wake_fd())
            .finish()
    }
}

impl Registry {
    /// An empty table and two notifiers on one fd.
    pub(crate) fn new() -> io::Result<Self> {
        let user = Receiver::new_fd()?;
        let changed = user.sharing()?;
        Ok(Self {
            table: Mutex::new(Table {
                entries: FdMap::new(),
                fds: Vec::new(),
                next_gen: FIRST_GEN,
                waiting: false,
            }),
            user,
            changed,
        })
    }

    /// The fd both notifiers wake, which every round watches.
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.user.fd().expect("fd-based notifier")
    }

    /// Whether `fd` is one of the notifiers' own (the watched fd or the duplicate `changed`
    /// writes to): never the user's to register.
    fn is_wake_fd(&self, fd: RawFd) -> bool {
        fd == self.wake_fd() || Some(fd) == self.changed.fd()
    }

    /// The user's notifier.
    pub(crate) fn notifier(&self) -> &Notifier {
        self.user.notifier()
    }

    /// Adds `fd`; `supported` says whether the backend has `mode`.
    pub(crate) fn register(
        &self,
        fd: RawFd,
        token: u64,
        interest: Interest,
        mode: Mode,
        supported: bool,
    ) -> io::Result<()> {
        common::check_registration(fd, token, mode, supported)?;
        common::check_open(fd)?;
        let mut table = self.lock();
        if table.entries.contains_key(fd) || self.is_wake_fd(fd) {
            return Err(common::already_exists(fd));
        }
        self.wake_round(&table)?;
        let gen = next_gen(&mut table);
        let index = table.fds.len();
        table.fds.push(fd);
        table.entries.insert(
            fd,
            Entry {
                token,
                interest,
                mode,
                armed: true,
                gen,
                index,
            },
        );
        Ok(())
    }

    /// Replaces the registration of `fd` and re-arms it.
    pub(crate) fn modify(
        &self,
        fd: RawFd,
        token: u64,
        interest: Interest,
        mode: Mode,
        supported: bool,
    ) -> io::Result<()> {
        common::check_registration(fd, token, mode, supported)?;
        let mut table = self.lock();
        // Not registered: `NotFound`, whether or not the number is open, as on epoll. A
        // registered fd closed since is not checked for here: that would be a system call
        // (`fcntl`) on every re-arm of a Oneshot registration, which is all this call does
        // otherwise, and the task layer re-arms once per wait (measured: ~300 ns per event
        // on a fan-in of 1 000 sockets). The next wait reports such an fd as `ERROR`, as it
        // does one closed while armed.
        if !table.entries.contains_key(fd) {
            return Err(common::not_found(fd));
        }
        self.wake_round(&table)?;
        let gen = next_gen(&mut table);
        let entry = table.entries.get_mut(fd).expect("checked above");
        *entry = Entry {
            token,
            interest,
            mode,
            armed: true,
            gen,
            index: entry.index,
        };
        Ok(())
    }

    /// Removes `fd`. The fd need not be open any more: a reactor drops an fd reported as
    /// [`Ready::ERROR`] (closed behind the poller's back) this way.
    pub(crate) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        common::check_fd(fd)?;
        let mut table = self.lock();
        if !table.entries.contains_key(fd) {
            return Err(common::not_found(fd));
        }
        self.wake_round(&table)?;
        let index = table.entries.remove(fd).expect("checked above").index;
        table.fds.swap_remove(index);
        // The fd that took its place, if any, now lives there.
        if let Some(&moved) = table.fds.get(index) {
            table.entries.get_mut(moved).expect("a registered fd").index = index;
        }
        Ok(())
    }

    /// Starts a round: calls `add(fd, interest, slot)` for the notifiers' fd (first) and then
    /// for every armed registration (in no particular order), and marks the round as waiting. `slot` is an opaque tag to hand back to [`InRound::finish`].
    ///
    /// The returned guard clears the waiting mark when dropped or finished.
    pub(crate) fn begin_round(
        &self,
        mut add: impl FnMut(RawFd, Interest, u64) -> io::Result<()>,
    ) -> io::Result<InRound<'_>> {
        let mut table = self.lock();
        add(self.wake_fd(), Interest::READABLE, WAKE)?;
        for &fd in &table.fds {
            let e = table.entries.get(fd).expect("a registered fd");
            if e.armed {
                add(fd, e.interest, e.gen)?;
            }
        }
        table.waiting = true;
        Ok(InRound {
            registry: self,
            done: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding the lock with the table half-changed.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the round in progress, if any, so that it rebuilds its set. Called with the table
    /// locked and before the change is applied: on error nothing changes, and the woken round
    /// cannot map its results before the change is in (it needs the lock).
    fn wake_round(&self, table: &Table) -> io::Result<()> {
        if table.waiting {
            self.changed.notifier().notify()?;
        }
        Ok(())
    }
}

/// A round in progress (between [`Registry::begin_round`] and the end of its system call).
pub(crate) struct InRound<'a> {
    registry: &'a Registry,
    done: bool,
}

impl InRound<'_> {
    /// Ends the round and maps its results into `events`.
    ///
    /// `slot(i)` gives `(fd, slot tag, ready)` for the `i`-th fd that `begin_round` added, for
    /// `i < n` (`n` 0 when the system call reported nothing). The notifiers' slot is consumed
    /// whatever room `events` has; registrations are reported while there is room, skipping
    /// those whose registration changed during the system call, and disarming oneshots.
    /// `cursor` rotates where reporting starts, so that when `events` fills up the fds left
    /// out come first next time.
    pub(crate) fn finish(
        mut self,
        events: &mut Events,
        cursor: &mut usize,
        n: usize,
        mut slot: impl FnMut(usize) -> (RawFd, u64, Ready),
    ) -> Round {
        self.done = true;
        let reg = self.registry;
        let mut table = reg.lock();
        table.waiting = false;
        let mut round = Round { notified: false };
        let wakes = n.min(1);
        if wakes == 1 {
            let (_, tag, ready) = slot(0);
            debug_assert_eq!(tag, WAKE, "the notifiers' slot comes first");
            if !ready.is_empty() {
                round.notified = reg.user.reset_shared(&reg.changed);
            }
        }
        let m = n - wakes;
        if m == 0 {
            return round;
        }
        let start = *cursor % m;
        for k in 0..m {
            let j = (start + k) % m;
            let (fd, gen, ready) = slot(wakes + j);
            if ready.is_empty() {
                continue;
            }
            let Some(e) = table.entries.get_mut(fd) else {
                continue;
            };
            if e.gen != gen || !e.armed {
                continue;
            }
            if events.remaining() == 0 {
                *cursor = j;
                break;
            }
            events.push(e.token, ready);
            if e.mode == Mode::Oneshot {
                e.armed = false;
            }
        }
        round
    }
}

impl Drop for InRound<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.registry.lock().waiting = false;
        }
    }
}

fn next_gen(table: &mut Table) -> u64 {
    let gen = table.next_gen;
    // 2^64 changes do not happen; wrapping past the notifier tags would only drop one result.
    table.next_gen = table.next_gen.wrapping_add(1).max(FIRST_GEN);
    gen
}

/// The time one round may block: `left`, capped at [`MAX_ROUND`].
pub(crate) fn round_timeout(left: Option<Duration>) -> Option<Duration> {
    left.map(|d| d.min(MAX_ROUND))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The fds a round watches besides the notifiers', sorted.
    fn round_fds(reg: &Registry) -> Vec<RawFd> {
        let mut fds = Vec::new();
        let round = reg
            .begin_round(|fd, _, tag| {
                if tag != WAKE {
                    fds.push(fd);
                }
                Ok(())
            })
            .unwrap();
        drop(round);
        fds.sort_unstable();
        fds
    }

    /// Removing a registration moves the last one into its place in the round's list: each
    /// fd stays watched exactly once, and the moved one can still be changed and removed.
    #[test]
    fn removal_keeps_the_round_list_whole() {
        let reg = Registry::new().unwrap();
        let socks: Vec<_> = (0..4)
            .map(|_| std::os::unix::net::UnixStream::pair().unwrap().0)
            .collect();
        let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
        for (i, &fd) in fds.iter().enumerate() {
            reg.register(fd, i as u64, Interest::READABLE, Mode::Level, true)
                .unwrap();
        }
        let mut want = fds.clone();
        want.sort_unstable();
        assert_eq!(round_fds(&reg), want);
        // The first goes; the last takes its place.
        reg.deregister(fds[0]).unwrap();
        want.retain(|&f| f != fds[0]);
        assert_eq!(round_fds(&reg), want);
        reg.modify(fds[3], 9, Interest::WRITABLE, Mode::Oneshot, true)
            .unwrap();
        assert_eq!(round_fds(&reg), want);
        reg.deregister(fds[3]).unwrap();
        want.retain(|&f| f != fds[3]);
        assert_eq!(round_fds(&reg), want);
        assert_eq!(
            reg.deregister(fds[3]).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // The list is [fds[2], fds[1]] now: the last one goes (nothing moves), then the
        // only one.
        reg.deregister(fds[1]).unwrap();
        assert_eq!(round_fds(&reg), vec![fds[2]]);
        reg.deregister(fds[2]).unwrap();
        assert_eq!(round_fds(&reg), Vec::<RawFd>::new());
        reg.register(fds[2], 1, Interest::READABLE, Mode::Level, true)
            .unwrap();
        assert_eq!(round_fds(&reg), vec![fds[2]]);
    }
}
