//! The one wrapper every raw system call of the workspace goes through.
//!
//! `unsafe` and its `// SAFETY:` line stay at each call site; these helpers only turn the C
//! convention (-1 and `errno`) into [`io::Result`], and retry `EINTR` where that is right.

use std::io;

/// Return types whose -1 means failure.
pub(crate) trait MinusOne: Copy + PartialEq {
    const MINUS_ONE: Self;
}

macro_rules! minus_one {
    ($($t:ty)*) => { $(impl MinusOne for $t { const MINUS_ONE: Self = -1; })* };
}
minus_one!(i32 i64 isize);

/// Turns `-1` into the `errno` error, passes any other value through.
/// Like nix's `Errno::result`; see `errno(3)`.
#[inline]
pub(crate) fn cvt<T: MinusOne>(ret: T) -> io::Result<T> {
    if ret == T::MINUS_ONE {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Runs `f` until it does not fail with `EINTR`. Right for calls that have no timeout and
/// make no partial progress (`epoll_ctl`, `read` of an eventfd, `close` is *not* one of them).
#[inline]
pub(crate) fn cvt_retry<T: MinusOne>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
