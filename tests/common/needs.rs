//! What a test needs from the machine beyond a build of the workspace,
//! checked in one place (the agent's tests include this file too).
//!
//! A test that needs root, cgroups, namespaces, Chromium or a Python package
//! is marked `#[ignore = "needs …"]`, so a plain `cargo test` reports it as
//! ignored, never as passed. `scripts/test.sh` runs those tests as well
//! (`--include-ignored`) when this machine has what they need, and always
//! under `CI=true`; by hand: `cargo test -- --include-ignored`. Once
//! running, such a test calls its `need_*` check first: whatever is missing
//! fails it with a message naming the gap, it never passes quietly.
//!
//! Two more kinds of `#[test]` are not tests of their own and are ignored
//! too: benchmarks named `bench_*` (run by hand with `--ignored`) and
//! bodies of child processes named `child_*` (a test starts its own binary
//! with `--ignored --exact child_…`). `scripts/test.sh` skips both.
#![allow(dead_code)] // each test binary needs a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Root, with a cgroup hierarchy mounted (v1 or v2).
pub fn need_root_cgroups() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it makes cgroups and namespaces); run it as root or leave out --include-ignored"
    );
    assert!(
        Path::new("/sys/fs/cgroup/memory").is_dir()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "this test needs a cgroup hierarchy mounted at /sys/fs/cgroup (v1 with memory, or v2)"
    );
}

/// Root, cgroups, and PID, mount and UTS namespaces.
pub fn need_namespaces() {
    need_root_cgroups();
    for ns in ["pid", "mnt", "uts"] {
        assert!(
            Path::new(&format!("/proc/self/ns/{ns}")).exists(),
            "this test needs {ns} namespaces (/proc/self/ns/{ns} is missing)"
        );
    }
}

/// The uid of `nobody`, which tasks run as by default.
pub fn need_nobody() -> u32 {
    nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
        .expect("this test needs a user 'nobody' (tasks run as it by default)")
}

/// `python3` on PATH (what tasks of these tests run).
pub fn need_python3() {
    let ok = Command::new("python3")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "this test needs python3 on PATH");
}

/// The Python of the framework tests, able to `import {modules}`:
/// `$MEZZ_TEST_PYTHON`, else the venv `scripts/test.sh` makes.
pub fn need_python(modules: &str) -> String {
    let python = std::env::var("MEZZ_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/mezzanine/venv/bin/python")
    });
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs a Python that can import {modules}: {python} cannot \
         (scripts/test.sh installs the test packages there; or set MEZZ_TEST_PYTHON)"
    );
    python
}

/// A Chromium (or Chrome) binary on PATH, for the browser tests.
pub fn need_chromium() -> PathBuf {
    let path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| path.iter().map(move |d| d.join(name)))
        .find(|p| p.is_file())
        .expect(
            "this test needs chromium on PATH (scripts/test.sh installs it: apt-get install chromium)",
        )
}

/// `unshare --net` with `ip`, to give a test a network namespace of its own.
pub fn netns_usable() -> bool {
    Command::new("unshare")
        .args(["--net", "--", "ip", "link", "set", "lo", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
