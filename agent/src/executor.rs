//! Running one task on this machine: its sandbox, its environment, spawning
//! the wrapper and reading its start line, signalling the task's process
//! group, and watching a wrapper the agent did not spawn (after a restart).
//! It decides nothing about task states; the agent (`agent/`) does.
//!
//! Isolation (cgroups, namespaces, GPUs) is filled into the spec by the
//! agent from `isolation/` and `gpu/`; this module only carries it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mezz_proto::v1::{resource, TaskInfo};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::launch_spec::{LaunchSpec, CHILD_PID_FILE, EXIT_FILE, META_DIR, SPEC_FILE};

/// The most `PORTn` variables a task gets.
const MAX_PORT_VARS: usize = 65536;

/// `<work_dir>/sandboxes`.
pub fn sandboxes_root(work_dir: &Path) -> PathBuf {
    work_dir.join("sandboxes")
}

/// The sandbox of the current run of a task. Ids must be validated first.
pub fn sandbox_path(work_dir: &Path, framework_id: &str, task_id: &str) -> PathBuf {
    sandboxes_root(work_dir).join(framework_id).join(task_id)
}

/// Creates a fresh sandbox at `path` with `stdout`, `stderr`, `tmp/` and
/// `.mezz/`. A previous run's directory is kept as `<task_id>.<n>`. With
/// `owner` (uid, gid) the sandbox, `tmp/` and the output files are given
/// to the task's user; `.mezz/`, the agent's own files of the run (launch
/// spec, exit record), stays the agent's and closed to the task (mode
/// 0700), so a task cannot forge how it ended: it cannot rename or empty a
/// directory it may not write.
pub fn prepare_sandbox(path: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if path.exists() {
        let mut n = 1u32;
        let aside = loop {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            let candidate = PathBuf::from(name);
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        std::fs::rename(path, &aside)?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
        if owner.is_some() {
            // The task's user passes through the framework's directory
            // to its sandbox but does not list the others.
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
        }
    }
    std::fs::create_dir(path)?;
    std::fs::create_dir(path.join("tmp"))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path.join(META_DIR))?;
    for f in ["stdout", "stderr"] {
        std::fs::File::create(path.join(f))?;
    }
    if let Some((uid, gid)) = owner {
        for p in [
            path.to_path_buf(),
            path.join("tmp"),
            path.join("stdout"),
            path.join("stderr"),
        ] {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// Who the task is, for its environment.
pub struct TaskIdentity<'a> {
    /// The framework's id.
    pub framework_id: &'a str,
    /// The agent's id.
    pub agent_id: &'a str,
}

/// The launch spec of `task` in `sandbox`.
pub fn build_spec(task: &TaskInfo, who: &TaskIdentity<'_>, sandbox: &Path) -> LaunchSpec {
    let command = task.command.clone().unwrap_or_default();
    let argv = if command.shell {
        vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            command.value.clone(),
        ]
    } else {
        std::iter::once(command.value.clone())
            .chain(command.arguments.iter().cloned())
            .collect()
    };
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    if let Ok(lang) = std::env::var("LANG") {
        env.insert("LANG".to_string(), lang);
    }
    let sb = sandbox.display().to_string();
    env.insert("MEZZ_TASK_ID".into(), task.task_id.clone());
    env.insert("MEZZ_FRAMEWORK_ID".into(), who.framework_id.to_string());
    env.insert("MEZZ_AGENT_ID".into(), who.agent_id.to_string());
    env.insert("MEZZ_SANDBOX".into(), sb.clone());
    env.insert("TMPDIR".into(), sandbox.join("tmp").display().to_string());
    env.insert("HOME".into(), sb);
    let ports = task_ports(task);
    env.insert(
        "MEZZ_PORTS".into(),
        ports
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    for (i, p) in ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), p.to_string());
    }
    // The task's own environment wins over everything above.
    env.extend(command.environment.clone());
    let meta = sandbox.join(META_DIR);
    LaunchSpec {
        argv,
        env,
        cwd: sandbox.to_path_buf(),
        stdout: sandbox.join("stdout"),
        stderr: sandbox.join("stderr"),
        exit_status: meta.join(EXIT_FILE),
        child_pid: meta.join(CHILD_PID_FILE),
        cgroup_procs: Vec::new(),
        namespaces: false,
        hostname: None,
        user: None,
        hide: Vec::new(),
        expose: Vec::new(),
        read_only: Vec::new(),
    }
}

