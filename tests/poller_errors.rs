//! Bad input is an `io::Error` of a promised kind on every backend, and leaves the poller
//! usable.

mod util;

use std::io::ErrorKind;

use ioloop_sys::{Events, Interest, Mode, Poller, Ready, RESERVED_TOKEN};
use util::{assert_kind, backend_tests, expect_one, fd, register, send};

const R: Interest = Interest::READABLE;

fn negative_fd_is_invalid_input<P: Poller>() {
    let p = util::poller::<P>();
    for bad in [-1, -2, i32::MIN] {
        assert_kind(
            p.register(bad, 1, R, Mode::Level),
            ErrorKind::InvalidInput,
            "register(-fd)",
        );
        assert_kind(
            p.modify(bad, 1, R, Mode::Level),
            ErrorKind::InvalidInput,
            "modify(-fd)",
        );
        assert_kind(
            p.deregister(bad),
            ErrorKind::InvalidInput,
            "deregister(-fd)",
        );
    }
}

fn reserved_token_is_invalid_input<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    assert_eq!(RESERVED_TOKEN, u64::MAX);
    assert_kind(
        p.register(fd(&a), u64::MAX, R, Mode::Level),
        ErrorKind::InvalidInput,
        "register with token u64::MAX",
    );
    // The refused register left nothing behind.
    register(&p, fd(&a), 1, R, Mode::Level);
    assert_kind(
        p.modify(fd(&a), u64::MAX, R, Mode::Level),
        ErrorKind::InvalidInput,
        "modify with token u64::MAX",
    );
    // The refused modify did not change the registration.
    send(&b, b"x");
    assert!(expect_one(&p, &mut ev, 1).contains(Ready::READABLE));
}

fn register_twice_is_already_exists<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    register(&p, fd(&a), 1, R, Mode::Level);
    assert_kind(
        p.register(fd(&a), 1, R, Mode::Level),
        ErrorKind::AlreadyExists,
        "same args",
    );
    assert_kind(
        p.register(fd(&a), 2, Interest::WRITABLE, Mode::Oneshot),
        ErrorKind::AlreadyExists,
        "other token, interest and mode",
    );
    // The first registration is intact: its token, its interest (not WRITABLE).
    send(&b, b"x");
    let ready = expect_one(&p, &mut ev, 1);
    assert_eq!(ready & (Ready::READABLE | Ready::WRITABLE), Ready::READABLE);
}

fn modify_unknown_is_not_found<P: Poller>() {
    let p = util::poller::<P>();
    let (a, _b) = util::socketpair();
    assert_kind(
        p.modify(fd(&a), 1, R, Mode::Level),
        ErrorKind::NotFound,
        "modify unknown",
    );
    // Another open socket, with another poller registered on it, is still unknown here.
    let (c, _d) = util::socketpair();
    let other = util::poller::<P>();
    register(&other, fd(&c), 1, R, Mode::Level);
    assert_kind(
        p.modify(fd(&c), 1, R, Mode::Level),
        ErrorKind::NotFound,
        "modify other's fd",
    );
    // And modify did not register it.
    assert_kind(
        p.deregister(fd(&a)),
        ErrorKind::NotFound,
        "deregister after failed modify",
    );
}

fn deregister_unknown_is_not_found<P: Poller>() {
    let p = util::poller::<P>();
    let (a, b) = util::socketpair();
    assert_kind(
        p.deregister(fd(&a)),
        ErrorKind::NotFound,
        "deregister unknown",
    );
    // The fds the poller uses itself (its notifier, its kernel object) are not the caller's
    // to deregister. Not every low fd is a pollable open file (stdin may be /dev/null, which
    // epoll answers with EPERM; a closed one gives EBADF), so only success is wrong here.
    for n in 0..32 {
        if n != fd(&a) && n != fd(&b) {
            assert!(
                p.deregister(n).is_err(),
                "{}: deregister({n}) succeeded",
                P::NAME
            );
        }
    }
}

fn deregister_twice_is_not_found<P: Poller>() {
    let p = util::poller::<P>();
    let (a, _b) = util::socketpair();
    register(&p, fd(&a), 1, R, Mode::Level);
    p.deregister(fd(&a)).unwrap();
    assert_kind(
        p.deregister(fd(&a)),
        ErrorKind::NotFound,
        "second deregister",
    );
    assert_kind(
        p.modify(fd(&a), 1, R, Mode::Level),
        ErrorKind::NotFound,
        "modify after it",
    );
}

