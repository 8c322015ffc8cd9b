//! Helpers shared by the integration tests: the per-backend test macro and small utilities.
#![allow(dead_code, unused_macros, unused_imports)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ioloop_sys::{Event, Events, Interest, Mode, Poller, Ready};

/// Runs each generic test `fn name<P: Poller>()` once per backend this OS has:
/// generates `mod epoll { #[test] fn name() }`, `mod poll { .. }`, and so on.
///
/// ```ignore
/// fn reads<P: Poller>() { let p = util::poller::<P>(); ... }
/// backend_tests!(reads, writes);
/// ```
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        #[cfg(ioloop_has_epoll)]
        mod epoll { $( #[test] fn $name() { super::$name::<::ioloop_sys::Epoll>() } )* }
        #[cfg(ioloop_has_kqueue)]
        mod kqueue { $( #[test] fn $name() { super::$name::<::ioloop_sys::Kqueue>() } )* }
        #[cfg(ioloop_has_uring)]
        mod uring { $( #[test] fn $name() {
            if crate::util::uring_unavailable() { return; }
            super::$name::<::ioloop_sys::Uring>()
        } )* }
        mod poll { $( #[test] fn $name() { super::$name::<::ioloop_sys::Poll>() } )* }
        mod select { $( #[test] fn $name() { super::$name::<::ioloop_sys::Select>() } )* }
    };
}
pub(crate) use backend_tests;

/// Whether io_uring cannot be used on this machine: not in the kernel or emulator (`ENOSYS`,
/// qemu-user among them), refused by a seccomp filter (Docker's default profile) or by
/// `kernel.io_uring_disabled` (`EPERM`), or lacking what the backend needs (`Unsupported`).
/// io_uring's tests then return without running, after one note on stderr per test binary
/// (written past libtest's capture), so that `cargo test` passes in such a container;
/// `IOLOOP_REQUIRE_URING=1` (CI sets it) makes them run, and fail, instead. Any other
/// error from `io_uring_setup` is not taken for "unavailable": the tests run and show it.
#[cfg(ioloop_has_uring)]
pub fn uring_unavailable() -> bool {
    use std::sync::OnceLock;
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    let why = WHY.get_or_init(|| match ioloop_sys::Uring::new() {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
            ) =>
        {
            Some(e.to_string())
        }
        _ => None,
    });
    let Some(why) = why else { return false };
    if std::env::var_os("IOLOOP_REQUIRE_URING").is_some_and(|v| v == "1") {
        return false;
    }
    static NOTE: std::sync::Once = std::sync::Once::new();
    NOTE.call_once(|| {
        let _ = io::stderr().write_all(
            format!(
                "note: io_uring is unavailable here ({why}): its tests return without running \
                 (IOLOOP_REQUIRE_URING=1 runs them)\n"
            )
            .as_bytes(),
        );
    });
    true
}

/// A new poller of type `P`, or a panic that names the backend.
#[track_caller]
pub fn poller<P: ioloop_sys::Poller>() -> P {
    match P::new() {
        Ok(p) => p,
        Err(e) => panic!("{}::new() failed: {e}", P::NAME),
    }
}

/// A connected, non-blocking Unix socket pair.
#[track_caller]
pub fn socketpair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// A connected, non-blocking TCP pair over loopback: (client, server side).
#[track_caller]
pub fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_nonblocking(true).unwrap();
    server.set_nonblocking(true).unwrap();
    (client, server)
}

/// How many fds this process has open (entries of /proc/self/fd, or /dev/fd).
///
/// Tests that compare two counts hold a lock against each other, but io_uring's tests first
/// probe for io_uring ([`uring_unavailable`]: a ring and its notifier, open for a moment)
/// before they take any lock; so the probe is made here first, once per process: a count
/// never sees its two fds come or go (`pollers_do_not_leak_fds` failed, rarely, with two
/// fds fewer after than before).
pub fn open_fds() -> usize {
    #[cfg(ioloop_has_uring)]
    let _ = uring_unavailable();
    let dir = if std::path::Path::new("/proc/self/fd").exists() {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (or `want`, whichever is lower); returns it.
#[allow(clippy::useless_conversion)] // rlim_t is u64 only on some targets
pub fn raise_nofile(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // `rlim_t` is u64 on Linux and i64 on the BSDs.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = libc::rlim_t::try_from(want).unwrap_or(hard);
    let target = want.min(hard).max(soft);
    if target > soft {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard).unwrap();
    }
    u64::try_from(target).unwrap_or(u64::MAX)
}

/// How long a wait that must see an event may take before the test gives up. Only reached
/// when a backend loses an event; a passing test returns as soon as the event arrives.
pub const LONG: Duration = Duration::from_secs(10);

/// How long a wait that must see nothing listens.
pub const SHORT: Duration = Duration::from_millis(20);

/// A non-blocking, close-on-exec pipe: (read end, write end).
#[track_caller]
pub fn pipe() -> (File, File) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    let (r, w) = nix::unistd::pipe().expect("pipe");
    for fd in [&r, &w] {
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("O_NONBLOCK");
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("FD_CLOEXEC");
    }
    (File::from(r), File::from(w))
}

/// The raw fd of `x` (short for `AsRawFd::as_raw_fd`).
pub fn fd(x: &impl AsRawFd) -> RawFd {
    x.as_raw_fd()
}

/// Writes 64 KiB chunks to a non-blocking `w` until it would block; returns the bytes written.
#[track_caller]
pub fn fill(mut w: impl Write) -> usize {
    let chunk = [0x55u8; 64 * 1024];
    let mut total = 0;
    loop {
        match w.write(&chunk) {
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("fill: {e}"),
        }
    }
}

/// Reads a non-blocking `r` until it would block or reaches end of file; returns the bytes
/// read.
#[track_caller]
pub fn drain(mut r: impl Read) -> usize {
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("drain: {e}"),
        }
    }
}

/// Writes `data` in full to `w` (a non-blocking fd with room for it).
#[track_caller]
pub fn send(mut w: impl Write, data: &[u8]) {
    w.write_all(data).expect("write");
}

/// Waits until a wait reports at least one event (retrying waits that return `Ok(0)`, for
/// backends whose internal wake-ups surface as empty waits) and returns that wait's events.
///
/// # Panics
///
/// If nothing is reported within [`LONG`], or a wait fails.
#[track_caller]
pub fn wait_some<P: Poller>(p: &P, events: &mut Events) -> Vec<Event> {
    let deadline = Instant::now() + LONG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("{}: no event within {LONG:?}", P::NAME);
        }
        let n = match p.wait(events, Some(left)) {
            Ok(n) => n,
            Err(e) => panic!("{}: wait failed: {e}", P::NAME),
        };
        assert_eq!(n, events.len(), "{}: wait's count != events.len()", P::NAME);
        if n > 0 {
            return events.iter().copied().collect();
        }
    }
}

