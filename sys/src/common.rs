//! What every backend shares: input checks, the deadline-driven wait loop, time conversions.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::{Events, Mode, RESERVED_TOKEN};

/// Checks the arguments of `register`/`modify`: fd, token, and whether the backend has `mode`.
pub(crate) fn check_registration(
    fd: RawFd,
    token: u64,
    mode: Mode,
    supported: bool,
) -> io::Result<()> {
    check_fd(fd)?;
    if token == RESERVED_TOKEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "token u64::MAX is reserved for the poller's notifier",
        ));
    }
    if !supported {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("this poller has no {mode:?} mode"),
        ));
    }
    Ok(())
}

/// Negative fds are `InvalidInput` on every backend (epoll would say `EBADF`, select would
/// corrupt memory).
pub(crate) fn check_fd(fd: RawFd) -> io::Result<()> {
    if fd < 0 {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("negative file descriptor {fd}"),
        ))
    } else {
        Ok(())
    }
}

/// `EBADF` unless `fd` is an open file descriptor of this process (`fcntl(F_GETFD)`, see
/// `fcntl(2)`). epoll reports a closed fd at registration; the table-keeping backends check
/// it here to report the same.
pub(crate) fn check_open(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD takes only integer arguments; an fd that is not open yields EBADF.
    crate::syscall::cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    Ok(())
}

pub(crate) fn not_found(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("fd {fd} is not registered with this poller"),
    )
}

pub(crate) fn already_exists(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("fd {fd} is already registered with this poller"),
    )
}

/// What one backend system call produced.
pub(crate) struct Round {
    /// The notifier fired (its wake-up was consumed).
    pub(crate) notified: bool,
}

/// The wait loop every backend uses: clears `events`, calls `once` with the time left until
/// the deadline (`None`: no limit), retries on `EINTR` and on rounds that produced nothing
/// before the deadline (so a wait never ends early), and returns the number of events.
///
/// `once` must block at most the time it is given and must not clear `events`.
#[inline]
pub(crate) fn wait_loop(
    events: &mut Events,
    timeout: Option<Duration>,
    mut once: impl FnMut(&mut Events, Option<Duration>) -> io::Result<Round>,
) -> io::Result<usize> {
    events.clear();
    if timeout.is_none() {
        // No deadline, so no clock reads: only EINTR and empty rounds to retry. Inlined
        // into the backend's `wait`: this is the hot path of a busy loop.
        loop {
            match once(events, None) {
                Ok(round) if round.notified || !events.is_empty() => return Ok(events.len()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    wait_loop_timed(events, timeout, once)
}

/// [`wait_loop`] with a timeout: the deadline arithmetic, kept out of line.
#[inline(never)]
fn wait_loop_timed(
    events: &mut Events,
    timeout: Option<Duration>,
    mut once: impl FnMut(&mut Events, Option<Duration>) -> io::Result<Round>,
) -> io::Result<usize> {
    // A timeout too large for `Instant` is the same as none.
    let deadline = match timeout {
        Some(t) if !t.is_zero() => Instant::now().checked_add(t),
        _ => None,
    };
    let mut left = match (timeout, deadline) {
        (Some(t), _) if t.is_zero() => Some(Duration::ZERO),
        (_, Some(d)) => Some(d.saturating_duration_since(Instant::now())),
        _ => None,
    };
    loop {
        match once(events, left) {
            Ok(round) => {
                if round.notified || !events.is_empty() || left == Some(Duration::ZERO) {
                    return Ok(events.len());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if let Some(d) = deadline {
            let now = Instant::now();
            if now >= d {
                return Ok(events.len());
            }
            left = Some(d - now);
        }
    }
}

/// `struct __kernel_timespec`: 64-bit fields on every target, unlike `libc::timespec`, whose
/// `time_t` is 32 bits on 32-bit glibc targets. What `epoll_pwait2(2)` and io_uring read.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KernelTimespec {
    pub(crate) tv_sec: i64,
    pub(crate) tv_nsec: i64,
}

/// The kernel's `long` (`__kernel_long_t`): the `long` of the ABI, except on x32, whose
/// 32-bit `long` is not the 64-bit one of the (x86-64) system calls it makes.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(all(target_arch = "x86_64", target_pointer_width = "32"))
))]
type KernelLong = libc::c_long;
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    target_arch = "x86_64",
    target_pointer_width = "32"
))]
type KernelLong = i64;

/// The timespec of the Linux system calls that predate the 64-bit-time ones (`ppoll`,
/// `pselect6`): `struct __kernel_old_timespec`, two kernel `long`s ([`KernelLong`]: 64 bits
/// each on 64-bit architectures and x32, 32 on the other 32-bit ones), whatever `time_t`
/// libc was built with.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct OldTimespec {
    pub(crate) tv_sec: KernelLong,
    pub(crate) tv_nsec: KernelLong,
}

