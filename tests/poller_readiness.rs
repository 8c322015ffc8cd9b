//! Read and write readiness on pipes, socket pairs and TCP loopback; several fds at once;
//! a small events buffer; deregister; modify.

mod util;

use std::collections::BTreeSet;
use std::io::Read;

use ioloop_sys::{Events, Interest, Mode, Poller, Ready};
use util::{
    backend_tests, drain, expect_none, expect_one, fd, fill, modify, register, send, wait_some,
};

fn pipe_readable<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (r, w) = util::pipe();
    register(&p, fd(&r), 1, Interest::READABLE, Mode::Level);
    expect_none(&p, &mut ev);
    send(&w, b"hello");
    let ready = expect_one(&p, &mut ev, 1);
    assert!(ready.contains(Ready::READABLE), "{ready:?}");
    assert!(!ready.contains(Ready::WRITABLE), "{ready:?}");
    assert_eq!(drain(&r), 5);
    p.deregister(fd(&r)).unwrap();
}

fn pipe_writable<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (r, w) = util::pipe();
    register(&p, fd(&w), 2, Interest::WRITABLE, Mode::Level);
    let ready = expect_one(&p, &mut ev, 2);
    assert!(ready.contains(Ready::WRITABLE), "{ready:?}");
    assert!(fill(&w) > 0);
    expect_none(&p, &mut ev);
    drain(&r);
    let ready = expect_one(&p, &mut ev, 2);
    assert!(ready.contains(Ready::WRITABLE), "{ready:?}");
    p.deregister(fd(&w)).unwrap();
}

fn socketpair_readable_and_writable<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    register(&p, fd(&a), 3, Interest::READABLE, Mode::Level);
    expect_none(&p, &mut ev);
    send(&b, b"ping");
    let ready = expect_one(&p, &mut ev, 3);
    assert!(ready.contains(Ready::READABLE), "{ready:?}");
    assert!(!ready.contains(Ready::WRITABLE), "{ready:?}");
    assert_eq!(drain(&a), 4);

    modify(
        &p,
        fd(&a),
        3,
        Interest::READABLE | Interest::WRITABLE,
        Mode::Level,
    );
    let ready = expect_one(&p, &mut ev, 3);
    assert_eq!(ready & (Ready::READABLE | Ready::WRITABLE), Ready::WRITABLE);
    send(&b, b"pong");
    // Both at once: one event per fd, with both flags (kqueue merges its two filters).
    let ready = expect_one(&p, &mut ev, 3);
    assert!(
        ready.contains(Ready::READABLE | Ready::WRITABLE),
        "{ready:?}"
    );
    p.deregister(fd(&a)).unwrap();
}

fn socketpair_writable_after_full<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    register(&p, fd(&a), 4, Interest::WRITABLE, Mode::Level);
    assert!(expect_one(&p, &mut ev, 4).contains(Ready::WRITABLE));
    assert!(fill(&a) > 0);
    expect_none(&p, &mut ev);
    drain(&b);
    assert!(expect_one(&p, &mut ev, 4).contains(Ready::WRITABLE));
    p.deregister(fd(&a)).unwrap();
}

fn tcp_readable_and_writable<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (client, server) = util::tcp_pair();
    register(&p, fd(&server), 5, Interest::READABLE, Mode::Level);
    register(&p, fd(&client), 6, Interest::WRITABLE, Mode::Level);
    // A fresh connection is writable and has nothing to read.
    let ready = expect_one(&p, &mut ev, 6);
    assert!(ready.contains(Ready::WRITABLE), "{ready:?}");
    modify(&p, fd(&client), 6, Interest::READABLE, Mode::Level);
    expect_none(&p, &mut ev);
    send(&client, b"GET / HTTP/1.0\r\n\r\n");
    let ready = expect_one(&p, &mut ev, 5);
    assert!(ready.contains(Ready::READABLE), "{ready:?}");
    let mut buf = [0u8; 64];
    assert_eq!((&server).read(&mut buf).unwrap(), 18);
    expect_none(&p, &mut ev);
    send(&server, b"ok");
    let ready = expect_one(&p, &mut ev, 6);
    assert!(ready.contains(Ready::READABLE), "{ready:?}");
    p.deregister(fd(&server)).unwrap();
    p.deregister(fd(&client)).unwrap();
}

/// `Interest::PRIORITY`: TCP urgent data is reported as `Ready::PRIORITY` (level-triggered:
/// until the urgent byte is read), and only to a registration that asks for it; where
/// `priority_exact`, never for plain data. kqueue refuses the interest, and so does poll on
/// Apple's systems (whose `poll(2)` is built on kqueue).
fn tcp_urgent_data_reports_priority<P: Poller>() {
    use nix::sys::socket::{recv, send as send_flags, MsgFlags};
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (client, server) = util::tcp_pair();
    let (client2, server2) = util::tcp_pair();
    let both = Interest::READABLE | Interest::PRIORITY;
    if P::NAME == "kqueue" || (P::NAME == "poll" && cfg!(target_vendor = "apple")) {
        util::assert_kind(
            p.register(fd(&server), 8, both, Mode::Level),
            std::io::ErrorKind::Unsupported,
            "register(PRIORITY)",
        );
        assert!(
            !p.priority_exact(),
            "{}: a refused interest is not exact",
            P::NAME
        );
        return;
    }
    register(&p, fd(&server), 8, both, Mode::Level);
    register(&p, fd(&server2), 9, Interest::READABLE, Mode::Level);
    expect_none(&p, &mut ev);
    // Plain data: readable, no priority.
    send(&client, b"abc");
    let ready = expect_one(&p, &mut ev, 8);
    if p.priority_exact() {
        assert_eq!(ready, Ready::READABLE, "plain data");
    } else {
        // io_uring: the data's wake-up says POLLPRI too.
        assert!(ready.contains(Ready::READABLE), "plain data: {ready:?}");
    }
    assert_eq!(drain(&server), 3);
    expect_none(&p, &mut ev);
    // Urgent data: priority, reported for as long as the urgent byte is unread.
    send_flags(fd(&client), b"X", MsgFlags::MSG_OOB).unwrap();
    for _ in 0..2 {
        let ready = expect_one(&p, &mut ev, 8);
        assert!(ready.contains(Ready::PRIORITY), "urgent data: {ready:?}");
    }
    let mut oob = [0u8; 1];
    assert_eq!(recv(fd(&server), &mut oob, MsgFlags::MSG_OOB).unwrap(), 1);
    assert_eq!(&oob, b"X");
    expect_none(&p, &mut ev);
    // Without the interest, urgent data is never priority (the data after it is readable).
    send_flags(fd(&client2), b"Y", MsgFlags::MSG_OOB).unwrap();
    send(&client2, b"def");
    let ready = expect_one(&p, &mut ev, 9);
    assert_eq!(ready, Ready::READABLE, "no PRIORITY interest");
    p.deregister(fd(&server)).unwrap();
    p.deregister(fd(&server2)).unwrap();
}

