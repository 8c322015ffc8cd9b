//! Churn: keeps a loop busy for N seconds registering, dispatching, removing and closing
//! sockets, scheduling and cancelling timers, and running callbacks queued by other threads;
//! rotates through the backends. `scripts/soak.sh` runs it under valgrind.
//!
//! ```text
//! cargo run --release --example churn -- 10          # 10 s over epoll, poll, select
//! cargo run --release --example churn -- 10 poll     # one backend
//! ```

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ioloop::{Interest, IoLoop, Poller, TimeoutId};

/// Socket pairs open at once.
const SLOTS: usize = 48;
/// Callbacks other threads keep in flight at most (bounds memory when the loop is slow, as
/// it is under valgrind).
const IN_FLIGHT: usize = 256;

#[derive(Default)]
struct Stats {
    dispatches: usize,
    cycles: usize,
    timers_fired: usize,
    timers_cancelled: usize,
    remote_callbacks: usize,
    iterations: usize,
}

struct World {
    /// (test-side end, registered end's fd)
    slots: Vec<Option<(UnixStream, RawFd)>>,
    timers: Vec<TimeoutId>,
    rng: u64,
    stats: Stats,
}

impl World {
    fn rand(&mut self, n: usize) -> usize {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

type Shared = Rc<RefCell<World>>;

fn open<P: Poller>(lp: &IoLoop<P>, world: &Shared, w: &mut World, k: usize) {
    let (mine, theirs) = UnixStream::pair().expect("socketpair");
    mine.set_nonblocking(true).unwrap();
    theirs.set_nonblocking(true).unwrap();
    let fd = theirs.as_raw_fd();
    let world2 = world.clone();
    lp.add_handler(fd, Interest::READABLE, move |lp, _fd, _ready| {
        let mut buf = [0u8; 256];
        while matches!((&theirs).read(&mut buf), Ok(n) if n > 0) {}
        let world = world2.clone();
        let mut w = world.borrow_mut();
        w.stats.dispatches += 1;
        // Close and reopen another pair (its event may be later in this batch).
        let k = w.rand(SLOTS);
        if let Some((_, old_fd)) = w.slots[k].take() {
            lp.remove_handler(old_fd).expect("remove_handler");
            w.stats.cycles += 1;
        }
        open(lp, &world, &mut w, k);
        // Timers: schedule one, sometimes cancel an older one.
        let delay = Duration::from_micros(w.rand(2000) as u64);
        let world3 = world.clone();
        let id = lp.call_later(delay, move |_| world3.borrow_mut().stats.timers_fired += 1);
        w.timers.push(id);
        if w.timers.len() > 64 {
            let n = w.timers.len();
            let i = w.rand(n);
            let id = w.timers.swap_remove(i);
            if lp.remove_timeout(id) {
                w.stats.timers_cancelled += 1;
            }
        }
        // Traffic.
        for _ in 0..2 {
            let k = w.rand(SLOTS);
            if let Some((s, _)) = &w.slots[k] {
                let _ = (&*s).write(b"x");
            }
        }
    })
    .expect("add_handler");
    let _ = (&mine).write(b"x");
    w.slots[k] = Some((mine, fd));
}

fn churn<P: Poller>(secs: f64) -> Stats {
    let lp = IoLoop::<P>::with_backend().expect("loop");
    let world: Shared = Rc::new(RefCell::new(World {
        slots: (0..SLOTS).map(|_| None).collect(),
        timers: Vec::new(),
        rng: 0x2545_f491_4f6c_dd1d,
        stats: Stats::default(),
    }));
    {
        let mut w = world.borrow_mut();
        for k in 0..SLOTS {
            open(&lp, &world, &mut w, k);
        }
    }
    // Other threads queue callbacks, bounded in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let remote = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (h, stop, in_flight, remote) =
                (lp.handle(), stop.clone(), in_flight.clone(), remote.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if in_flight.load(Ordering::Relaxed) >= IN_FLIGHT {
                        std::thread::yield_now();
                        continue;
                    }
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    let (in_flight, remote) = (in_flight.clone(), remote.clone());
                    h.add_callback(move |_| {
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                        remote.fetch_add(1, Ordering::Relaxed);
                    })
                    .expect("add_callback");
                }
            })
        })
        .collect();
    // A periodic timer keeps traffic going and ends the run.
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let iterations = Rc::new(Cell::new(0usize));
    let (w2, it2) = (world.clone(), iterations.clone());
    lp.call_every(Duration::from_millis(1), move |lp| {
        it2.set(it2.get() + 1);
        if Instant::now() >= end {
            lp.stop();
            return;
        }
        let w = w2.borrow();
        for (s, _) in w.slots.iter().flatten() {
            match (&*s).write(b"y") {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
    })
    .expect("call_every");
    lp.run().expect("run");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // Run the callbacks still queued, then tear everything down explicitly.
    lp.call_later(Duration::ZERO, |_| {});
    lp.run_once().expect("run_once");
    let mut stats = std::mem::take(&mut world.borrow_mut().stats);
    stats.remote_callbacks = remote.load(Ordering::Relaxed);
    stats.iterations = iterations.get();
    let slots = std::mem::take(&mut world.borrow_mut().slots);
    for (_, fd) in slots.into_iter().flatten() {
        lp.remove_handler(fd).expect("remove_handler");
    }
    assert_eq!(lp.handler_count(), 0);
    stats
}

fn run_named(name: &str, secs: f64) {
    let s = match name {
        #[cfg(ioloop_has_epoll)]
        "epoll" => churn::<ioloop::sys::Epoll>(secs),
        #[cfg(ioloop_has_uring)]
        "uring" => churn::<ioloop::sys::Uring>(secs),
        #[cfg(ioloop_has_kqueue)]
        "kqueue" => churn::<ioloop::sys::Kqueue>(secs),
        "poll" => churn::<ioloop::sys::Poll>(secs),
        "select" => churn::<ioloop::sys::Select>(secs),
        other => {
            eprintln!("unknown backend {other:?}");
            std::process::exit(2);
        }
    };
    println!(
        "{name}: {:.1}s: {} dispatches, {} close/reopen cycles, {} timers fired, {} cancelled, \
         {} callbacks from threads, {} periodic ticks",
        secs,
        s.dispatches,
        s.cycles,
        s.timers_fired,
        s.timers_cancelled,
        s.remote_callbacks,
        s.iterations
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args
        .next()
        .map(|s| s.parse().expect("SECONDS"))
        .unwrap_or(5.0);
    let which = args.next().unwrap_or_else(|| "all".into());
    let all: &[&str] = &[
        #[cfg(ioloop_has_epoll)]
        "epoll",
        #[cfg(ioloop_has_uring)]
        "uring",
        #[cfg(ioloop_has_kqueue)]
        "kqueue",
        "poll",
        "select",
    ];
    if which == "all" {
        for name in all {
            run_named(name, secs / all.len() as f64);
        }
    } else {
        run_named(&which, secs);
    }
}
