#!/usr/bin/env bash
# Runs the test suite for other Linux architectures under qemu-user, so that what only they
# compile runs somewhere, not only type-checks (scripts/xcheck.sh):
#
#   scripts/qemu-test.sh [TARGET...]   # default: the three below
#
# * aarch64-unknown-linux-gnu: the inline `svc 0` system calls of sys/src/syscall.rs, and
#   the calls that architecture has instead of x86's (epoll_pwait, ppoll, pselect6: it has no
#   epoll_wait, poll or select).
# * armv7-unknown-linux-gnueabihf: 32 bits (a 32-bit `time_t` in glibc's timespec, against
#   the kernel's 64-bit `__kernel_timespec`), system calls through `syscall(2)`.
# * s390x-unknown-linux-gnu: big-endian.
#
# Installs what it needs when missing: Debian's qemu-user-static and the target's cross gcc
# (the linker) and libc, and the target's std with `rustup target add`. Builds into
# target/qemu/<target>.
#
# Not run, because qemu-user cannot emulate them (not because they fail there):
# * io_uring: qemu 7.2 has no io_uring_setup (ENOSYS), so io_uring's tests return without
#   running (tests/util's `uring_unavailable`; IOLOOP_REQUIRE_URING is set to 0 here).
# * `max_events_is_the_kernels_limit`: qemu checks the whole `maxevents` buffer of an
#   epoll_pwait up front (EFAULT), where the kernel writes only the events it returns.
# * `*_from_other_thread_during_wait`, `modify_from_other_thread_rearms`: they wait until
#   /proc/<tid>/syscall shows the waiting thread in its wait, and under qemu that file shows
#   the host's (x86_64) system call numbers.
# * tests/http_hello.rs and tests/demos.rs: they run the examples as processes, which cargo
#   builds for the host, so no code of the target would run there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf s390x-unknown-linux-gnu)
fi

# target -> "gcc prefix, Debian's libc package suffix, qemu binary"
spec() {
    case $1 in
        aarch64-unknown-linux-gnu) echo "aarch64-linux-gnu arm64-cross qemu-aarch64-static" ;;
        armv7-unknown-linux-gnueabihf) echo "arm-linux-gnueabihf armhf-cross qemu-arm-static" ;;
        s390x-unknown-linux-gnu) echo "s390x-linux-gnu s390x-cross qemu-s390x-static" ;;
        *) echo "qemu-test: no recipe for $1" >&2; exit 2 ;;
    esac
}

for t in "${TARGETS[@]}"; do spec "$t" >/dev/null; done

need=()
for t in "${TARGETS[@]}"; do
    read -r prefix libc qemu <<<"$(spec "$t")"
    command -v "$qemu" >/dev/null || need+=(qemu-user-static)
    command -v "$prefix-gcc" >/dev/null || need+=("gcc-$prefix" "libc6-dev-$libc")
done
if [ "${#need[@]}" -gt 0 ]; then
    SUDO=
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

tests=()
for f in tests/*.rs; do
    name=$(basename "$f" .rs)
    case $name in http_hello | demos) ;; *) tests+=(--test "$name") ;; esac
done
export IOLOOP_REQUIRE_URING=0
skips=(--skip max_events_is_the_kernels_limit
    --skip from_other_thread_during_wait --skip modify_from_other_thread_rearms)

for t in "${TARGETS[@]}"; do
    read -r prefix _ qemu <<<"$(spec "$t")"
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
    up=$(tr 'a-z-' 'A-Z_' <<<"$t")
    low=${t//-/_}
    echo "=== $t (under $qemu)"
    (
        export "CARGO_TARGET_${up}_LINKER=$prefix-gcc"
        export "CARGO_TARGET_${up}_RUNNER=$qemu -L /usr/$prefix"
        export "CC_$low=$prefix-gcc" "AR_$low=$prefix-ar"
        export CARGO_TARGET_DIR=${QEMU_TARGET_DIR:-$PWD/target/qemu}/$t
        cargo test --target "$t" -p ioloop-sys --lib -- "${skips[@]}"
        cargo test --target "$t" -p ioloop --lib "${tests[@]}" -- "${skips[@]}"
    )
done