fn tcp_listener_readable_on_connect<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    register(&p, fd(&listener), 7, Interest::READABLE, Mode::Level);
    expect_none(&p, &mut ev);
    let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    assert!(expect_one(&p, &mut ev, 7).contains(Ready::READABLE));
    let _server = listener.accept().unwrap();
    expect_none(&p, &mut ev);
    p.deregister(fd(&listener)).unwrap();
}

fn several_ready_fds_reported_together<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(16);
    let pairs: Vec<_> = (0..3).map(|_| util::socketpair()).collect();
    for (i, (a, b)) in pairs.iter().enumerate() {
        register(&p, fd(a), 10 + i as u64, Interest::READABLE, Mode::Level);
        send(b, b"x");
    }
    let got = wait_some(&p, &mut ev);
    let tokens: BTreeSet<u64> = got.iter().map(|e| e.token()).collect();
    assert_eq!(tokens, BTreeSet::from([10, 11, 12]), "{}: {got:?}", P::NAME);
    assert_eq!(got.len(), 3, "{}: one event per fd: {got:?}", P::NAME);
    assert!(got.iter().all(|e| e.is_readable()), "{got:?}");
}

fn capacity_one_loses_nothing<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(1);
    let pairs: Vec<_> = (0..3).map(|_| util::socketpair()).collect();
    for (i, (a, b)) in pairs.iter().enumerate() {
        register(&p, fd(a), 20 + i as u64, Interest::READABLE, Mode::Level);
        send(b, b"x");
    }
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let got = wait_some(&p, &mut ev);
        assert_eq!(got.len(), 1, "{}: capacity 1 but {got:?}", P::NAME);
        let token = got[0].token();
        assert!(
            seen.insert(token),
            "{}: token {token} reported twice",
            P::NAME
        );
        // Drain it so that only the fds not reported yet stay ready.
        let i = usize::try_from(token - 20).unwrap();
        assert_eq!(drain(&pairs[i].0), 1);
    }
    assert_eq!(seen, BTreeSet::from([20, 21, 22]));
    expect_none(&p, &mut ev);
}

fn deregister_stops_events<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    register(
        &p,
        fd(&a),
        30,
        Interest::READABLE | Interest::WRITABLE,
        Mode::Level,
    );
    send(&b, b"x");
    assert!(expect_one(&p, &mut ev, 30).contains(Ready::READABLE));
    p.deregister(fd(&a)).unwrap();
    expect_none(&p, &mut ev);
    // Readiness that arose before the deregister, never waited for, is not reported either.
    let (c, d) = util::socketpair();
    register(&p, fd(&c), 31, Interest::READABLE, Mode::Level);
    send(&d, b"y");
    p.deregister(fd(&c)).unwrap();
    expect_none(&p, &mut ev);
    // And the fd can be registered again.
    register(&p, fd(&c), 32, Interest::READABLE, Mode::Level);
    assert!(expect_one(&p, &mut ev, 32).contains(Ready::READABLE));
}

fn modify_changes_interest_and_token<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    // Writable but not readable: nothing for a READABLE interest.
    register(&p, fd(&a), 40, Interest::READABLE, Mode::Level);
    expect_none(&p, &mut ev);
    modify(&p, fd(&a), 41, Interest::WRITABLE, Mode::Level);
    let ready = expect_one(&p, &mut ev, 41);
    assert!(ready.contains(Ready::WRITABLE), "{ready:?}");
    assert!(!ready.contains(Ready::READABLE), "{ready:?}");
    send(&b, b"x");
    modify(&p, fd(&a), 42, Interest::READABLE, Mode::Level);
    let ready = expect_one(&p, &mut ev, 42);
    assert!(ready.contains(Ready::READABLE), "{ready:?}");
    assert!(
        !ready.contains(Ready::WRITABLE),
        "{}: WRITABLE after modify: {ready:?}",
        P::NAME
    );
    // An empty interest reports nothing for a live, idle fd.
    modify(&p, fd(&a), 43, Interest::empty(), Mode::Level);
    expect_none(&p, &mut ev);
    p.deregister(fd(&a)).unwrap();
}

backend_tests!(
    pipe_readable,
    pipe_writable,
    socketpair_readable_and_writable,
    socketpair_writable_after_full,
    tcp_readable_and_writable,
    tcp_urgent_data_reports_priority,
    tcp_listener_readable_on_connect,
    several_ready_fds_reported_together,
    capacity_one_loses_nothing,
    deregister_stops_events,
    modify_changes_interest_and_token,
);
