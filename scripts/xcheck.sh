#!/usr/bin/env bash
# Type-checks the whole workspace (lib, tests, benches, examples) for other Unix targets, once
# per poller backend each target has, so every cfg'd line is compiled somewhere:
#
#   scripts/xcheck.sh                        # all targets below
#   scripts/xcheck.sh x86_64-unknown-freebsd # just these
#
# No cross linker or SDK is needed: `cargo check` never links. Everything runs on the rustup
# toolchain on PATH. A target whose std rustup ships is added with `rustup target add` (a
# download of its prebuilt std, once) and checked with it; a target rustup has no std for
# (OpenBSD, tier 3; x32, whose std the current stable does not ship) builds its std from
# source with `-Zbuild-std`, from the toolchain's own `rust-src` component (added when
# missing; RUSTC_BOOTSTRAP=1 unlocks -Zbuild-std on stable). Which backends a
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

RUSTC=$(rustup which rustc)
CACHE=${XCHECK_CACHE:-$HOME/.cache/ioloop-xcheck}

# Targets rustup ships a std for: added if missing. The others build std from source.
installed() { rustup target list --installed 2>/dev/null | grep -qx "$1"; }
NEED_SRC=0
for target in "${TARGETS[@]}"; do
    installed "$target" || rustup target add "$target" >/dev/null 2>&1 || NEED_SRC=1
done
if [ "$NEED_SRC" = 1 ] && ! rustup component list --installed 2>/dev/null | grep -qx 'rust-src'; then
    rustup component add rust-src >/dev/null
fi

mkdir -p "$CACHE"
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

# Targets whose std rustup installed (prebuilt: seconds per check); the others build std
# from source (a minute or two per target, the first time).
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
        cargo_cmd=(env "CARGO_TARGET_DIR=$CACHE/target-rustup" cargo check)
    else
        cargo_cmd=(env RUSTC_BOOTSTRAP=1 "CARGO_TARGET_DIR=$CACHE/target" cargo check -Zbuild-std=core,std)
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
