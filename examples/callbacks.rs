//! The seed's callback demo on `IoLoop`: a stdin handler and a hello timer that re-arms
//! itself every 3 s. Each line is a number n (prints fib(n)); `exit` or end of input stops
//! the loop; anything else prints a one-line error and the loop goes on.
//!
//! `cargo run --example callbacks`

mod common;

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use common::{Input, Lines};
use ioloop::{Interest, IoLoop};

/// Prints the greeting and schedules itself again, as the seed's callback does.
fn hello(lp: &IoLoop) {
    common::hello();
    lp.call_later(Duration::from_secs(3), hello);
}

/// Handles what one read of stdin gave; returns false when the loop should stop.
fn handle_input(input: Input) -> bool {
    let (lines, eof) = match input {
        Input::Lines(l) => (l, false),
        Input::Eof(last) => (last.into_iter().collect(), true),
    };
    for line in lines.iter().filter(|l| !l.is_empty()) {
        if line == "exit" {
            return false;
        }
        match common::parse_n(line) {
            Ok(n) => common::run_fib(n),
            Err(msg) => println!("{msg}"),
        }
    }
    !eof
}

fn main() -> io::Result<()> {
    let lp = IoLoop::new()?;
    let lines = RefCell::new(Lines::default());
    let on_stdin = move |lp: &IoLoop| {
        let input = lines.borrow_mut().read_stdin();
        match input.map(handle_input) {
            Ok(true) => {}
            Ok(false) => lp.stop(),
            Err(e) => {
                eprintln!("reading stdin: {e}");
                lp.stop();
            }
        }
    };
    let stdin = io::stdin();
    if let Err(e) = lp.add_handler(&stdin, Interest::READABLE, move |lp, _fd, _ready| {
        on_stdin(lp)
    }) {
        // A regular file or /dev/null on stdin: epoll refuses it (EPERM). Such a file is
        // always readable, so read it from a callback instead.
        eprintln!("stdin cannot be watched ({e}); reading it directly");
        let lines = RefCell::new(Lines::default());
        fn pump(lp: &IoLoop, lines: RefCell<Lines>) {
            let input = lines.borrow_mut().read_stdin();
            match input.map(handle_input) {
                Ok(true) => lp.add_callback(move |lp| pump(lp, lines)),
                _ => lp.stop(),
            }
        }
        lp.add_callback(move |lp| pump(lp, lines));
    }
    lp.add_callback(hello);
    lp.run()
}
