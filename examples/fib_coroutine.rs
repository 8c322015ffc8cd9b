//! The seed's coroutine demo, with tasks.
//!
//! One task prints `<unix-seconds> - Hello world!` every 3 seconds. Another reads lines from
//! stdin without blocking the loop and answers each number `n` with `fib(n) = <value>`,
//! computed by a naive async recursion that yields to the loop as it goes, so the hello lines
//! keep coming while, say, `fib(32)` is computed. A line that is not a number gets a one-line
//! error; `exit` or end of input ends it (status 0).
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::io::{AssertAsync, AsyncBufReadExt, AsyncRead, BufReader};
use futures_lite::StreamExt;
use ioloop::{Async, IoLoop};
use nix::fcntl::{fcntl, FcntlArg, OFlag};

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

/// Stdin as an async reader: registered on the loop when it is a terminal, pipe or socket;
/// a regular file (`< file`, which epoll refuses and which never blocks anyway) is read
/// directly.
fn async_stdin() -> io::Result<(Box<dyn AsyncRead + Unpin>, RestoreFlags)> {
    let fd = io::stdin().as_fd().try_clone_to_owned()?;
    let restore = RestoreFlags {
        flags: OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?),
        fd: fd.try_clone()?,
    };
    let file = File::from(fd);
    let regular = file.metadata()?.is_file();
    let reader: Box<dyn AsyncRead + Unpin> = if regular {
        Box::new(AssertAsync::new(file))
    } else {
        Box::new(Async::new(file)?)
    };
    Ok((reader, restore))
}

fn main() -> io::Result<()> {
    let lp = IoLoop::new()?;
    lp.block_on(async {
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
        let mut lines = BufReader::new(stdin).lines();
        while let Some(line) = lines.next().await {
            let line = line?;
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
    })?
}
