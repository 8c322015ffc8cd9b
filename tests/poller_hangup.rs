//! What a closed peer looks like: `HUP` (and `READABLE`, so a reader finds the end of file),
//! except on select, which only has `READABLE`; `ERROR` for a reset connection. See the
//! `Ready` table in `sys/src/flags.rs`.

mod util;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use ioloop_sys::{Events, Interest, Mode, Poller, Ready};
use util::{assert_hangup, backend_tests, expect_one, fd, register, send};

fn socketpair_peer_drop<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (mut a, b) = util::socketpair();
    register(&p, fd(&a), 1, Interest::READABLE, Mode::Level);
    drop(b);
    assert_hangup::<P>(expect_one(&p, &mut ev, 1));
    assert_eq!(a.read(&mut [0u8; 8]).unwrap(), 0, "end of file");
    // Level: a hang-up is reported for as long as it lasts.
    assert_hangup::<P>(expect_one(&p, &mut ev, 1));
    p.deregister(fd(&a)).unwrap();
}

fn socketpair_peer_drop_with_data<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (mut a, b) = util::socketpair();
    register(&p, fd(&a), 1, Interest::READABLE, Mode::Oneshot);
    send(&b, b"last words");
    drop(b);
    assert_hangup::<P>(expect_one(&p, &mut ev, 1));
    let mut buf = [0u8; 32];
    assert_eq!(a.read(&mut buf).unwrap(), 10);
    assert_eq!(a.read(&mut buf).unwrap(), 0);
}

fn tcp_peer_close<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (mut client, server) = util::tcp_pair();
    register(&p, fd(&client), 2, Interest::READABLE, Mode::Level);
    drop(server);
    // On TCP the FIN may arrive a moment after close returns: wait for it.
    assert_hangup::<P>(expect_one(&p, &mut ev, 2));
    assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0, "end of file");
    p.deregister(fd(&client)).unwrap();
}

fn tcp_write_side_shutdown<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (mut client, server) = util::tcp_pair();
    register(&p, fd(&client), 3, Interest::READABLE, Mode::Level);
    server.shutdown(std::net::Shutdown::Write).unwrap();
    // A half-close: epoll says EPOLLRDHUP, poll POLLRDHUP (Linux), kqueue EV_EOF.
    assert_hangup::<P>(expect_one(&p, &mut ev, 3));
    assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0, "end of file");
    p.deregister(fd(&client)).unwrap();
}

fn pipe_writer_closed_with_data<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (mut r, w) = util::pipe();
    register(&p, fd(&r), 4, Interest::READABLE, Mode::Level);
    send(&w, b"tail");
    drop(w);
    let ready = expect_one(&p, &mut ev, 4);
    assert_hangup::<P>(ready);
    let mut buf = [0u8; 8];
    assert_eq!(r.read(&mut buf).unwrap(), 4);
    assert_eq!(r.read(&mut buf).unwrap(), 0);
}

fn pipe_writer_closed_empty<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (mut r, w) = util::pipe();
    register(&p, fd(&r), 5, Interest::READABLE, Mode::Level);
    drop(w);
    let ready = expect_one(&p, &mut ev, 5);
    // An empty pipe whose writer is gone: Linux's pipe_poll says POLLHUP without POLLIN, so
    // epoll/poll/uring report HUP (READABLE optional); select puts it in the read set.
    if P::NAME == "select" {
        assert!(ready.contains(Ready::READABLE), "{ready:?}");
    } else {
        assert!(ready.contains(Ready::HUP), "{}: {ready:?}", P::NAME);
    }
    assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
}

fn pipe_reader_closed_is_error_for_writer<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (r, mut w) = util::pipe();
    register(&p, fd(&w), 6, Interest::WRITABLE, Mode::Level);
    drop(r);
    let ready = expect_one(&p, &mut ev, 6);
    // epoll/poll: EPOLLERR/POLLERR; kqueue: EV_EOF; select: in the write set (the write then
    // fails with EPIPE). Whatever the flags, the writer must be woken.
    assert!(!ready.is_empty(), "{ready:?}");
    if P::NAME == "select" {
        assert!(ready.contains(Ready::WRITABLE), "{ready:?}");
    } else {
        assert!(
            ready.intersects(Ready::ERROR | Ready::HUP),
            "{}: {ready:?}",
            P::NAME
        );
    }
    use std::io::Write;
    assert_eq!(w.write(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
}

/// A connection reset (SO_LINGER 0, then close sends RST) is `ERROR` everywhere but select,
/// where it is `READABLE` and `read` fails with `ConnectionReset`.
fn tcp_reset_is_error<P: Poller>() {
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (mut client, server) = util::tcp_pair();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(&server, Linger, &linger).unwrap();
    register(&p, fd(&client), 7, Interest::READABLE, Mode::Level);
    drop(server);
    // The RST may be processed a moment after close returns: take the first event that
    // shows it (Level keeps reporting).
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let ready = expect_one(&p, &mut ev, 7);
        let done = if P::NAME == "select" {
            ready.contains(Ready::READABLE)
        } else {
            ready.contains(Ready::ERROR)
        };
        if done || Instant::now() > deadline {
            break ready;
        }
    };
    if P::NAME == "select" {
        assert!(ready.contains(Ready::READABLE), "{ready:?}");
    } else {
        assert!(ready.contains(Ready::ERROR), "{}: {ready:?}", P::NAME);
    }
    let err = client.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    p.deregister(fd(&client)).unwrap();
}

/// Deregister, then close: the peer reads the end of the stream at once, with no wait in
/// between (io_uring's poll holds a reference to the file until its removal is submitted),
/// in every mode, on a shared and an owned poller.
fn deregister_then_close_ends_the_stream<P: Poller>() {
    for owned in [false, true] {
        let p = if owned {
            P::new_owned().unwrap()
        } else {
            util::poller::<P>()
        };
        let mut ev = Events::with_capacity(8);
        for mode in [Mode::Level, Mode::Edge, Mode::Oneshot] {
            if !p.supports(mode) {
                continue;
            }
            let (a, mut b) = util::socketpair();
            let both = Interest::READABLE | Interest::WRITABLE;
            register(&p, fd(&a), 1, both, mode);
            // The registration reaches the kernel (and reports the writable socket).
            assert_eq!(
                expect_one(&p, &mut ev, 1) & Ready::WRITABLE,
                Ready::WRITABLE
            );
            p.deregister(fd(&a)).unwrap();
            drop(a);
            let end = b.read(&mut [0u8; 8]);
            assert_eq!(
                end.map_err(|e| e.kind()),
                Ok(0),
                "{} {mode:?} owned={owned}: the peer did not see the end of the stream",
                P::NAME
            );
        }
    }
}

backend_tests!(
    deregister_then_close_ends_the_stream,
    socketpair_peer_drop,
    socketpair_peer_drop_with_data,
    tcp_peer_close,
    tcp_write_side_shutdown,
    pipe_writer_closed_with_data,
    pipe_writer_closed_empty,
    pipe_reader_closed_is_error_for_writer,
    tcp_reset_is_error,
);
