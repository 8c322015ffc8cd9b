#!/usr/bin/env bash
# Type-checks the whole workspace (lib, tests, benches, examples) for other Unix targets, once
# per poller backend each target has, so every cfg'd line is compiled somewhere:
#
#   scripts/xcheck.sh                        # all targets below
#   scripts/xcheck.sh x86_64-unknown-freebsd # just these
#
# No cross linker or SDK is needed: `cargo check` never links. A target whose std the
# rustup toolchain ships (`rustup target list --installed`) is checked with it; any other
# (OpenBSD, tier 3) builds its std from source with `-Zbuild-std`, using Debian
# bookworm-security's `rustc-web`, `cargo-web` and `rust-web-src` (Rust 1.96 with std
# sources; installed with apt-get when missing). RUSTC_BOOTSTRAP=1 unlocks -Zbuild-std on
# that stable compiler. Which backends a
# target has comes from sys/targets.rs itself (compiled into a tiny helper), and a backend
# whose module is not (yet) declared in sys/src/lib.rs is skipped with a note.
#
# Prints one line per (target, backend); stops at the first failure, shows cargo's errors
# and exits 1. XCHECK_STRICT=1 also fails on warnings from this workspace's crates.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

DEFAULT_TARGETS=(
    x86_64-unknown-freebsd
    x86_64-apple-darwin
    aarch64-apple-darwin
    x86_64-unknown-netbsd
    x86_64-unknown-openbsd
    x86_64-unknown-illumos
    x86_64-unknown-linux-musl
    aarch64-unknown-linux-gnu
    x86_64-linux-android
    x86_64-unknown-linux-gnux32
)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${DEFAULT_TARGETS[@]}"); fi

RUSTC=/usr/bin/rustc
RUSTDOC=/usr/bin/rustdoc
CARGO=/usr/bin/cargo
STD_SRC=/usr/lib/rustlib/src/rust/library
PKGS=(rustc-web cargo-web rust-web-src)
CACHE=${XCHECK_CACHE:-$HOME/.cache/ioloop-xcheck}

have_toolchain() {
    dpkg-query -W -f='${Status}\n' "${PKGS[@]}" 2>/dev/null | grep -vq '^install ok installed$' && return 1
    [ -x "$RUSTC" ] && [ -x "$CARGO" ] && [ -d "$STD_SRC/std" ]
}

if ! have_toolchain; then
    echo "xcheck: installing ${PKGS[*]} (Debian bookworm-security) ..." >&2
    SUDO=
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PKGS[@]}" >/dev/null
    have_toolchain || { echo "xcheck: ${PKGS[*]} did not provide $RUSTC, $CARGO, $STD_SRC" >&2; exit 2; }
fi

mkdir -p "$CACHE"
export CARGO_TARGET_DIR=$CACHE/target
export RUSTC RUSTDOC RUSTC_BOOTSTRAP=1
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS

# The backend table of sys/targets.rs, as a program: `backends <target_os>` prints the
# target's backends, the default first.
BACKENDS_BIN=$CACHE/backends
cat >"$CACHE/backends.rs" <<EOF
include!("$ROOT/sys/targets.rs");
fn main() {
    let os = std::env::args().nth(1).unwrap_or_default();
    println!("{}", backends_for(&os).join(" "));
}
EOF
"$RUSTC" --edition 2021 -A dead_code -o "$BACKENDS_BIN" "$CACHE/backends.rs"

# Dev-dependencies with C code (criterion's `alloca`) are compiled by the `cc` crate for the
# target. `cargo check` never links, so that object is never used: a shim drops the flags only
# a target's own compiler knows (Apple's -arch, -m*-version-min, clang's --target) or that need
# another libc's headers (x32's -mx32) and runs the host's cc, which is enough for the build
# script to succeed.
CC_SHIM=$CACHE/cc-shim
cat >"$CC_SHIM" <<'EOF'
#!/usr/bin/env bash
args=()
while [ "$#" -gt 0 ]; do
    case $1 in
        -arch | -target) shift ;;
        -m*-version-min=* | --target=* | -mx32) ;;
        *) args+=("$1") ;;
    esac
    shift
