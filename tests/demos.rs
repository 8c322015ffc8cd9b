//! The seed's three demos (`examples/hello_eventloop.rs`, `callbacks.rs`, `fib_coroutine.rs`),
//! run as a user runs them: lines on stdin, answers on stdout, status 0 at the end. Each runs
//! on the default backend, as `cargo run --example <name>` does.

mod util;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const DEMOS: [&str; 3] = ["hello_eventloop", "callbacks", "fib_coroutine"];

/// Not a timing assertion: a demo that does not end fails the test instead of hanging it.
const HANG: Duration = Duration::from_secs(60);

/// Runs `demo` with `input` on stdin, closed after it if `close` (else kept open, so only an
/// `exit` line can end the demo); returns its stdout once it has exited with status 0.
fn run(demo: &str, input: &str, close: bool) -> String {
    let mut child = Command::new(util::examples_dir().join(demo))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {demo}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    let open = (!close).then_some(stdin);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(HANG) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("{demo} did not end (input {input:?}, stdin closed: {close})");
        }
    };
    drop(open);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{demo}: {} {stdout}", out.status);
    stdout
}

/// The index of the first line of `out` that is `line`, which must be there.
fn line_at(demo: &str, out: &str, line: &str) -> usize {
    out.lines()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("{demo}: no line {line:?} in:\n{out}"))
}

/// Every demo: the first hello at once, fib of each number in input order, a one-line error
/// for a line that is not a number and one for a number too large for the naive fib, and the
/// end of input ends it.
#[test]
fn demos_answer_each_line_and_end_at_end_of_input() {
    for demo in DEMOS {
        let out = run(demo, "7\nabc\n\n50\n10\n", true);
        let hello = out
            .lines()
            .find_map(|l| l.strip_suffix(" - Hello world!"))
            .unwrap_or_else(|| panic!("{demo}: no hello line in:\n{out}"));
        assert!(hello.parse::<u64>().is_ok(), "{demo}: {hello:?}");
        let seven = line_at(demo, &out, "fib(7) = 13");
        let abc = line_at(
            demo,
            &out,
            r#"not a number: "abc" (type a number, or exit)"#,
        );
        let fifty = out
            .lines()
            .position(|l| l.starts_with("50 is too large: this naive fib takes n <= "))
            .unwrap_or_else(|| panic!("{demo}: no refusal of 50 in:\n{out}"));
        let ten = line_at(demo, &out, "fib(10) = 55");
        assert!(
            seven < abc && abc < fifty && fifty < ten,
            "{demo}: order:\n{out}"
        );
        // The empty line is skipped, not an error.
        assert!(!out.contains(r#""""#), "{demo}:\n{out}");
    }
}

/// Every demo stops at an `exit` line, with its stdin still open, and reads nothing after it.
#[test]
fn demos_stop_at_exit() {
    for demo in DEMOS {
        let out = run(demo, "6\nexit\n9\n", false);
        line_at(demo, &out, "fib(6) = 8");
        assert!(!out.contains("fib(9)"), "{demo}: read past exit:\n{out}");
    }
}
