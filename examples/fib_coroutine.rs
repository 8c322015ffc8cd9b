//! The seed's coroutine demo, with tasks.
//!
//! One task prints `<unix-seconds> - Hello world!` every 3 seconds. Another reads lines from
//! stdin without blocking the loop and answers each number `n` with `fib(n) = <value>`,
//! computed by a naive async recursion that yields to the loop as it goes, so the hello lines
//! keep coming while, say, `fib(32)` is computed. A line that is not a number gets a one-line
//! error; `exit` or end of input ends it (status 0). Ctrl-C (SIGINT) or SIGTERM ends it too,
//! after restoring stdin's flags.
//!
//! ```text
//! cargo run --example fib_coroutine
//! printf '10\nx\n32\n' | cargo run --example fib_coroutine
//! ```

use std::cell::Cell;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::io::{AssertAsync, AsyncBufReadExt, AsyncRead, BufReader};
use futures_lite::StreamExt;
use ioloop::{Async, IoLoop};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{raise, Signal};

/// Larger inputs are refused: the naive recursion takes exponential time.
const MAX_N: u32 = 40;

/// Recursive calls between two yields to the loop.
const CALLS_PER_YIELD: u32 = 100_000;

thread_local! {
    static CALLS: Cell<u32> = const { Cell::new(0) };
}

/// Naive recursive Fibonacci as an async function (boxed: async recursion needs an
/// indirection) that lets the loop run every [`CALLS_PER_YIELD`] calls.
fn fib(n: u32) -> Pin<Box<dyn Future<Output = u64>>> {
    Box::pin(async move {
        if n < 2 {
            return u64::from(n);
        }
        let calls = CALLS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        if calls % CALLS_PER_YIELD == 0 {
            ioloop::yield_now().await;
        }
        fib(n - 1).await + fib(n - 2).await
    })
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Restores stdin's file status flags (we set `O_NONBLOCK` on the shared open file, which
/// the shell would otherwise inherit).
struct RestoreFlags {
    fd: OwnedFd,
    flags: OFlag,
}

impl Drop for RestoreFlags {
    fn drop(&mut self) {
        let _ = fcntl(self.fd.as_fd(), FcntlArg::F_SETFL(self.flags));
    }
}

/// Stdin as an async reader: registered on the loop when it is a terminal, pipe or socket.
/// A file the poller refuses (epoll: `EPERM` for a regular file, `< file`, or /dev/null)
/// never blocks anyway, so it is read directly, as `hello_eventloop` and `callbacks` do.
fn async_stdin() -> io::Result<(Box<dyn AsyncRead + Unpin>, RestoreFlags)> {
    let fd = io::stdin().as_fd().try_clone_to_owned()?;
    let restore = RestoreFlags {
        flags: OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?),
        fd: fd.try_clone()?,
    };
    let file = File::from(fd);
    let reader: Box<dyn AsyncRead + Unpin> = match Async::new(file.try_clone()?) {
        Ok(watched) => Box::new(watched),
        Err(_) => Box::new(AssertAsync::new(file)),
    };
    Ok((reader, restore))
}

fn main() -> io::Result<()> {
    let lp = IoLoop::new()?;
    // Ctrl-C or SIGTERM stops the loop instead of killing the process at once: `block_on`
    // then returns and drops the main future, whose `RestoreFlags` guard takes `O_NONBLOCK`
    // off stdin's open file, which the shell and the next program share.
    let caught = Rc::new(Cell::new(None));
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let caught = Rc::clone(&caught);
        lp.add_signal_handler(signal as i32, move |lp, _| {
            caught.set(Some(signal));
            lp.stop();
        })?;
    }
    let done = lp.block_on(async {
        ioloop::spawn(async {
            let mut every = ioloop::interval(Duration::from_secs(3));
            loop {
                every.tick().await;
                println!("{} - Hello world!", unix_seconds());
            }
        })
        .detach();
        // Lets the hello task print its first line before stdin is read, as the other demos
        // do: input that is all there already would otherwise be answered, up to its end,
        // within this first poll.
        ioloop::yield_now().await;

        let (stdin, _restore) = async_stdin()?;
        // Lines as bytes: one that is not UTF-8 gets the "not a number" line, as in the other
        // demos, instead of ending the program with `InvalidData`.
        let mut lines = BufReader::new(stdin).split(b'\n');
        while let Some(line) = lines.next().await {
            let line = line?;
            let line = String::from_utf8_lossy(&line);
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            if text == "exit" {
                break;
            }
            match text.parse::<u32>() {
                Ok(n) if n <= MAX_N => println!("fib({n}) = {}", fib(n).await),
                Ok(n) => println!("{n} is too large: this naive fib takes n <= {MAX_N}"),
                Err(_) => println!("not a number: {text:?} (type a number, or exit)"),
            }
        }
        io::Result::Ok(())
    });
    if let Some(signal) = caught.get() {
        // Now die of the signal, as without the handler, so that the shell sees it (a script
        // stops on Ctrl-C); exit with its conventional status if it is ignored.
        lp.remove_signal_handler(signal as i32)?;
        let _ = raise(signal);
        std::process::exit(128 + signal as i32);
    }
    done?
}