/// select's fd sets hold `FD_SETSIZE` fds (1024 on most systems, 65 536 on 64-bit illumos);
/// setting a bit past them would corrupt memory, so select refuses with `InvalidInput`. The
/// other backends take any fd.
fn fd_above_fd_setsize<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    let min = std::os::fd::RawFd::try_from(libc::FD_SETSIZE).unwrap();
    let Some(high) = util::dup_at_least(&a, min) else {
        eprintln!("skipped: RLIMIT_NOFILE does not allow fd FD_SETSIZE");
        return;
    };
    let res = p.register(high.0, 1, R, Mode::Level);
    if P::NAME == "select" {
        assert_kind(
            res,
            ErrorKind::InvalidInput,
            "select register(fd >= FD_SETSIZE)",
        );
        // The refused fd is not registered (which check answers first is the backend's).
        let kind = p.modify(high.0, 1, R, Mode::Level).unwrap_err().kind();
        assert!(
            matches!(kind, ErrorKind::NotFound | ErrorKind::InvalidInput),
            "{kind:?}"
        );
    } else {
        res.unwrap_or_else(|e| panic!("{}: register(fd {}): {e}", P::NAME, high.0));
        send(&b, b"x");
        assert!(expect_one(&p, &mut ev, 1).contains(Ready::READABLE));
        p.deregister(high.0).unwrap();
    }
}

/// The numbers of the fds open in this process.
fn fd_numbers() -> std::collections::BTreeSet<i32> {
    let dir = if std::path::Path::new("/proc/self/fd").exists() {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    std::fs::read_dir(dir)
        .expect("fd list")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The fds a poller opens for itself (its kernel object, its notifier) are not the user's
/// registrations: `modify` and `deregister` of them are `NotFound`, and the notifier still
/// works after. (On epoll, `modify` of the notifier's eventfd took it over: the first notify
/// came back as the user's event, level-triggered forever, and later notifies were lost; the
/// epoll fd itself gave `InvalidInput`.) Fds that tests running alongside open meanwhile
/// are not this poller's either, and the listing's own directory fd is closed by then: the
/// same answers hold for them (poll and select answered `EBADF` for a closed number they
/// never held).
fn the_pollers_own_fds_are_not_the_users<P: Poller>() {
    let before = fd_numbers();
    let p = util::poller::<P>();
    let own: Vec<i32> = fd_numbers().difference(&before).copied().collect();
    for &fd in &own {
        assert_kind(
            p.modify(fd, 1, Interest::READABLE, Mode::Level),
            ErrorKind::NotFound,
            &format!("{}: modify of its own fd {fd}", P::NAME),
        );
        assert_kind(
            p.deregister(fd),
            ErrorKind::NotFound,
            &format!("{}: deregister of its own fd {fd}", P::NAME),
        );
    }
    let mut events = Events::with_capacity(8);
    for _ in 0..2 {
        p.notify().unwrap();
        assert_eq!(p.wait(&mut events, None).unwrap(), 0, "{}", P::NAME);
        assert!(events.is_empty(), "{}", P::NAME);
    }
    assert_eq!(
        p.wait(&mut events, Some(std::time::Duration::ZERO))
            .unwrap(),
        0,
        "{}: a wake-up left over",
        P::NAME
    );
}

/// `is_stale` running in another thread never ends a wait that has nothing to report (on
/// epoll its probe registers the fd under the notifier's token for a moment, and a hang-up
/// reported for it was taken for a notify: an untimed wait returned `Ok(0)`).
fn is_stale_in_another_thread_wakes_no_wait<P: Poller>() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let p = util::poller::<P>();
    let (hung, peer) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(peer);
    let done = AtomicBool::new(false);
    let mut events = Events::with_capacity(8);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..20_000 {
                let _ = p.is_stale(fd(&hung));
            }
            done.store(true, Ordering::SeqCst);
            p.notify().unwrap();
        });
        // Only the notify that follows the last probe may end it.
        let n = p.wait(&mut events, None).unwrap();
        assert_eq!(n, 0, "{}", P::NAME);
        assert!(
            done.load(Ordering::SeqCst),
            "{}: an untimed wait ended with nothing to report",
            P::NAME
        );
    });
}

backend_tests!(
    negative_fd_is_invalid_input,
    reserved_token_is_invalid_input,
    register_twice_is_already_exists,
    modify_unknown_is_not_found,
    deregister_unknown_is_not_found,
    deregister_twice_is_not_found,
    fd_above_fd_setsize,
    the_pollers_own_fds_are_not_the_users,
    is_stale_in_another_thread_wakes_no_wait,
);