/// `d` as an [`OldTimespec`] (seconds past `KernelLong::MAX` saturate: a relative timeout).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn old_timespec(d: Duration) -> OldTimespec {
    OldTimespec {
        tv_sec: KernelLong::try_from(d.as_secs()).unwrap_or(KernelLong::MAX),
        // `subsec_nanos() < 10^9` fits every `KernelLong`.
        tv_nsec: d.subsec_nanos() as KernelLong,
    }
}

/// `d` as a [`KernelTimespec`] (seconds past `i64::MAX` saturate).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn kernel_timespec(d: Duration) -> KernelTimespec {
    KernelTimespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// A pointer to an optional `timespec`, null for `None` (no limit), as the `ppoll`/`pselect`/
/// `kevent` family takes it. The pointer is valid while `ts` is.
#[allow(dead_code)]
pub(crate) fn timespec_ptr(ts: &Option<libc::timespec>) -> *const libc::timespec {
    ts.as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec)
}

/// The timeout argument of the raw `ppoll`/`pselect6` system calls, which write the time
/// left back into it (glibc's wrappers hand them a copy): null for no limit, else a pointer
/// that may be written through while `ts` is borrowed.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn old_timespec_mut_ptr(ts: &mut Option<OldTimespec>) -> *mut OldTimespec {
    ts.as_mut()
        .map_or(std::ptr::null_mut(), |t| t as *mut OldTimespec)
}

/// A duration as a `timespec` (seconds saturate at `time_t::MAX`).
#[allow(dead_code)]
#[allow(deprecated)] // musl deprecates the `time_t` alias (64-bit change), not the field type
pub(crate) fn timespec(d: Duration) -> libc::timespec {
    // SAFETY: timespec is plain data; all-zero is a valid value, and it hides the private
    // padding fields some targets (musl, 32-bit) have.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    ts.tv_sec = libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX);
    // `subsec_nanos() < 10^9` fits every target's `c_long`.
    ts.tv_nsec = d.subsec_nanos() as _;
    ts
}

/// A duration as whole milliseconds for `epoll_wait`/`poll`: rounded *up* so a wait never
/// ends early (mio's poll selector does the same), capped at `c_int::MAX`; `None` is -1.
#[allow(dead_code)]
pub(crate) fn millis_round_up(d: Option<Duration>) -> libc::c_int {
    match d {
        None => -1,
        Some(d) => {
            let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    }
}

/// The IPv4 or IPv6 address in `storage` (`len` bytes of it filled by the kernel, as by
/// `accept`), as std's type; `InvalidInput` for another family or a short length.
pub(crate) fn socket_addr(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> io::Result<std::net::SocketAddr> {
    use std::mem::size_of;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, whose size and
            // alignment `sockaddr_storage` covers, and `len` says the kernel filled it.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Ok(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Ok(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        family => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an IPv4 or IPv6 address (family {family}, {len} bytes)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_up_never_shortens() {
        assert_eq!(millis_round_up(None), -1);
        assert_eq!(millis_round_up(Some(Duration::ZERO)), 0);
        assert_eq!(millis_round_up(Some(Duration::from_nanos(1))), 1);
        assert_eq!(millis_round_up(Some(Duration::from_micros(1500))), 2);
        assert_eq!(millis_round_up(Some(Duration::from_millis(7))), 7);
        assert_eq!(millis_round_up(Some(Duration::MAX)), libc::c_int::MAX);
    }

    #[test]
    #[allow(deprecated)] // see `timespec`
    fn timespec_saturates() {
        let ts = timespec(Duration::MAX);
        assert_eq!(ts.tv_sec, libc::time_t::MAX);
        let ts = timespec(Duration::new(3, 5));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (3, 5));
    }

    #[test]
    fn bad_input_kinds() {
        assert_eq!(
            check_registration(-1, 0, Mode::Level, true)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            check_registration(0, RESERVED_TOKEN, Mode::Level, true)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            check_registration(0, 1, Mode::Edge, false)
                .unwrap_err()
                .kind(),
            io::ErrorKind::Unsupported
        );
    }

    #[test]
    fn socket_addr_refuses_other_families() {
        // SAFETY: all-zero bytes are a valid `sockaddr_storage`.
        let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        st.ss_family = libc::AF_UNIX as libc::sa_family_t;
        let err = super::socket_addr(&st, 16).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        st.ss_family = libc::AF_INET as libc::sa_family_t;
        let err = super::socket_addr(&st, 4).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "short length");
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let ok = super::socket_addr(&st, len).unwrap();
        assert_eq!(ok, "0.0.0.0:0".parse().unwrap());
    }
}
