//! The io_uring backend in owned mode (`Poller::new_owned`: `SINGLE_ISSUER | DEFER_TASKRUN`
//! on Linux 6.1+): one thread registers and waits, any thread notifies.
#![cfg(target_os = "linux")]

mod util;

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use ioloop_sys::{Events, Interest, Mode, Poller, Ready, Uring};

const LONG: Duration = Duration::from_secs(10);

fn owned() -> Uring {
    Uring::new_owned().expect("Uring::new_owned")
}

/// The events of one wait, as `(token, ready)`, sorted by token.
fn wait(p: &Uring, events: &mut Events, timeout: Duration) -> Vec<(u64, Ready)> {
    p.wait(events, Some(timeout)).unwrap();
    let mut got: Vec<_> = events.iter().map(|e| (e.token(), e.ready())).collect();
    got.sort_unstable_by_key(|e| e.0);
    got
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(res: io::Result<T>, what: &str) {
    let err = res.expect_err(what);
    assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{what}: {err}");
    assert!(err.to_string().contains("new_owned"), "{what}: {err}");
}

/// Every call that enters the ring, made from a thread other than the owner, gets the clear
/// error (not the kernel's EEXIST) and changes nothing; the owner goes on working. On this
/// kernel (6.1+) owned mode is really in use: `new` would take these calls.
#[test]
fn other_threads_get_a_clear_error() {
    if util::uring_unavailable() {
        return;
    }
    let p = owned();
    let (a, mut b) = util::socketpair();
    let (c, _d) = util::socketpair();
    let fd = a.as_raw_fd();
    p.register(fd, 1, Interest::READABLE, Mode::Level).unwrap();
    let mut events = Events::with_capacity(8);
    assert!(wait(&p, &mut events, Duration::ZERO).is_empty());
    thread::scope(|s| {
        s.spawn(|| {
            let mut events = Events::with_capacity(8);
            assert_refused(
                p.register(c.as_raw_fd(), 2, Interest::READABLE, Mode::Level),
                "register",
            );
            assert_refused(p.modify(fd, 3, Interest::WRITABLE, Mode::Level), "modify");
            assert_refused(p.deregister(fd), "deregister");
            assert_refused(p.is_stale(fd), "is_stale");
            assert_refused(p.wait(&mut events, Some(Duration::ZERO)), "wait");
            assert_refused(p.wait(&mut events, None), "blocking wait");
            // Not ring calls: these work anywhere.
            assert!(p.supports(Mode::Edge));
            p.notify().unwrap();
            p.notifier().notify().unwrap();
        });
    });
    // The owner: the registration is unchanged (token 1, readable), c was not registered.
    assert_eq!(p.wait(&mut events, Some(LONG)).unwrap(), 0, "the notify");
    b.write_all(b"x").unwrap();
    assert_eq!(
        wait(&p, &mut events, LONG),
        [(1, Ready::READABLE)],
        "unchanged by the refused modify"
    );
    assert_eq!(
        p.deregister(c.as_raw_fd()).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    p.deregister(fd).unwrap();
}

/// The owner is the first thread that uses the ring, not the creating one: a poller made on
/// one thread and moved to another works there, and the creating thread is then refused.
#[test]
fn the_first_user_owns_it_not_the_creator() {
    if util::uring_unavailable() {
        return;
    }
    let p = Arc::new(owned());
    let (a, mut b) = util::socketpair();
    let fd = a.as_raw_fd();
    let p2 = p.clone();
    let t = thread::spawn(move || {
        p2.register(fd, 5, Interest::READABLE, Mode::Edge).unwrap();
        let mut events = Events::with_capacity(8);
        assert!(wait(&p2, &mut events, Duration::ZERO).is_empty());
        b.write_all(b"x").unwrap();
        assert_eq!(wait(&p2, &mut events, LONG), [(5, Ready::READABLE)]);
        assert!(wait(&p2, &mut events, Duration::ZERO).is_empty());
        b
    });
    let _b = t.join().unwrap();
    let mut events = Events::with_capacity(8);
    assert_refused(p.wait(&mut events, Some(Duration::ZERO)), "creator's wait");
    assert_refused(p.deregister(fd), "creator's deregister");
}

/// A notify from another thread wakes a wait (the owner's, in owned mode) blocked without a
/// time limit, many times over, and the wake-ups are consumed (the next non-blocking wait is
/// quiet). Both constructors.
#[test]
fn notify_wakes_a_blocked_wait() {
    if util::uring_unavailable() {
        return;
    }
    for p in [Uring::new().expect("Uring::new"), owned()] {
        let (tx, rx) = mpsc::channel::<()>();
        let n = p.notifier();
        let t = thread::spawn(move || {
            while rx.recv().is_ok() {
                n.notify().unwrap();
            }
        });
        let mut events = Events::with_capacity(8);
        for _ in 0..1000 {
            tx.send(()).unwrap();
            assert_eq!(p.wait(&mut events, None).unwrap(), 0);
        }
        drop(tx);
        t.join().unwrap();
        assert_eq!(p.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    }
}

/// Level, Edge and Oneshot keep their meaning in owned mode.
#[test]
fn modes_keep_their_meaning() {
    if util::uring_unavailable() {
        return;
    }
    let p = owned();
    let mut events = Events::with_capacity(8);
    let (a, mut a_peer) = util::socketpair();
    let (e, mut e_peer) = util::socketpair();
    let (o, mut o_peer) = util::socketpair();
    p.register(a.as_raw_fd(), 1, Interest::READABLE, Mode::Level)
        .unwrap();
    p.register(e.as_raw_fd(), 2, Interest::READABLE, Mode::Edge)
        .unwrap();
    p.register(o.as_raw_fd(), 3, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    assert!(wait(&p, &mut events, Duration::ZERO).is_empty());
    a_peer.write_all(b"x").unwrap();
    e_peer.write_all(b"x").unwrap();
    o_peer.write_all(b"x").unwrap();
    let all = [
        (1, Ready::READABLE),
        (2, Ready::READABLE),
        (3, Ready::READABLE),
    ];
    let mut got = Vec::new();
    while got.len() < 3 {
        let round = wait(&p, &mut events, LONG);
        assert!(!round.is_empty());
        got.extend(round);
        got.sort_unstable_by_key(|e| e.0);
        got.dedup();
    }
    assert_eq!(got, all);
    // Unread: Level again, Edge and Oneshot not.
    for _ in 0..3 {
        assert_eq!(
            wait(&p, &mut events, Duration::ZERO),
            [(1, Ready::READABLE)]
        );
    }
    // New data: Edge once more; Oneshot only after modify.
    e_peer.write_all(b"y").unwrap();
    o_peer.write_all(b"y").unwrap();
    assert_eq!(
        wait(&p, &mut events, LONG),
        [(1, Ready::READABLE), (2, Ready::READABLE)]
    );
    p.modify(o.as_raw_fd(), 4, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    assert_eq!(
        wait(&p, &mut events, LONG),
        [(1, Ready::READABLE), (4, Ready::READABLE)]
    );
    let mut buf = [0u8; 8];
    while (&a).read(&mut buf).is_ok() {}
    assert!(wait(&p, &mut events, Duration::ZERO).is_empty());
    assert!(!p.is_stale(e.as_raw_fd()).unwrap());
    for fd in [a.as_raw_fd(), e.as_raw_fd(), o.as_raw_fd()] {
        p.deregister(fd).unwrap();
    }
}

/// Many Edge fds woken before a wait (far more than the 20 deferred task-work items one
/// `io_uring_enter` runs) are all reported, each once, by waits that leave nothing behind;
/// with a buffer that holds them all, by a single wait.
#[test]
fn many_wakeups_before_a_wait() {
    if util::uring_unavailable() {
        return;
    }
    const N: usize = 200;
    let p = owned();
    let pairs: Vec<_> = (0..N).map(|_| util::socketpair()).collect();
    for (i, (a, _)) in pairs.iter().enumerate() {
        p.register(a.as_raw_fd(), i as u64, Interest::READABLE, Mode::Edge)
            .unwrap();
    }
    let mut events = Events::with_capacity(N + 8);
    assert!(wait(&p, &mut events, Duration::ZERO).is_empty());
    for round in 0..3 {
        for (_, b) in &pairs {
            (&*b).write_all(b"x").unwrap();
        }
        let got = wait(&p, &mut events, LONG);
        assert_eq!(got.len(), N, "round {round}: one wait reports every fd");
        assert!(got.iter().all(|&(_, r)| r == Ready::READABLE));
        assert!(wait(&p, &mut events, Duration::ZERO).is_empty());
    }
    for (a, _) in &pairs {
        p.deregister(a.as_raw_fd()).unwrap();
    }
}

/// A socket whose poll is removed while the poll's wake-up is still pending (data flooding
/// in; in owned mode the kernel runs that wake-up's work only in the owner's next wait) is
/// really closed once its fd is: the next wait, even an untimed one that blocks, lets the
/// kernel's poll go, so the peer gets a reset. `POLL_REMOVE` refuses such a poll with
/// `EALREADY`, and the backend then cancels it with `ASYNC_CANCEL`; before that fix the
/// peer of an owned-mode socket was never reset (a lingering HTTP close hung). Both modes.
#[test]
fn removal_racing_a_wakeup_still_closes_the_socket() {
    if util::uring_unavailable() {
        return;
    }
    use std::net::{TcpListener, TcpStream};
    for (name, p) in [("new", Uring::new().unwrap()), ("new_owned", owned())] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let flood = thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            // A hang guard, not a timing assertion: a socket left open makes the writes
            // block for good once the buffers are full.
            c.set_write_timeout(Some(LONG)).unwrap();
            let chunk = vec![7u8; 54_000];
            let mut sent = 0usize;
            loop {
                match c.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) => return (sent, e.kind()),
                }
                assert!(sent < 256 << 20, "still accepted after {sent} bytes");
            }
        });
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let fd = s.as_raw_fd();
        p.register(fd, 7, Interest::empty(), Mode::Edge).unwrap();
        p.modify(fd, 7, Interest::READABLE, Mode::Edge).unwrap();
        // Read 64 KiB, waiting for the edge whenever the socket is empty: the poll is armed
        // and keeps being woken by the flood. Then remove and close.
        let mut buf = [0u8; 4096];
        let mut got = 0;
        let mut events = Events::with_capacity(8);
        while got < 64 * 1024 {
            match (&s).read(&mut buf) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    p.wait(&mut events, None).unwrap();
                }
                Err(e) => panic!("{name}: read: {e}"),
            }
        }
        p.deregister(fd).unwrap();
        drop(s);
        // An untimed wait, ended by a notify once the flooding peer has seen the reset.
        let n = p.notifier();
        let peer = thread::spawn(move || {
            let r = flood.join().unwrap();
            n.notify().unwrap();
            r
        });
        p.wait(&mut events, None).unwrap();
        let (sent, kind) = peer.join().unwrap();
        assert!(
            matches!(
                kind,
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{name}: the closed socket stayed open: {kind:?} after {sent} bytes"
        );
    }
}
