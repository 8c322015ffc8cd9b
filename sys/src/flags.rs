//! Interest, readiness and registration modes.

use bitflags::bitflags;

bitflags! {
    /// What a registration waits for.
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop_sys::Interest;
    /// let both = Interest::READABLE | Interest::WRITABLE;
    /// assert!(both.contains(Interest::WRITABLE));
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Interest: u8 {
        /// Wake when the fd can be read without blocking (or has hit end of file).
        const READABLE = 0b01;
        /// Wake when the fd can be written without blocking.
        const WRITABLE = 0b10;
        /// Wake when the fd has priority data: TCP or (Linux 5.15+) Unix stream out-of-band
        /// data (`MSG_OOB`), a changed sysfs attribute or cgroup file, a mount table that
        /// changed. Reported as [`Ready::PRIORITY`]. `EPOLLPRI`/`POLLPRI`, or select's
        /// exception set; on io_uring it can be spurious (see
        /// [`Poller::priority_exact`](crate::Poller::priority_exact)); kqueue has no such
        /// filter, and its `register`/`modify` refuse this flag with
        /// [`ErrorKind::Unsupported`](std::io::ErrorKind::Unsupported), as poll's do on
        /// Apple's systems (see [`Poll`](crate::Poll)).
        const PRIORITY = 0b100;
    }
}

bitflags! {
    /// What a reported event says about its fd.
    ///
    /// How each backend's native flags map onto these:
    ///
    /// | flag | epoll | kqueue | io_uring | poll | select |
    /// |---|---|---|---|---|---|
    /// | `READABLE` | `EPOLLIN` | `EVFILT_READ` | `POLLIN` | `POLLIN` | in the read set |
    /// | `WRITABLE` | `EPOLLOUT` | `EVFILT_WRITE` | `POLLOUT` | `POLLOUT` | in the write set |
    /// | `ERROR` | `EPOLLERR` | `EV_ERROR`, or `EV_EOF` with `fflags` set | `POLLERR`, `POLLNVAL` | `POLLERR`, `POLLNVAL` | `EBADF` (fd closed behind the poller's back) |
    /// | `HUP` | `EPOLLHUP`, `EPOLLRDHUP` | `EV_EOF` | `POLLHUP`, `POLLRDHUP` | `POLLHUP` (`POLLRDHUP` on Linux) | never: a closed peer shows as `READABLE` with `read` returning 0 |
    /// | `PRIORITY` | `EPOLLPRI` | never (see [`Interest::PRIORITY`]) | `POLLPRI` | `POLLPRI` | in the exception set |
    ///
    /// kqueue reports reading and writing as separate events; the kqueue backend merges the two
    /// for one fd when they arrive in the same wait, so one event per fd is the rule everywhere.
    /// `ERROR` and `HUP` are reported whatever the interest was; `PRIORITY` only to a
    /// registration with [`Interest::PRIORITY`].
    ///
    /// The bits are the values of Linux's `POLLIN`, `POLLPRI`, `POLLOUT`, `POLLERR` and
    /// `POLLHUP` (and of the `EPOLL*` flags of the same names), so the epoll backend turns the
    /// kernel's flags into a `Ready` with a mask.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Ready: u8 {
        /// The fd can be read (or is at end of file).
        const READABLE = 0x01;
        /// The fd can be written.
        const WRITABLE = 0x04;
        /// An error condition is pending on the fd (or the fd is no longer open).
        const ERROR = 0x08;
        /// The peer hung up (both directions, or its write side).
        const HUP = 0x10;
        /// Priority data is pending (see [`Interest::PRIORITY`]). For a TCP socket: urgent
        /// data was received and a read stops at its mark.
        const PRIORITY = 0x02;
    }
}

/// How a registration reports readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Report on every wait for as long as the fd is ready (Tornado's and select's meaning).
    #[default]
    Level,
    /// Report once, then stay disarmed until [`Poller::modify`](crate::Poller::modify) re-arms
    /// the fd. poll and select emulate this by disarming the fd after a report.
    Oneshot,
    /// Report when readiness changes (`EPOLLET`, `EV_CLEAR`, io_uring's multishot poll);
    /// on epoll, kqueue and io_uring (Linux 5.13+), see
    /// [`Poller::supports`](crate::Poller::supports).
    Edge,
}