done
exec cc "${args[@]}"
EOF
chmod +x "$CC_SHIM"

# A backend is present once its `mod` line in sys/src/lib.rs is not commented out.
present() {
    grep -Eq "^[[:space:]]*mod $1;" "$ROOT/sys/src/lib.rs"
}

# Targets whose std the machine's rustup toolchain already ships are checked with it (no std
# build: seconds instead of a minute or two per target); the others (OpenBSD, tier 3) build
# std from source with Debian's toolchain.
RUSTUP_TARGETS=" $(rustup target list --installed 2>/dev/null | tr '\n' ' ') "

# Targets checked for the libraries only: x32's std built from source lacks the
# `panic_abort` crate the test harness asks for; its own code is the libraries' system calls.
LIB_ONLY=" x86_64-unknown-linux-gnux32 "

LOG=$CACHE/last.log
run() { # run <target> <backend> <label> [IOLOOP_POLLER value]
    local target=$1 backend=$2 label=$3 poller=${4:-}
    local start=$SECONDS status=0
    local cc_var="CC_${target//-/_}" ar_var="AR_${target//-/_}"
    local -a cargo_cmd
    if [[ $RUSTUP_TARGETS == *" $target "* ]]; then
        # rustup's cargo and rustc (from PATH), its prebuilt std, its own target dir.
        cargo_cmd=(env -u RUSTC -u RUSTDOC -u RUSTC_BOOTSTRAP "CARGO_TARGET_DIR=$CACHE/target-rustup"
            cargo check)
    else
        cargo_cmd=("$CARGO" check -Zbuild-std=core,std)
    fi
    # Which code: everything, except on the targets of LIB_ONLY (the libraries only).
    local -a what=(--all-targets)
    if [[ $LIB_ONLY == *" $target "* ]]; then what=(--lib); fi
    # The host's ar archives the shim's objects (cc-rs would look for e.g. illumos' `gar`).
    env "$cc_var=$CC_SHIM" "$ar_var=ar" IOLOOP_POLLER="$poller" "${cargo_cmd[@]}" --target "$target" \
        --workspace "${what[@]}" --all-features --message-format=short >"$LOG" 2>&1 || status=$?
    local secs=$((SECONDS - start))
    local warns
    warns=$(grep -cE '^(src|sys|tests|benches|examples|build\.rs)[^ ]*: warning' "$LOG" || true)
    if [ "$status" -ne 0 ]; then
        printf 'FAIL %-28s %-22s %4ss\n' "$target" "$label" "$secs"
        grep -E '(^|: )(error|warning)' "$LOG" | grep -v '^warning: .* generated' || tail -n 40 "$LOG"
        echo "xcheck: full cargo output in $LOG" >&2
        exit 1
    fi
    printf 'ok   %-28s %-22s %4ss%s\n' "$target" "$label" "$secs" \
        "$([ "$warns" -gt 0 ] && echo "  ($warns warnings)")"
    if [ "$warns" -gt 0 ]; then
        grep -E '^(src|sys|tests|benches|examples|build\.rs)[^ ]*: warning' "$LOG" | sed 's/^/     /'
        if [ "${XCHECK_STRICT:-0}" = 1 ]; then exit 1; fi
    fi
}

for target in "${TARGETS[@]}"; do
    os=$("$RUSTC" --print cfg --target "$target" | sed -n 's/^target_os="\(.*\)"$/\1/p')
    read -r -a backends <<<"$("$BACKENDS_BIN" "$os")"
    default=${backends[0]:-}
    for b in "${backends[@]}"; do
        if [ "$b" = "$default" ]; then label="$b (default)"; poller=; else label=$b; poller=$b; fi
        if ! present "$b"; then
            printf 'skip %-28s %-22s (no `mod %s;` in sys/src/lib.rs yet)\n' "$target" "$label" "$b"
            continue
        fi
        run "$target" "$b" "$label" "$poller"
    done
done