/// The ports given to the task, in the order its framework gave them
/// (`PORT0` is the first one it asked for). Read from the wire form, not
/// through `Resources`, which keeps ranges sorted and merged.
fn task_ports(task: &TaskInfo) -> Vec<u64> {
    task.resources
        .iter()
        .filter(|r| r.name == mezz_proto::resources::PORTS)
        .filter_map(|r| match &r.value {
            Some(resource::Value::Ranges(rs)) => Some(rs.range.iter()),
            _ => None,
        })
        .flatten()
        .flat_map(|range| range.begin..=range.end)
        .take(MAX_PORT_VARS)
        .collect()
}

/// Writes the spec to `<sandbox>/.mezz/launch.json`; returns that path.
pub fn write_spec(sandbox: &Path, spec: &LaunchSpec) -> std::io::Result<PathBuf> {
    let path = sandbox.join(META_DIR).join(SPEC_FILE);
    let bytes = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
    crate::launch_spec::write_atomic(&path, &bytes)?;
    Ok(path)
}

/// A running wrapper the agent spawned.
pub struct Spawned {
    /// The wrapper process.
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    /// Its start time in /proc, when readable.
    pub start_time: Option<u64>,
    /// The pipe it reports `started PID` / `failed MESSAGE` on.
    pub stdout: ChildStdout,
}

/// Spawns `<launcher> __launch <spec_path>`. Its stderr goes to
/// `<sandbox>/.mezz/wrapper.log`.
pub fn spawn_wrapper(
    launcher: &Path,
    spec_path: &Path,
    sandbox: &Path,
) -> std::io::Result<Spawned> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(sandbox.join(META_DIR).join("wrapper.log"))?;
    let mut child = Command::new(launcher)
        .arg("__launch")
        .arg(spec_path)
        .current_dir(sandbox)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(false)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the wrapper exited before it could be watched"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("the wrapper's stdout was not piped"))?;
    Ok(Spawned {
        child,
        pid,
        start_time: proc_start_time(pid),
        stdout,
    })
}

/// What the wrapper said on its pipe.
#[derive(Debug, PartialEq, Eq)]
pub enum StartLine {
    /// The command runs with this pid (= its process group).
    Started(i32),
    /// The command could not be started.
    Failed(String),
    /// The pipe closed without a line (the wrapper died).
    Nothing,
}

/// Reads the wrapper's one line. Awaits the pipe; no polling.
pub async fn read_start_line(stdout: ChildStdout) -> StartLine {
    let mut line = String::new();
    match BufReader::new(stdout).read_line(&mut line).await {
        Ok(0) | Err(_) => StartLine::Nothing,
        Ok(_) => parse_start_line(line.trim_end()),
    }
}

fn parse_start_line(line: &str) -> StartLine {
    if let Some(pid) = line.strip_prefix("started ") {
        match pid.trim().parse::<i32>() {
            Ok(p) if p > 0 => StartLine::Started(p),
            _ => StartLine::Failed(format!("the task wrapper reported a bad pid: '{line}'")),
        }
    } else if let Some(msg) = line.strip_prefix("failed ") {
        StartLine::Failed(msg.to_string())
    } else {
        StartLine::Failed(format!(
            "the task wrapper said something unexpected: '{line}'"
        ))
    }
}

/// Sends `signal` to the process group `pgid`; a group that is gone is fine.
pub fn signal_group(pgid: i32, signal: Signal) {
    if pgid <= 1 {
        return; // never signal init's group or everything
    }
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!("cannot send {signal} to process group {pgid}: {e}"),
    }
}

