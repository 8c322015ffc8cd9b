//! Chooses the default poller at build time, the way Tornado's IOLoop picks its implementation:
//! epoll on Linux/Android, kqueue on macOS and the BSDs, poll elsewhere, select last.
//! `IOLOOP_POLLER=epoll|kqueue|uring|poll|select` overrides the choice; asking for a backend
//! the target lacks fails the build with a message that says so. The logic lives in
//! `sys/targets.rs`, shared with `ioloop-sys`'s build script so both crates agree.

include!("sys/targets.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=sys/targets.rs");
    let have = emit_backend_cfgs();
    let chosen = choose_default(have);
    println!("cargo:rustc-env=IOLOOP_DEFAULT_POLLER={chosen}");
}
