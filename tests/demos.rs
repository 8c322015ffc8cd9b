//! The seed's three demos (`examples/hello_eventloop.rs`, `callbacks.rs`, `fib_coroutine.rs`),
//! run as a user runs them: lines on stdin, answers on stdout, status 0 at the end. Each runs
//! on the default backend, as `cargo run --example <name>` does.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const DEMOS: [&str; 3] = ["hello_eventloop", "callbacks", "fib_coroutine"];

/// Not a timing assertion: a demo that does not end fails the test instead of hanging it.
const HANG: Duration = Duration::from_secs(60);

/// Starts `demo` with `stdin`, its stdout and stderr piped.
fn spawn(demo: &str, stdin: impl Into<Stdio>) -> Child {
    Command::new(util::examples_dir().join(demo))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {demo}: {e}"))
}

/// Kills `child` if `f` does not return within [`HANG`], and panics then with `what`.
fn unless_hung<T: Send + 'static>(
    child: u32,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child).unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()));
    rx.recv_timeout(HANG).unwrap_or_else(|_| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("{what}");
    })
}

/// Runs `demo` with `input` on stdin, closed after it if `close` (else kept open, so only an
/// `exit` line can end the demo); returns its stdout once it has exited with status 0.
fn run(demo: &str, input: &[u8], close: bool) -> String {
    let mut child = spawn(demo, Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let open = (!close).then_some(stdin);
    let input = String::from_utf8_lossy(input);
    let stdout = wait(
        demo,
        child,
        &format!("input {input:?}, stdin closed: {close}"),
    );
    drop(open);
    stdout
}

/// Waits for `child`, run as `what` says; returns its stdout once it has exited with status 0.
fn wait(demo: &str, child: Child, what: &str) -> String {
    let id = child.id();
    let out = unless_hung(id, &format!("{demo} did not end ({what})"), move || {
        child.wait_with_output()
    })
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{demo} ({what}): {}\n{stdout}{stderr}",
        out.status
    );
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
        let out = run(demo, b"7\nabc\n\n50\n10\n", true);
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
        let out = run(demo, b"6\nexit\n9\n", false);
        line_at(demo, &out, "fib(6) = 8");
        assert!(!out.contains("fib(9)"), "{demo}: read past exit:\n{out}");
    }
}

/// A line that is not UTF-8 is a line that is not a number: every demo says so and goes on.
#[test]
fn demos_answer_a_line_that_is_not_utf8() {
    for demo in DEMOS {
        let out = run(demo, b"7\n\xff\xfe\n10\n", true);
        let seven = line_at(demo, &out, "fib(7) = 13");
        let bad = line_at(
            demo,
            &out,
            "not a number: \"\u{fffd}\u{fffd}\" (type a number, or exit)",
        );
        let ten = line_at(demo, &out, "fib(10) = 55");
        assert!(seven < bad && bad < ten, "{demo}: order:\n{out}");
    }
}

/// Every demo runs with stdin from /dev/null, which epoll refuses (`EPERM`): the hello line,
/// then end of input ends it.
#[test]
fn demos_take_stdin_from_dev_null() {
    for demo in DEMOS {
        let out = wait(demo, spawn(demo, Stdio::null()), "stdin from /dev/null");
        assert!(
            out.lines().any(|l| l.ends_with(" - Hello world!")),
            "{demo}: no hello line in:\n{out}"
        );
    }
}

/// `fib_coroutine` sets `O_NONBLOCK` on stdin's open file, which it shares with whoever gave
/// it that stdin (at a terminal: the shell and the programs after it). SIGINT (Ctrl-C) and
/// SIGTERM end it as they would without a handler, but only once the flag is off again.
#[test]
fn fib_coroutine_restores_stdin_flags_on_a_signal() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::signal::{kill, Signal};

    let nonblocking = |fd: &OwnedFd| {
        OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).unwrap()).contains(OFlag::O_NONBLOCK)
    };
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // A socket, not a pipe: std makes both ends close-on-exec, so the child has only its
        // stdin, and `ours` shares its open file (and so its flags).
        let (mut input, theirs) = UnixStream::pair().unwrap();
        let ours = OwnedFd::from(theirs.try_clone().unwrap());
        let mut child = spawn("fib_coroutine", OwnedFd::from(theirs));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        input.write_all(b"1\n").unwrap();
        // Once it has answered, it is reading stdin through the loop: O_NONBLOCK is set.
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let answered = unless_hung(child.id(), "fib_coroutine did not answer", move || {
            stdout.lines().any(|l| l.unwrap() == "fib(1) = 1")
        });
        assert!(answered, "fib_coroutine ended without answering");
        assert!(
            nonblocking(&ours),
            "stdin is not non-blocking: the test tests nothing"
        );
        kill(pid, signal).unwrap();
        let status = unless_hung(child.id(), "fib_coroutine did not end", move || {
            child.wait().unwrap()
        });
        assert_eq!(status.signal(), Some(signal as i32), "{signal}: {status}");
        assert!(!nonblocking(&ours), "{signal}: stdin left non-blocking");
        drop(input);
    }
}
