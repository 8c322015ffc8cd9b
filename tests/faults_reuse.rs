//! fd reuse under traffic: handlers close and reopen sockets (which get the fd numbers just
//! freed) in the middle of a batch, many thousand times; no event may ever reach a handler
//! for an fd it was not registered on.
//!
//! Counts: 5 000 close/reopen cycles by default, 100 000 with `IOLOOP_STRESS=full`.

mod faults_util;
mod util;

use std::cell::RefCell;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::rc::Rc;

use faults_util::{inode_of, new_loop, scaled};
use ioloop::{Interest, IoLoop, Poller};
use util::backend_tests;

/// Sockets open at any time (pairs; each read end has a handler).
const SLOTS: usize = 32;

/// One socket pair: the test keeps the write end, the handler owns the read end.
struct Pair {
    id: u64,
    writer: UnixDatagram,
    /// The read end's fd number (the handler owns the socket).
    fd: RawFd,
}

#[derive(Default)]
struct World {
    slots: Vec<Option<Pair>>,
    next_id: u64,
    /// Loop iterations started (the driver bumps it before each `run_once`).
    iter: u64,
    cycles: usize,
    dispatches: usize,
    /// Events that reached a handler for another fd, another socket, or a registration made
    /// after the wait that collected them.
    misdeliveries: usize,
    /// Datagrams a handler read that were not its own.
    foreign_data: usize,
    /// Readable events with nothing to read.
    spurious: usize,
    rng: u64,
}

impl World {
    fn rand(&mut self, n: usize) -> usize {
        // xorshift64*: deterministic, good enough to pick slots.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

type Shared = Rc<RefCell<World>>;

/// Opens a new pair in `slot`, registers its read end, and writes one datagram to it.
fn open<P: Poller>(lp: &IoLoop<P>, world: &Shared, w: &mut World, slot: usize) {
    let (reader, writer) = UnixDatagram::pair().unwrap();
    reader.set_nonblocking(true).unwrap();
    writer.set_nonblocking(true).unwrap();
    let id = w.next_id;
    w.next_id += 1;
    let fd = reader.as_raw_fd();
    let ino = inode_of(fd).unwrap();
    let registered_in = w.iter;
    let world2 = world.clone();
    lp.add_handler(fd, Interest::READABLE, move |lp, got_fd, _ready| {
        let world = world2.clone();
        let mut w = world.borrow_mut();
        w.dispatches += 1;
        if got_fd != fd || w.iter == registered_in || inode_of(got_fd) != Some(ino) {
            w.misdeliveries += 1;
            return;
        }
        let mut any = false;
        let mut buf = [0u8; 16];
        loop {
            match reader.recv(&mut buf) {
                Ok(8) if buf[..8] == id.to_le_bytes() => any = true,
                Ok(_) => w.foreign_data += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
        if !any {
            w.spurious += 1;
        }
        // Churn: close another slot's pair (its event may still be in this batch) and reopen
        // it, which reuses the fd numbers just freed.
        let k = w.rand(SLOTS);
        if let Some(old) = w.slots[k].take() {
            lp.remove_handler(old.fd).unwrap(); // drops the old read end
            drop(old); // closes the old write end
            w.cycles += 1;
        }
        open(lp, &world, &mut w, k);
        // Traffic to two random pairs.
        for _ in 0..2 {
            let k = w.rand(SLOTS);
            if let Some(p) = &w.slots[k] {
                let _ = p.writer.send(&p.id.to_le_bytes());
            }
        }
    })
    .unwrap();
    let _ = writer.send(&id.to_le_bytes());
    w.slots[slot] = Some(Pair { id, writer, fd });
}

fn fd_reuse_never_misdelivers<P: Poller>() {
    let target = scaled(5_000, 100_000);
    let lp = new_loop::<P>();
    let world: Shared = Rc::new(RefCell::new(World {
        slots: (0..SLOTS).map(|_| None).collect(),
        rng: 0x9e37_79b9_7f4a_7c15,
        ..World::default()
    }));
    {
        let mut w = world.borrow_mut();
        for k in 0..SLOTS {
            open(&lp, &world, &mut w, k);
        }
    }
    let mut iterations = 0usize;
    while world.borrow().cycles < target {
        {
            let mut w = world.borrow_mut();
            w.iter += 1;
            // Every pair readable: full batches, and stale events for the pairs that
            // handlers earlier in the batch replace.
            for p in w.slots.iter().flatten() {
                let _ = p.writer.send(&p.id.to_le_bytes());
            }
        }
        lp.run_once().unwrap();
        iterations += 1;
    }
    let w = world.borrow();
    eprintln!(
        "{}: {} close/reopen cycles, {} dispatches in {iterations} iterations: \
         {} misdeliveries, {} foreign datagrams, {} spurious wake-ups",
        P::NAME,
        w.cycles,
        w.dispatches,
        w.misdeliveries,
        w.foreign_data,
        w.spurious
    );
    assert_eq!(w.misdeliveries, 0, "{}", P::NAME);
    assert_eq!(w.foreign_data, 0, "{}", P::NAME);
    assert_eq!(w.spurious, 0, "{}", P::NAME);
    assert_eq!(lp.handler_count(), SLOTS);
}

backend_tests!(fd_reuse_never_misdelivers);