/// Waits for the next event and asserts that the wait reported exactly one, for `token`;
/// returns its readiness.
#[track_caller]
pub fn expect_one<P: Poller>(p: &P, events: &mut Events, token: u64) -> Ready {
    let got = wait_some(p, events);
    assert_eq!(
        got.len(),
        1,
        "{}: expected one event for token {token}, got {got:?}",
        P::NAME
    );
    assert_eq!(got[0].token(), token, "{}: wrong token in {got:?}", P::NAME);
    got[0].ready()
}

/// Asserts that a wait of [`SHORT`] reports no event (and does not end early).
#[track_caller]
pub fn expect_none<P: Poller>(p: &P, events: &mut Events) {
    let start = Instant::now();
    let n = match p.wait(events, Some(SHORT)) {
        Ok(n) => n,
        Err(e) => panic!("{}: wait failed: {e}", P::NAME),
    };
    assert_eq!(
        n,
        0,
        "{}: expected no event, got {:?}",
        P::NAME,
        events.as_slice()
    );
    assert!(
        events.is_empty(),
        "{}: count 0 but events {:?}",
        P::NAME,
        events.as_slice()
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= SHORT,
        "{}: wait({SHORT:?}) returned after {elapsed:?}",
        P::NAME
    );
}

/// Asserts that `res` failed with `kind`.
#[track_caller]
pub fn assert_kind<T: std::fmt::Debug>(res: io::Result<T>, kind: io::ErrorKind, what: &str) {
    match res {
        Ok(v) => panic!("{what}: expected {kind:?}, got Ok({v:?})"),
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong error kind ({e})"),
    }
}

/// Registers `fd` or panics naming the backend.
#[track_caller]
pub fn register<P: Poller>(p: &P, fd: RawFd, token: u64, interest: Interest, mode: Mode) {
    if let Err(e) = p.register(fd, token, interest, mode) {
        panic!(
            "{}: register(fd {fd}, {interest:?}, {mode:?}): {e}",
            P::NAME
        );
    }
}

