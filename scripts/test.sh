#!/usr/bin/env bash
# The whole test suite: what CI runs (`.ci/run` calls this script).
# Idempotent: installs what the tests need, then builds and tests everything.
set -euo pipefail
cd "$(dirname "$0")/.."

# A persistent target dir outside the clone keeps repeated runs fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mezzanine/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is not installed; install a Rust toolchain (1.80 or newer) first" >&2
  exit 1
fi
# Nothing beyond the Rust toolchain is needed yet: protoc comes from the
# protoc-bin-vendored crate and every test runs on loopback.

echo "== formatting"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked
echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "test.sh: all checks passed"
