//! What the seed's demos share: splitting stdin into lines, parsing a number, fib.
#![allow(dead_code)]

use std::io::{self, Read};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, for the hello lines.
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Prints the seed's periodic greeting.
pub fn hello() {
    println!("{} - Hello world!", unix_seconds());
}

/// Collects bytes read from stdin into complete lines.
#[derive(Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// `buf[..scanned]` holds no newline: only the bytes after it are searched.
    scanned: usize,
}

/// What one read of stdin gave.
pub enum Input {
    /// Zero or more complete lines (the partial tail is kept for later).
    Lines(Vec<String>),
    /// End of file; carries the last line if it had no newline.
    Eof(Option<String>),
}

impl Lines {
    /// Reads what stdin has now (one `read`, which readiness says will not block).
    pub fn read_stdin(&mut self) -> io::Result<Input> {
        let mut chunk = [0u8; 64 * 1024];
        let n = match io::stdin().lock().read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Input::Lines(vec![])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Input::Lines(vec![])),
            Err(e) => return Err(e),
        };
        if n == 0 {
            let rest = std::mem::take(&mut self.buf);
            self.scanned = 0;
            let rest = String::from_utf8_lossy(&rest).trim().to_string();
            return Ok(Input::Eof((!rest.is_empty()).then_some(rest)));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(Input::Lines(self.take_lines()))
    }

    /// Splits off the complete lines received so far.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        self.take_lines()
    }

    fn take_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        // Searching from `scanned`, not from the start: rescanning a long partial line on
        // every read made it quadratic (a 16 MB line took 7.5 s).
        let (mut start, mut pos) = (0, self.scanned);
        while let Some(nl) = self.buf[pos..].iter().position(|b| *b == b'\n') {
            pos += nl + 1;
            let line = &self.buf[start..pos];
            lines.push(String::from_utf8_lossy(line).trim().to_string());
            start = pos;
        }
        // One drain for all the lines: one per line would move the rest of the buffer each time.
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        lines
    }
}

/// The largest n the naive fib is asked for (fib(45) already takes seconds).
pub const MAX_N: u64 = 45;

/// Parses a line as n for fib, with a one-line message for anything else.
pub fn parse_n(line: &str) -> Result<u64, String> {
    match line.parse::<u64>() {
        Ok(n) if n <= MAX_N => Ok(n),
        Ok(n) => Err(format!(
            "{n} is too large: this naive fib takes n <= {MAX_N}"
        )),
        Err(_) => Err(format!("not a number: {line:?} (type a number, or exit)")),
    }
}

/// The seed's deliberately slow, naive recursive Fibonacci.
pub fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// Computes fib(n) in the foreground and prints the seed's two lines.
pub fn run_fib(n: u64) {
    let start = Instant::now();
    let value = fib(n);
    println!(
        "Executing fib took {:.6} seconds.",
        start.elapsed().as_secs_f64()
    );
    println!("fib({n}) = {value}");
}
