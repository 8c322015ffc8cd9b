//! Registrations made from another thread while a wait is blocked take effect in that wait.

mod util;

use std::sync::Barrier;
use std::thread;

use ioloop_sys::{Events, Interest, Mode, Poller, Ready};
use util::{backend_tests, fd, register, send};

/// Waits once (no retry on an empty wait: the blocked wait itself must see the change).
#[track_caller]
fn one_wait<P: Poller>(p: &P, ev: &mut Events) -> Vec<ioloop_sys::Event> {
    let n = p.wait(ev, Some(util::LONG)).unwrap();
    assert_eq!(n, ev.len());
    ev.iter().copied().collect()
}

fn register_from_other_thread_wakes_wait<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    send(&b, b"x");
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            register(&p, fd(&a), 7, Interest::READABLE, Mode::Level);
        });
        barrier.wait();
        let got = one_wait(&p, &mut ev);
        assert_eq!(
            got.len(),
            1,
            "{}: the blocked wait missed the register: {got:?}",
            P::NAME
        );
        assert_eq!(got[0].token(), 7);
        assert!(got[0].is_readable());
    });
}

fn readiness_from_other_thread_wakes_wait<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, b) = util::socketpair();
    register(&p, fd(&a), 8, Interest::READABLE, Mode::Oneshot);
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            send(&b, b"x");
        });
        barrier.wait();
        let got = one_wait(&p, &mut ev);
        assert_eq!(got.len(), 1, "{}: {got:?}", P::NAME);
        assert_eq!(got[0].token(), 8);
    });
}

fn modify_from_other_thread_wakes_wait<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let (a, _b) = util::socketpair();
    // Writable, but only READABLE asked for: the wait blocks until the modify.
    register(&p, fd(&a), 9, Interest::READABLE, Mode::Level);
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            util::modify(&p, fd(&a), 10, Interest::WRITABLE, Mode::Oneshot);
        });
        barrier.wait();
        let got = one_wait(&p, &mut ev);
        assert_eq!(
            got.len(),
            1,
            "{}: the blocked wait missed the modify: {got:?}",
            P::NAME
        );
        assert_eq!(got[0].token(), 10);
        assert!(got[0].ready().contains(Ready::WRITABLE));
    });
}

fn deregister_from_other_thread<P: Poller>() {
    let p = util::poller::<P>();
    let mut ev = Events::with_capacity(8);
    let pairs: Vec<_> = (0..16).map(|_| util::socketpair()).collect();
    for (i, (a, _)) in pairs.iter().enumerate() {
        register(&p, fd(a), i as u64, Interest::READABLE, Mode::Level);
    }
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            for (a, _) in &pairs {
                p.deregister(fd(a)).unwrap();
            }
            // Then wake the waiter, which must not see any of the deregistered fds.
            for (_, b) in &pairs {
                send(b, b"x");
            }
            p.notify().unwrap();
        });
        barrier.wait();
        let got = one_wait(&p, &mut ev);
        assert!(
            got.is_empty(),
            "{}: events after deregister: {got:?}",
            P::NAME
        );
    });
}

backend_tests!(
    register_from_other_thread_wakes_wait,
    readiness_from_other_thread_wakes_wait,
    modify_from_other_thread_wakes_wait,
    deregister_from_other_thread,
);
