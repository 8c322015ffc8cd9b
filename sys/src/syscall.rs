//! The one wrapper every raw system call of the workspace goes through.
//!
//! `unsafe` and its `// SAFETY:` line stay at each call site; these helpers only turn the C
//! convention (-1 and `errno`) into [`io::Result`], and retry `EINTR` where that is right.
//! On Linux, [`syscall6`] makes a raw system call (the instruction inlined where the
//! workspace knows the architecture's convention) and returns the same `io::Result`.

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
#[cfg_attr(not(ioloop_has_kqueue), allow(dead_code))] // kqueue's change lists use it
pub(crate) fn cvt_retry<T: MinusOne>(mut f: impl FnMut() -> T) -> io::Result<T> {
    retry(|| cvt(f()))
}

/// [`cvt_retry`] for a call that already returns `io::Result` (such as [`syscall6`]).
#[inline]
pub(crate) fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// One system call, `nr` with up to six arguments (unused ones 0), as `io::Result`: the
/// kernel's `-errno` or -1 and `errno` become the error. No `EINTR` retry (wrap it in
/// [`retry`] where that is right).
///
/// Linux and Android only. On x86_64 and aarch64 (64-bit pointers: not x32 or ILP32) the
/// `syscall`/`svc` instruction is inlined into the caller ([`raw`]); on the other
/// architectures this is `libc::syscall`. Why: a `ret` that unwinds across a system
/// call can be costly. On CPUs whose kernel refills the return-stack predictor on the way
/// out (AMD's SRSO "safe RET" mitigation, common on cloud VMs) the first such `ret` cost
/// ~46 ns on the machine of BENCHMARKS.md, libc's own wrapper's `ret` included; inlined into
/// a loop that waits (the reactor's), no frame unwinds across the call at all.
///
/// # Safety
///
/// As for the system call `nr` with these arguments: pointers valid for what it reads and
/// writes, fds it may use.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline(always)]
pub(crate) unsafe fn syscall6(nr: libc::c_long, args: [usize; 6]) -> io::Result<usize> {
    #[cfg(all(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        target_pointer_width = "64"
    ))]
    {
        // SAFETY: the caller's contract.
        let ret = unsafe { raw(nr, args) };
        if (-4095..0).contains(&ret) {
            Err(io::Error::from_raw_os_error(-ret as i32))
        } else {
            Ok(ret as usize)
        }
    }
    #[cfg(not(all(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        target_pointer_width = "64"
    )))]
    {
        let [a, b, c, d, e, f] = args;
        // SAFETY: the caller's contract; `syscall(2)` passes the six words through.
        cvt(unsafe { libc::syscall(nr, a, b, c, d, e, f) }).map(|r| r as usize)
    }
}

/// The raw system call of [`syscall6`]: the kernel's result, `-errno` on failure.
///
/// # Safety
///
/// As for [`syscall6`].
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_pointer_width = "64"
))]
#[inline(always)]
unsafe fn raw(nr: libc::c_long, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: x86_64: the Linux convention is the number in rax, the arguments in rdi, rsi,
    // rdx, r10, r8, r9, the result in rax; the kernel clobbers rcx and r11 and no other
    // register, uses no user stack, and restores RFLAGS (saved in r11) on return.
    // Memory (no `nomem`: the kernel may read and write it) is the caller's contract.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, preserves_flags),
        );
    }
    // SAFETY: aarch64: the number in x8, the arguments in x0-x5, the result in x0; `svc 0`
    // preserves every other general register and NZCV (restored from SPSR) and uses no user
    // stack. (It zeroes SVE state above the low 128 bits, which this crate never keeps
    // live: it is not built with `+sve`.) Memory is the caller's contract.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") args[0] as isize => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            in("x5") args[5],
            options(nostack, preserves_flags),
        );
    }
    ret
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::syscall6;
    use std::io;

    #[test]
    fn results_and_errors_come_back_as_libc_gives_them() {
        // SAFETY: getpid takes no arguments and cannot fail.
        let pid = unsafe { syscall6(libc::SYS_getpid, [0; 6]) }.unwrap();
        assert_eq!(pid, std::process::id() as usize);
        // fd -1, passed sign-extended as callers do: the kernel reads the low 32 bits.
        let bad = -1i32 as usize;
        // SAFETY: F_GETFD takes no pointer; fd -1 is not open.
        let err = unsafe { syscall6(libc::SYS_fcntl, [bad, libc::F_GETFD as usize, 0, 0, 0, 0]) }
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        // SAFETY: as above.
        let errno = unsafe { libc::fcntl(-1, libc::F_GETFD) };
        assert_eq!(errno, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn pointer_arguments_reach_the_kernel() {
        let mut fds = [0 as libc::c_int; 2];
        let args = [
            fds.as_mut_ptr() as usize,
            libc::O_CLOEXEC as usize,
            0,
            0,
            0,
            0,
        ];
        // SAFETY: pipe2 writes two ints to a live, writable array of two.
        unsafe { syscall6(libc::SYS_pipe2, args) }.unwrap();
        let msg = *b"ok";
        let w = [fds[1] as usize, msg.as_ptr() as usize, msg.len(), 0, 0, 0];
        // SAFETY: `msg` is live and readable for its length; fds[1] is the pipe's write end.
        assert_eq!(unsafe { syscall6(libc::SYS_write, w) }.unwrap(), 2);
        let mut buf = [0u8; 4];
        let r = [
            fds[0] as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
            0,
            0,
            0,
        ];
        // SAFETY: `buf` is live and writable for its length; fds[0] is the read end.
        assert_eq!(unsafe { syscall6(libc::SYS_read, r) }.unwrap(), 2);
        assert_eq!(&buf[..2], b"ok");
        for fd in fds {
            // SAFETY: both ends were opened above and are closed once.
            unsafe { libc::close(fd) };
        }
    }
}
