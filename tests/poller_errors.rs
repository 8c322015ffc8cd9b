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

backend_tests!(
    negative_fd_is_invalid_input,
    reserved_token_is_invalid_input,
    register_twice_is_already_exists,
    modify_unknown_is_not_found,
    deregister_unknown_is_not_found,
    deregister_twice_is_not_found,
    fd_above_fd_setsize,
);