/// Re-registers `fd` with `modify` or panics naming the backend.
#[track_caller]
pub fn modify<P: Poller>(p: &P, fd: RawFd, token: u64, interest: Interest, mode: Mode) {
    if let Err(e) = p.modify(fd, token, interest, mode) {
        panic!("{}: modify(fd {fd}, {interest:?}, {mode:?}): {e}", P::NAME);
    }
}

/// Asserts what a peer hang-up looks like on `P`, per the `Ready` table in
/// `sys/src/flags.rs`: `READABLE | HUP`, except on select, which has no HUP (`READABLE` only;
/// `read` then returns 0).
#[track_caller]
pub fn assert_hangup<P: Poller>(ready: Ready) {
    assert!(
        ready.contains(Ready::READABLE),
        "{}: hang-up without READABLE: {ready:?}",
        P::NAME
    );
    if P::NAME == "select" {
        assert!(
            !ready.contains(Ready::HUP),
            "select promises no HUP: {ready:?}"
        );
    } else {
        assert!(
            ready.contains(Ready::HUP),
            "{}: hang-up without HUP: {ready:?}",
            P::NAME
        );
    }
}

/// A raw fd closed on drop, for a duplicate made with `fcntl` (wrapping it in an `OwnedFd`
/// would take `unsafe`, which stays in `sys/`).
#[derive(Debug)]
pub struct DupFd(pub RawFd);

impl Drop for DupFd {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}

/// Duplicates `fd` onto the lowest free fd number `>= min` (`F_DUPFD_CLOEXEC`), raising
/// `RLIMIT_NOFILE` first; `None` if the hard limit does not allow an fd that high.
#[track_caller]
pub fn dup_at_least(fd: &impl AsFd, min: RawFd) -> Option<DupFd> {
    use nix::fcntl::{fcntl, FcntlArg};
    let want = u64::try_from(min).unwrap() + 64;
    if raise_nofile(want) <= u64::try_from(min).unwrap() {
        return None;
    }
    let raw = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(min)).expect("F_DUPFD_CLOEXEC");
    assert!(raw >= min);
    Some(DupFd(raw))
}

// ===== Reactor test helpers (tests/reactor.rs, timers.rs, signals.rs, reactor_alloc.rs) =====

/// A new [`ioloop::IoLoop`] on backend `P`, or a panic that names the backend.
#[track_caller]
pub fn backend_loop<P: ioloop_sys::Poller>() -> ioloop::IoLoop<P> {
    match ioloop::IoLoop::<P>::with_backend() {
        Ok(lp) => lp,
        Err(e) => panic!("IoLoop::<{}>::with_backend() failed: {e}", P::NAME),
    }
}

/// Runs one iteration that does not block: a timer due now makes the wait's timeout zero.
/// Use it to check that *nothing* is delivered; use `run_once` when an event is expected.
#[track_caller]
pub fn turn<P: ioloop_sys::Poller>(lp: &ioloop::IoLoop<P>) {
    lp.call_later(std::time::Duration::ZERO, |_| {});
    lp.run_once().expect("run_once");
}

/// A counter shared between a test and the closures it registers.
pub fn counter() -> std::rc::Rc<std::cell::Cell<usize>> {
    std::rc::Rc::new(std::cell::Cell::new(0))
}

/// Increments a [`counter`].
pub fn bump(c: &std::cell::Cell<usize>) {
    c.set(c.get() + 1);
}

/// The error kind of a result that must be an error.
#[track_caller]
pub fn err_kind<T: std::fmt::Debug>(r: io::Result<T>) -> io::ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.kind(),
    }
}

/// A directory of its own under the system's temporary directory (for socket files), removed
/// with what is in it when dropped. `tag` names it; keep it short (a socket path must fit in
/// `sockaddr_un`, ~104 bytes).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    #[track_caller]
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ioloop-{}-{tag}-{n}", std::process::id()));
        // Left by an earlier process of the same pid that crashed: start clean.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self(dir)
    }

    /// `name` in the directory.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example binaries' directory (`target/<profile>/examples`), every example built once per
/// test process: cargo builds the examples for a plain `cargo test`, not for `cargo test
/// --test <name>` (a no-op when they are up to date). The examples are built for the host,
/// so the tests that run them are left out under qemu (scripts/qemu-test.sh).
pub fn examples_dir() -> &'static std::path::PathBuf {
    use std::process::Command;
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        // A test runs as target/<profile>/deps/<name>-<hash>.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "--examples"]);
        cargo
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        cargo.arg("--target-dir").arg(profile_dir.parent().unwrap());
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("running cargo build --examples");
        assert!(status.success(), "cargo build --examples failed: {status}");
        profile_dir.join("examples")
    })
}