/// The pid the wrapper recorded for its command, if any.
pub fn recorded_child_pid(sandbox: &Path) -> Option<i32> {
    std::fs::read_to_string(sandbox.join(META_DIR).join(CHILD_PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 1)
}

/// Start time (clock ticks since boot) of a live, non-zombie `pid`.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse
    // from the last ')'. Field 3 is the state, field 22 the start time.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Is the wrapper `pid` that started at `start_time` still running?
pub fn wrapper_alive(pid: u32, start_time: Option<u64>) -> bool {
    match (proc_start_time(pid), start_time) {
        (Some(now), Some(then)) => now == then,
        // Without a recorded start time a live pid cannot be trusted.
        _ => false,
    }
}

/// Waits until a wrapper the agent did not spawn (found after a restart)
/// is gone, checking /proc every 200 ms.
pub async fn wait_wrapper_gone(pid: u32, start_time: Option<u64>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while wrapper_alive(pid, start_time) {
        tick.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_proto::v1::{CommandInfo, Range, Ranges, Resource};

    #[test]
    fn start_lines() {
        assert_eq!(parse_start_line("started 42"), StartLine::Started(42));
        assert_eq!(
            parse_start_line("failed command 'x' not found"),
            StartLine::Failed("command 'x' not found".into())
        );
        assert!(matches!(
            parse_start_line("started x"),
            StartLine::Failed(_)
        ));
        assert!(matches!(parse_start_line("hello"), StartLine::Failed(_)));
    }

    #[test]
    fn environment_and_argv() {
        let task = TaskInfo {
            task_id: "t1".into(),
            command: Some(CommandInfo {
                value: "echo".into(),
                arguments: vec!["a".into(), "b c".into()],
                shell: false,
                environment: [("HOME".to_string(), "/h".to_string())].into(),
                user: String::new(),
                secret_keys: vec![],
            }),
            resources: vec![Resource {
                name: "ports".into(),
                value: Some(resource::Value::Ranges(Ranges {
                    range: vec![
                        Range {
                            begin: 31000,
                            end: 31001,
                        },
                        Range {
                            begin: 31005,
                            end: 31005,
                        },
                    ],
                })),
                role: String::new(),
            }],
            ..Default::default()
        };
        let who = TaskIdentity {
            framework_id: "f1",
            agent_id: "a1",
        };
        let spec = build_spec(&task, &who, Path::new("/sb"));
        assert_eq!(spec.argv, vec!["echo", "a", "b c"]);
        assert_eq!(spec.env["MEZZ_PORTS"], "31000,31001,31005");
        assert_eq!(spec.env["PORT2"], "31005");
        assert_eq!(spec.env["HOME"], "/h");
        assert_eq!(spec.env["TMPDIR"], "/sb/tmp");
        assert_eq!(spec.env["MEZZ_FRAMEWORK_ID"], "f1");
        assert_eq!(spec.cwd, Path::new("/sb"));
    }

    #[test]
    fn previous_sandbox_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sb = dir.path().join("t");
        prepare_sandbox(&sb, None).unwrap();
        std::fs::write(sb.join("stdout"), "old").unwrap();
        prepare_sandbox(&sb, None).unwrap();
        prepare_sandbox(&sb, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("t.1/stdout")).unwrap(),
            "old"
        );
        assert!(dir.path().join("t.2").is_dir());
        assert_eq!(std::fs::read_to_string(sb.join("stdout")).unwrap(), "");
    }

    #[test]
    #[ignore = "needs root (gives the sandbox to another user)"]
    fn the_sandbox_is_the_tasks_and_its_metadata_the_agents() {
        use std::os::unix::fs::MetadataExt;
        assert!(
            nix::unistd::geteuid().is_root(),
            "giving a sandbox away needs root"
        );
        let dir = tempfile::tempdir().unwrap();
        let sb = dir.path().join("fw/t");
        prepare_sandbox(&sb, Some((65534, 65534))).unwrap();
        for f in ["", "tmp", "stdout", "stderr"] {
            let m = std::fs::metadata(sb.join(f)).unwrap();
            assert_eq!((m.uid(), m.gid()), (65534, 65534), "{f}");
        }
        let meta = std::fs::metadata(sb.join(META_DIR)).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700));
        let fw = std::fs::metadata(dir.path().join("fw")).unwrap();
        assert_eq!(fw.mode() & 0o777, 0o711);
    }

    #[test]
    fn own_start_time_is_readable() {
        let me = std::process::id();
        let t = proc_start_time(me);
        assert!(t.is_some());
        assert!(wrapper_alive(me, t));
        assert!(!wrapper_alive(me, t.map(|t| t + 1)));
    }
}
