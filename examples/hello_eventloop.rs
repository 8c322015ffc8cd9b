//! The seed's first demo, straight on a `Poller`: wait on stdin with a 100 ms timeout, print
//! `<unix-seconds> - Hello world!` every 3 s, and for each line of stdin read a number n and
//! print fib(n). `exit` or end of input ends it (status 0).
//!
//! `cargo run --example hello_eventloop` (type numbers; `exit` or Ctrl-D ends it).

mod common;

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{Input, Lines};
use ioloop::sys::{DefaultPoller, Events, Interest, Mode, Poller};

const STDIN: u64 = 0;

fn main() -> io::Result<()> {
    let poller = DefaultPoller::new()?;
    let stdin = io::stdin();
    // A regular file or /dev/null cannot be watched by every backend (epoll says EPERM): then
    // stdin is always ready, which is what poll and select say about such files anyway.
    let watched = poller
        .register(stdin.as_raw_fd(), STDIN, Interest::READABLE, Mode::Level)
        .is_ok();
    let mut events = Events::with_capacity(8);
    let mut lines = Lines::default();
    let mut next_hello = Instant::now();
    loop {
        if Instant::now() >= next_hello {
            common::hello();
            next_hello += Duration::from_secs(3);
        }
        let ready = if watched {
            poller.wait(&mut events, Some(Duration::from_millis(100)))?;
            events.iter().any(|e| e.token() == STDIN)
        } else {
            true
        };
        if !ready {
            continue;
        }
        let (batch, eof) = match lines.read_stdin()? {
            Input::Lines(l) => (l, false),
            Input::Eof(last) => (last.into_iter().collect(), true),
        };
        for line in batch.iter().filter(|l| !l.is_empty()) {
            if line == "exit" {
                return Ok(());
            }
            match common::parse_n(line) {
                Ok(n) => common::run_fib(n),
                Err(msg) => println!("{msg}"),
            }
        }
        if eof {
            return Ok(());
        }
    }
}
