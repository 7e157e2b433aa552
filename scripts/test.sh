#!/usr/bin/env bash
# The whole test suite: what CI runs (`.ci/run` calls this script).
# Idempotent: installs what the tests need (Debian's Chromium when missing,
# as root; a Python virtualenv at $HOME/.cache/mezzanine/venv with the
# pinned packages of scripts/test-requirements.txt: TensorFlow, Jupyter
# Server, PySpark and what they pull in), then checks formatting, runs
# clippy, every test (those that need root, cgroups or the tools above
# too, when present: see below) and the docs build.
set -euo pipefail
cd "$(dirname "$0")/.."

# A persistent target dir outside the clone keeps repeated runs fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mezzanine/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is not installed; install a Rust toolchain (1.80 or newer) first" >&2
  exit 1
fi
# protoc comes from the protoc-bin-vendored crate and every test runs on
# loopback; what else the tests need is installed below.

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

# --- Rust's musl target (the static task wrapper that build.rs embeds) ----
# Best effort: without it nothing fails, the build embeds no static wrapper
# (cargo warns) and agents run the glibc one beside `mezz`.
if command -v rustup >/dev/null 2>&1; then
  musl="$(uname -m)-unknown-linux-musl"
  case "$musl" in
    x86_64-*|aarch64-*)
      if ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
        echo "== adding Rust's $musl target (static task wrapper)"
        rustup target add "$musl" >/dev/null 2>&1 \
          || echo "test.sh: could not add Rust's $musl target; agents will run the glibc task wrapper" >&2
      fi
      ;;
  esac
fi
# --- end musl target -------------------------------------------------------

# ---- Python packages (TensorFlow, Spark and Jupyter framework tests) ----
# A project venv with the pinned packages of scripts/test-requirements.txt,
# installed again only when that file changes (a copy of it in the venv
# records what was installed). The framework tests find its interpreter
# through MEZZ_TEST_PYTHON; under CI=true a missing package fails them
# instead of skipping.
MEZZ_VENV="${MEZZ_VENV:-$HOME/.cache/mezzanine/venv}"
if [ ! -x "$MEZZ_VENV/bin/python" ]; then
  python3 -m venv "$MEZZ_VENV"
fi
if ! cmp -s scripts/test-requirements.txt "$MEZZ_VENV/mezz-requirements.txt"; then
  echo "== installing the test Python packages into $MEZZ_VENV"
  "$MEZZ_VENV/bin/pip" install --quiet --upgrade pip
  "$MEZZ_VENV/bin/pip" install --quiet -r scripts/test-requirements.txt
  cp scripts/test-requirements.txt "$MEZZ_VENV/mezz-requirements.txt"
fi
export MEZZ_TEST_PYTHON="${MEZZ_TEST_PYTHON:-$MEZZ_VENV/bin/python}"
# ---- end Python packages ----

echo "== formatting"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# --- Tests that need this machine -----------------------------------------
# Tests that need root, cgroups, namespaces, Chromium or the test Python are
# marked ignored, so a plain `cargo test` reports them as ignored rather
# than passed (tests/common/needs.rs). This script runs them too when the
# machine has what they need, and always under CI=true, where a missing
# prerequisite is a failure. Benchmarks (`bench_*`) and bodies of child
# processes (`child_*`) are never run as tests.
missing=()
[ "$(id -u)" = 0 ] || missing+=("root")
[ -d /sys/fs/cgroup/memory ] || [ -e /sys/fs/cgroup/cgroup.controllers ] || missing+=("cgroups")
unshare --net -- ip link set lo up >/dev/null 2>&1 || missing+=("unshare --net with ip")
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=("chromium")
command -v java >/dev/null 2>&1 || missing+=("java")
test_args=(--skip bench_ --skip child_)
if [ "${CI:-}" = true ] || [ ${#missing[@]} = 0 ]; then
  test_args+=(--include-ignored)
else
  echo "test.sh: this machine lacks: ${missing[*]}; the tests that need root, cgroups," >&2
  echo "  Chromium or the test Python are reported as ignored (CI=true runs them and fails)" >&2
fi

echo "== tests"
cargo test --workspace --locked -- "${test_args[@]}"
echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "test.sh: all checks passed"
