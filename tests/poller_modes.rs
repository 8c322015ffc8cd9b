//! Level, Oneshot and Edge: how often a ready fd is reported.

mod util;

use std::io;

use ioloop_sys::{Events, Interest, Mode, Poller, Ready};
use util::{
    assert_kind, backend_tests, drain, expect_none, expect_one, fd, modify, register, send,
};

fn level_reports_until_drained<P: Poller>() {
    let p = util::poller::<P>();
    assert!(p.supports(Mode::Level), "{}: Level is required", P::NAME);
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    register(&p, fd(&a), 1, Interest::READABLE, Mode::Level);
    send(&b, b"abc");
    for _ in 0..3 {
        assert!(expect_one(&p, &mut ev, 1).contains(Ready::READABLE));
    }
    assert_eq!(drain(&a), 3);
    expect_none(&p, &mut ev);
    send(&b, b"d");
    assert!(expect_one(&p, &mut ev, 1).contains(Ready::READABLE));
}

fn level_writable_reports_every_wait<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, _b) = util::socketpair();
    register(&p, fd(&a), 2, Interest::WRITABLE, Mode::Level);
    for _ in 0..3 {
        assert!(expect_one(&p, &mut ev, 2).contains(Ready::WRITABLE));
    }
}

fn oneshot_reports_once_until_rearmed<P: Poller>() {
    let p = util::poller::<P>();
    assert!(
        p.supports(Mode::Oneshot),
        "{}: Oneshot is required",
        P::NAME
    );
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    register(&p, fd(&a), 3, Interest::READABLE, Mode::Oneshot);
    send(&b, b"abc");
    assert!(expect_one(&p, &mut ev, 3).contains(Ready::READABLE));
    // Still readable (nothing was read), but disarmed.
    expect_none(&p, &mut ev);
    send(&b, b"more");
    expect_none(&p, &mut ev);
    // modify re-arms, here with a new token.
    modify(&p, fd(&a), 4, Interest::READABLE, Mode::Oneshot);
    assert!(expect_one(&p, &mut ev, 4).contains(Ready::READABLE));
    expect_none(&p, &mut ev);
    // A disarmed fd is still registered: register says so, deregister works once.
    assert_kind(
        p.register(fd(&a), 5, Interest::READABLE, Mode::Oneshot),
        io::ErrorKind::AlreadyExists,
        "register of a disarmed oneshot fd",
    );
    p.deregister(fd(&a)).unwrap();
    assert_kind(
        p.deregister(fd(&a)),
        io::ErrorKind::NotFound,
        "second deregister",
    );
}

fn oneshot_writable_then_level<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, _b) = util::socketpair();
    register(&p, fd(&a), 6, Interest::WRITABLE, Mode::Oneshot);
    assert!(expect_one(&p, &mut ev, 6).contains(Ready::WRITABLE));
    expect_none(&p, &mut ev);
    // Switching a disarmed oneshot registration to Level arms it for good.
    modify(&p, fd(&a), 7, Interest::WRITABLE, Mode::Level);
    assert!(expect_one(&p, &mut ev, 7).contains(Ready::WRITABLE));
    assert!(expect_one(&p, &mut ev, 7).contains(Ready::WRITABLE));
}

fn edge_reports_once_per_new_data<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    if !p.supports(Mode::Edge) {
        assert_kind(
            p.register(fd(&a), 8, Interest::READABLE, Mode::Edge),
            io::ErrorKind::Unsupported,
            "register with Edge where it is not supported",
        );
        // The failed register left nothing behind.
        register(&p, fd(&a), 8, Interest::READABLE, Mode::Level);
        assert_kind(
            p.modify(fd(&a), 8, Interest::READABLE, Mode::Edge),
            io::ErrorKind::Unsupported,
            "modify to Edge where it is not supported",
        );
        return;
    }
    register(&p, fd(&a), 8, Interest::READABLE, Mode::Edge);
    expect_none(&p, &mut ev);
    send(&b, b"one");
    assert!(expect_one(&p, &mut ev, 8).contains(Ready::READABLE));
    // Unread data does not report again...
    expect_none(&p, &mut ev);
    // ...new data does, once.
    send(&b, b"two");
    assert!(expect_one(&p, &mut ev, 8).contains(Ready::READABLE));
    expect_none(&p, &mut ev);
    assert_eq!(drain(&a), 6);
    expect_none(&p, &mut ev);
    send(&b, b"three");
    assert!(expect_one(&p, &mut ev, 8).contains(Ready::READABLE));
    expect_none(&p, &mut ev);
}

/// `modify_deferred` is what each backend documents: a `modify` is a table entry (poll,
/// select) or a submission queue entry (io_uring) sent with the next wait, and a system
/// call of its own on epoll and kqueue. (The task layer chooses its registration mode by
/// it: see tests/tasks.rs `short_stream_read_infers_drained`.)
fn modify_deferred_as_documented<P: Poller>() {
    let p = util::poller::<P>();
    let expected = matches!(P::NAME, "poll" | "select" | "uring");
    assert_eq!(p.modify_deferred(), expected, "{}", P::NAME);
}

backend_tests!(
    modify_deferred_as_documented,
    level_reports_until_drained,
    level_writable_reports_every_wait,
    oneshot_reports_once_until_rearmed,
    oneshot_writable_then_level,
    edge_reports_once_per_new_data,
);
