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
    emit_bench_cfgs();
}

/// `ioloop_bench_uring_floor`: the waker bench's raw io_uring floor is built, through the
/// `io-uring` dev-dependency, which Cargo.toml takes only where that crate ships kernel
/// bindings (the same list: elsewhere it is a compile error).
fn emit_bench_cfgs() {
    println!("cargo:rustc-check-cfg=cfg(ioloop_bench_uring_floor)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let bound = ["x86_64", "aarch64", "riscv64", "loongarch64", "powerpc64"];
    if os == "linux" && bound.contains(&arch.as_str()) {
        println!("cargo:rustc-cfg=ioloop_bench_uring_floor");
    }
}
