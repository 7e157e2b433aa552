//! The files the agent and the task wrapper exchange through the sandbox:
//! `.mezz/launch.json` (what to run, written by the agent) and
//! `.mezz/exit_status.json` (how it ended, written by the wrapper). Only the
//! formats live here; neither side's logic does.
//!
//! None of these files is fsynced. They guard against a crash of the agent
//! or the wrapper (a process), which the page cache survives; the durable
//! record of a launch is the agent's checkpoint, flushed before RUNNING
//! and before the terminal update go out. A crash of the machine takes
//! the task's processes with it, and the agent then reports the run from
//! its checkpoint, not from these files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Directory inside a sandbox that holds the agent's own files.
pub const META_DIR: &str = ".mezz";
/// File name of the launch spec inside [`META_DIR`].
pub const SPEC_FILE: &str = "launch.json";
/// File name of the exit status inside [`META_DIR`].
pub const EXIT_FILE: &str = "exit_status.json";
/// File where the wrapper also records the command's pid (the process
/// group), so an agent that restarts before reading the pipe finds it.
pub const CHILD_PID_FILE: &str = "child.pid";

/// What the wrapper runs and where.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Program and arguments; a shell command is `["/bin/sh", "-c", CMD]`.
    pub argv: Vec<String>,
    /// The complete environment of the command (nothing else is inherited).
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// File the command's stdout is appended to.
    pub stdout: PathBuf,
    /// File the command's stderr is appended to.
    pub stderr: PathBuf,
    /// Where the wrapper writes the [`ExitRecord`].
    pub exit_status: PathBuf,
    /// Where the wrapper writes the command's pid.
    pub child_pid: PathBuf,
    /// `cgroup.procs` files the command joins before it execs (empty: no
    /// cgroup).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup_procs: Vec<PathBuf>,
    /// Run the command in its own PID, mount and UTS namespaces.
    #[serde(default)]
    pub namespaces: bool,
    /// Hostname inside the task's UTS namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// User to run the command as (name); `None`: the agent's user. The
    /// agent has already given the sandbox to this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// With `namespaces`: directories the command must not see (the
    /// agent's work dir, `--task-hidden-path`s), each covered by an empty
    /// read-only tmpfs in its mount namespace; `cwd` stays reachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hide: Vec<PathBuf>,
    /// With `namespaces`: directories inside hidden ones the command still
    /// needs (the fake GPU nodes), reachable read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<PathBuf>,
    /// With `namespaces`: trees whose every mount the command sees
    /// read-only (the host's `/sys/fs/cgroup`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only: Vec<PathBuf>,
}

/// How the command ended: exactly one of the fields is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code, when the command exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal number, when a signal ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// Writes `bytes` to `path` atomically for readers on this machine: a
/// temporary file next to it, renamed into place, so a reader never sees
/// half a file. Not fsynced (see the module's comment).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
    }
    std::fs::rename(&tmp, path)
}
