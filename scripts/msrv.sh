#!/usr/bin/env bash
# Builds the workspace's libraries (and their examples' dependencies: none beyond them) on the
# MSRV, Cargo.toml's `rust-version`, installing that toolchain with rustup if it is missing.
#
# The dev-dependencies (criterion, proptest, mio, polling...) need a newer Rust, and an old
# cargo cannot even resolve them, so the build runs on a copy of the tracked files whose
# manifests have their dev-dependency sections removed; the working tree is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$msrv" ] || { echo "no rust-version in Cargo.toml"; exit 1; }
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$msrv" --profile minimal
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z | xargs -0 cp --parents -t "$work"
cd "$work"
for f in Cargo.toml sys/Cargo.toml; do
  awk '/^\[/ { skip = ($0 ~ /dev-dependencies\]$/) } !skip' "$f" >"$f.msrv"
  mv "$f.msrv" "$f"
done
rustup run "$msrv" rustc --version
# Old cargo prints a warning per `cargo:rustc-check-cfg` line of build.rs: not errors.
CARGO_REGISTRIES_CRATES_IO_PROTOCOL=sparse rustup run "$msrv" cargo build --workspace 2>&1 |
  { grep -v 'rustc-check-cfg requires -Zcheck-cfg' || true; }
