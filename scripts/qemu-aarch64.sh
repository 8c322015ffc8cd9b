#!/usr/bin/env bash
# Runs the test suite for aarch64 Linux under qemu-user, so that what only aarch64 compiles
# runs somewhere: the inline `svc 0` system calls of sys/src/syscall.rs, and the calls that
# architecture has instead of x86's (epoll_pwait, ppoll, pselect6: it has no epoll_wait, poll
# or select). scripts/xcheck.sh only type-checks it.
#
#   scripts/qemu-aarch64.sh
#
# Installs what it needs when missing: Debian's qemu-user-static and aarch64 cross gcc (the
# linker), and the target's std with `rustup target add`. Builds into target/qemu-aarch64.
#
# Not run, because qemu-user cannot emulate them (not because they fail on aarch64):
# * io_uring: qemu 7.2 has no io_uring_setup (ENOSYS), so io_uring's tests return without
#   running (tests/util's `uring_unavailable`; IOLOOP_REQUIRE_URING is set to 0 here).
# * `max_events_is_the_kernels_limit`: qemu checks the whole `maxevents` buffer of an
#   epoll_pwait up front (EFAULT), where the kernel writes only the events it returns.
# * `*_from_other_thread_during_wait`, `modify_from_other_thread_rearms`: they wait until
#   /proc/<tid>/syscall shows the waiting thread in its wait, and under qemu that file shows
#   the host's (x86_64) system call numbers.
# * tests/http_hello.rs: it runs the example servers as processes, which cargo builds for the
#   host, so no aarch64 code would run there.
set -euo pipefail
cd "$(dirname "$0")/.."

T=aarch64-unknown-linux-gnu
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
if [ "${#need[@]}" -gt 0 ]; then
    SUDO=
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$T" || rustup target add "$T"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
# criterion's `alloca` dependency builds C for the target.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_DIR=${QEMU_TARGET_DIR:-$PWD/target/qemu-aarch64}

tests=()
for f in tests/*.rs; do
    name=$(basename "$f" .rs)
    case $name in
        http_hello) ;;
        *) tests+=(--test "$name") ;;
    esac
done
export IOLOOP_REQUIRE_URING=0
skips=(--skip max_events_is_the_kernels_limit
    --skip from_other_thread_during_wait --skip modify_from_other_thread_rearms)

cargo test --target "$T" -p ioloop-sys --lib -- "${skips[@]}"
cargo test --target "$T" -p ioloop --lib "${tests[@]}" -- "${skips[@]}"
