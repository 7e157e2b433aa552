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

# --- Chromium (status page browser test, tests/status_page.rs) -----------
# Debian's headless Chromium; installed only when missing.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "== installing chromium (status page browser test)"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }
  else
    echo "test.sh: chromium is missing and cannot be installed here (need root and apt-get)" >&2
  fi
fi
# --- end Chromium ---------------------------------------------------------

# ---- TensorFlow framework tests (tests/tensorflow.rs) ----
# A project venv with tensorflow-cpu, installed once; the TF tests find its
# interpreter through MEZZ_TEST_PYTHON (under CI=true a missing TensorFlow
# fails them instead of skipping).
MEZZ_VENV="${MEZZ_VENV:-$HOME/.cache/mezzanine/venv}"
if [ ! -x "$MEZZ_VENV/bin/python" ]; then
  python3 -m venv "$MEZZ_VENV"
fi
if ! TF_CPP_MIN_LOG_LEVEL=3 "$MEZZ_VENV/bin/python" -c 'import tensorflow' >/dev/null 2>&1; then
  echo "== installing tensorflow-cpu into $MEZZ_VENV"
  "$MEZZ_VENV/bin/pip" install --quiet --upgrade pip
  "$MEZZ_VENV/bin/pip" install --quiet tensorflow-cpu
fi
export MEZZ_TEST_PYTHON="${MEZZ_TEST_PYTHON:-$MEZZ_VENV/bin/python}"
# ---- end TensorFlow block ----

echo "== formatting"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked
echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "test.sh: all checks passed"
