// Shared by `sys/build.rs` and the workspace's `build.rs` (pulled in with `include!`):
// the one place that says which poller backends each target OS has.

/// Every backend name `IOLOOP_POLLER` accepts, in Tornado's order of preference.
#[allow(dead_code)]
const ALL_BACKENDS: &[&str] = &["epoll", "kqueue", "uring", "poll", "select"];

/// The backends the target OS offers, most preferred first (the first one is the default).
fn backends_for(target_os: &str) -> &'static [&'static str] {
    match target_os {
        "linux" => &["epoll", "uring", "poll", "select"],
        "android" => &["epoll", "poll", "select"],
        "macos" | "ios" | "tvos" | "watchos" | "visionos" | "freebsd" | "netbsd" | "openbsd"
        | "dragonfly" => &["kqueue", "poll", "select"],
        _ => &["poll", "select"],
    }
}

/// Emits `cargo:rustc-check-cfg` for the backend cfgs and `cargo:rustc-cfg` for those the
/// target has: `ioloop_has_epoll`, `ioloop_has_kqueue`, ...
#[allow(dead_code)]
fn emit_backend_cfgs() -> &'static [&'static str] {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let family = std::env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    for name in ALL_BACKENDS {
        println!("cargo:rustc-check-cfg=cfg(ioloop_has_{name})");
    }
    if !family.split(',').any(|f| f == "unix") {
        return &[];
    }
    let have = backends_for(&os);
    for name in have {
        println!("cargo:rustc-cfg=ioloop_has_{name}");
    }
    // ppoll(2) and pselect(2) with a `timespec` (nanosecond timeouts): where the OS has them
    // natively; elsewhere (macOS, illumos, ...) poll(2) takes ms and select(2) a `timeval`.
    println!("cargo:rustc-check-cfg=cfg(ioloop_timespec_poll)");
    if matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "dragonfly" | "netbsd" | "openbsd"
    ) {
        println!("cargo:rustc-cfg=ioloop_timespec_poll");
    }
    // The untimed legacy wait calls (`epoll_wait`, `poll`; `select` on x86_64 only, whose
    // 32-bit x86 number is the old one-argument call) where they exist and may be used:
    // x86 Linux. Not Android, whose seccomp filter kills an app for them on 64-bit ABIs
    // (bionic itself calls only the `p` variants); the newer architectures lack them.
    println!("cargo:rustc-check-cfg=cfg(ioloop_legacy_wait)");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os == "linux" && matches!(arch.as_str(), "x86_64" | "x86") {
        println!("cargo:rustc-cfg=ioloop_legacy_wait");
    }
    // File descriptors made close-on-exec and non-blocking by the call that creates them:
    // pipe2(2) (`ioloop_pipe2`), and `SOCK_NONBLOCK | SOCK_CLOEXEC` taken by socket(2) and
    // accept4(2) (`ioloop_sock_flags`). The same systems have both: all but Apple's (and the
    // rarer Unixes), which get pipe(2)/socket(2)/accept(2) and then fcntl.
    println!("cargo:rustc-check-cfg=cfg(ioloop_pipe2)");
    println!("cargo:rustc-check-cfg=cfg(ioloop_sock_flags)");
    if matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "dragonfly" | "netbsd" | "openbsd" | "illumos" | "solaris"
    ) {
        println!("cargo:rustc-cfg=ioloop_pipe2");
        println!("cargo:rustc-cfg=ioloop_sock_flags");
    }
    have
}

/// The default backend: `IOLOOP_POLLER` if set (checked against what the target has, with a
/// build error that says so), else the target's first. Emits `cfg(ioloop_default = "...")`.
#[allow(dead_code)]
fn choose_default(have: &[&str]) -> String {
    println!("cargo:rerun-if-env-changed=IOLOOP_POLLER");
    let values: Vec<String> = ALL_BACKENDS.iter().map(|b| format!("\"{b}\"")).collect();
    println!("cargo:rustc-check-cfg=cfg(ioloop_default, values({}))", values.join(", "));
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let chosen = match std::env::var("IOLOOP_POLLER") {
        Ok(wanted) if !wanted.is_empty() => {
            if !ALL_BACKENDS.contains(&wanted.as_str()) {
                panic!(
                    "IOLOOP_POLLER={wanted:?} is not a backend; choose one of: {}",
                    ALL_BACKENDS.join(", ")
                );
            }
            if !have.contains(&wanted.as_str()) {
                panic!(
                    "IOLOOP_POLLER={wanted} was asked for, but target OS {os:?} has no {wanted} \
                     backend; it has: {}",
                    have.join(", ")
                );
            }
            wanted
        }
        _ => match have.first() {
            Some(first) => first.to_string(),
            None => panic!("ioloop supports Unix targets only; target OS {os:?} is not one"),
        },
    };
    println!("cargo:rustc-cfg=ioloop_default=\"{chosen}\"");
    chosen
}
