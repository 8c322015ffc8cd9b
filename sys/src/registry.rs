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
//! runs another round with the new set, within the same deadline. Every registration carries
//! a generation, so a result for an fd whose registration changed during the system call is
//! dropped instead of being reported with a stale token or to a disarmed oneshot.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::common::{self, Round};
use crate::notify::Receiver;
use crate::{Events, Interest, Mode, Notifier, Ready};

/// The generation of the slot that watches the user's notifier.
const USER_WAKE: u64 = 0;
/// The generation of the slot that watches the internal "table changed" notifier.
const TABLE_WAKE: u64 = 1;
/// The first generation a registration gets.
const FIRST_GEN: u64 = 2;

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
}

#[derive(Debug)]
struct Table {
    entries: BTreeMap<RawFd, Entry>,
    next_gen: u64,
    /// A round has built its set from this table and may be blocked in the kernel: changes
    /// must wake it.
    waiting: bool,
}

/// Registrations plus the two notifiers (the user's, and the internal "table changed" one).
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
            .field("registered", &table.entries.len())
            .field("wake_fds", &self.wake_fds())
            .finish()
    }
}

impl Registry {
    /// An empty table and two fd-based notifiers.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            table: Mutex::new(Table {
                entries: BTreeMap::new(),
                next_gen: FIRST_GEN,
                waiting: false,
            }),
            user: Receiver::new_fd()?,
            changed: Receiver::new_fd()?,
        })
    }

    /// The fds of the user's and of the internal notifier, which every round watches.
    pub(crate) fn wake_fds(&self) -> [RawFd; 2] {
        [
            self.user.fd().expect("fd-based notifier"),
            self.changed.fd().expect("fd-based notifier"),
        ]
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
        if table.entries.contains_key(&fd) || self.wake_fds().contains(&fd) {
            return Err(common::already_exists(fd));
        }
        self.wake_round(&table)?;
        let gen = next_gen(&mut table);
        table.entries.insert(
            fd,
            Entry {
                token,
                interest,
                mode,
                armed: true,
                gen,
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
        common::check_open(fd)?;
        let mut table = self.lock();
        if !table.entries.contains_key(&fd) {
            return Err(common::not_found(fd));
        }
        self.wake_round(&table)?;
        let gen = next_gen(&mut table);
        let entry = table.entries.get_mut(&fd).expect("checked above");
        *entry = Entry {
            token,
            interest,
            mode,
            armed: true,
            gen,
        };
        Ok(())
    }

    /// Removes `fd`. The fd need not be open any more: a reactor drops an fd reported as
    /// [`Ready::ERROR`] (closed behind the poller's back) this way.
    pub(crate) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        common::check_fd(fd)?;
        let mut table = self.lock();
        if !table.entries.contains_key(&fd) {
            return Err(common::not_found(fd));
        }
        self.wake_round(&table)?;
        table.entries.remove(&fd);
        Ok(())
    }

    /// Starts a round: calls `add(fd, interest, slot)` for the two notifier fds (first, in that
    /// order) and then for every armed registration, in fd order, and marks the round as
    /// waiting. `slot` is an opaque tag to hand back to [`InRound::finish`].
    ///
    /// The returned guard clears the waiting mark when dropped or finished.
    pub(crate) fn begin_round(
        &self,
        mut add: impl FnMut(RawFd, Interest, u64) -> io::Result<()>,
    ) -> io::Result<InRound<'_>> {
        let mut table = self.lock();
        let [user, changed] = self.wake_fds();
        add(user, Interest::READABLE, USER_WAKE)?;
        add(changed, Interest::READABLE, TABLE_WAKE)?;
        for (&fd, e) in table.entries.iter().filter(|(_, e)| e.armed) {
            add(fd, e.interest, e.gen)?;
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
    /// `i < n` (`n` 0 when the system call reported nothing). The notifier slots are consumed
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
        let wakes = n.min(2);
        for i in 0..wakes {
            let (_, tag, ready) = slot(i);
            if ready.is_empty() {
                continue;
            }
            match tag {
                USER_WAKE => {
                    reg.user.reset();
                    round.notified = true;
                }
                TABLE_WAKE => reg.changed.reset(),
                _ => debug_assert!(false, "the notifier slots come first"),
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
            let Some(e) = table.entries.get_mut(&fd) else {
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
