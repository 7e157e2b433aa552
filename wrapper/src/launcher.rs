//! The task wrapper (`mezz __launch SPEC`): a small synchronous program that
//! sits between the agent and the command. It leaves the agent's session so
//! that the task outlives an agent crash, starts the command in its own
//! process group with its output in the sandbox, tells the agent the
//! command's pid (or why it could not start) on its stdout pipe, and records
//! how the command ended in `exit_status.json`. It never talks to the master
//! and keeps no state beyond those files.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::spec::{write_atomic, ExitRecord, LaunchSpec};

/// Runs the wrapper for the launch spec at `spec_path`; the return value is
/// the wrapper's exit code (0 once the command ran, whatever its result).
pub fn launch_main(spec_path: &Path) -> i32 {
    // A new session: the agent's death (or a Ctrl-C to its terminal) does
    // not reach the task. Fails only if we already lead a group; harmless.
    let _ = nix::unistd::setsid();
    ignore_termination_signals();

    let spec: LaunchSpec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            report(&format!(
                "failed cannot read the launch spec {}: {e}",
                spec_path.display()
            ));
            return 2;
        }
    };
    let Some(program) = spec.argv.first() else {
        report("failed the launch spec has an empty argv");
        return 2;
    };

    let open = |p: &Path| OpenOptions::new().create(true).append(true).open(p);
    let (stdout, stderr) = match (open(&spec.stdout), open(&spec.stderr)) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            report(&format!(
                "failed cannot open the sandbox's output files: {e}"
            ));
            return 2;
        }
    };
    let mut stderr_note = stderr.try_clone().ok();

    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    // Isolation: the command joins its cgroup and, with namespaces, runs
    // under its own init in new PID/mount/UTS namespaces (namespaces.rs).
    let status_read = match isolate(&spec, &mut cmd) {
        Ok(r) => r,
        Err(why) => {
            if let Some(f) = stderr_note.as_mut() {
                let _ = writeln!(f, "mezz: {why}");
            }
            report(&format!("failed {why}"));
            return 1;
        }
    };

    let spawned = cmd.spawn();
    // Drops the pre-exec hook and with it our copy of the status pipe's
    // write end: the read below ends when init exits.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let why = spawn_error_message(program, spec.env.get("PATH").map(String::as_str), &e);
            if let Some(f) = stderr_note.as_mut() {
                let _ = writeln!(f, "mezz: {why}");
            }
            report(&format!("failed {why}"));
            return 1;
        }
    };
    let pid = child.id();
    let _ = write_atomic(&spec.child_pid, pid.to_string().as_bytes());
    report(&format!("started {pid}"));

    wait_without_reaping(pid);
    // The command is a zombie now, so its pid (= the group id) cannot be
    // reused: kill whatever it left behind in its group, then reap it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as libc::pid_t),
        nix::sys::signal::Signal::SIGKILL,
    );
    let waited = child.wait();
    // With namespaces the child is the task's init: the command's own
    // status comes over the pipe; without it (init killed) init's counts.
    let reported = status_read.and_then(crate::namespaces::read_status);
    let record = match (waited, reported) {
        (Ok(_), Some(raw)) => {
            if libc::WIFEXITED(raw) {
                ExitRecord {
                    exit_code: Some(libc::WEXITSTATUS(raw)),
                    signal: None,
                }
            } else {
                ExitRecord {
                    exit_code: None,
                    signal: Some(libc::WTERMSIG(raw)),
                }
            }
        }
        (Ok(st), None) => match (st.code(), st.signal()) {
            (Some(code), _) => ExitRecord {
                exit_code: Some(code),
                signal: None,
            },
            (None, sig) => ExitRecord {
                exit_code: None,
                signal: Some(sig.unwrap_or(0)),
            },
        },
        (Err(e), _) => {
            if let Some(f) = stderr_note.as_mut() {
                let _ = writeln!(f, "mezz: cannot wait for the command: {e}");
            }
            return 3;
        }
    };
    match serde_json::to_vec(&record) {
        Ok(bytes) => {
            if let Err(e) = write_atomic(&spec.exit_status, &bytes) {
                if let Some(f) = stderr_note.as_mut() {
                    let _ = writeln!(f, "mezz: cannot write {}: {e}", spec.exit_status.display());
                }
                return 3;
            }
        }
        Err(_) => return 3,
    }
    0
}

/// Applies the spec's isolation to `cmd`: resolves the run-as user, opens
/// the cgroup's `cgroup.procs` files, unshares the namespaces and builds the
/// task's view of the filesystem in them, and installs the pre-exec hook
/// that joins the cgroup and drops privileges. Returns the read end of
/// init's status pipe.
fn isolate(spec: &LaunchSpec, cmd: &mut Command) -> Result<Option<OwnedFd>, String> {
    use crate::{capabilities, mounts, namespaces};
    let user = match &spec.user {
        None => None,
        Some(name) => {
            let u = nix::unistd::User::from_name(name)
                .map_err(|e| format!("cannot look up user '{name}': {e}"))?
                .ok_or_else(|| format!("user '{name}' does not exist on this agent"))?;
            Some((u.uid.as_raw(), u.gid.as_raw()))
        }
    };
    // Opened before the namespaces: the task's view of the cgroup
    // filesystem is read-only, the wrapper's handles are not.
    let procs = spec
        .cgroup_procs
        .iter()
        .map(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map(OwnedFd::from)
                .map_err(|e| format!("cannot open {}: {e}", p.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (read_end, write_end) = if spec.namespaces {
        namespaces::unshare_for_task()
            .map_err(|e| format!("cannot create the task's namespaces: {e}"))?;
        mounts::enter(&mounts::View {
            sandbox: spec.cwd.clone(),
            hide: spec.hide.clone(),
            expose: spec.expose.clone(),
            read_only: spec.read_only.clone(),
        })
        .map_err(|e| format!("cannot set up the task's mounts: {e}"))?;
        let (r, w) = namespaces::status_pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    // Only root has capabilities to give up.
    let drop_caps = if nix::unistd::geteuid().is_root() {
        let runs_as_root = user.is_none_or(|(uid, _)| uid == 0);
        capabilities::bounding_drops(capabilities::last_cap(), runs_as_root)
    } else {
        Vec::new()
    };
    let mut hostname = spec.hostname.clone().unwrap_or_else(|| "mezz-task".into());
    hostname.truncate(64);
    let plan = namespaces::Plan {
        procs,
        namespaces: spec.namespaces,
        hostname: hostname.into_bytes(),
        user,
        drop_caps,
        status_fd: write_end,
    };
    // SAFETY: the wrapper is single-threaded, and the hook only makes
    // fork-safe calls on data resolved above.
    unsafe {
        cmd.pre_exec(move || namespaces::in_child(&plan));
    }
    Ok(read_end)
}

/// What the agent shows when the command cannot start.
pub fn spawn_error_message(program: &str, path: Option<&str>, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("command '{program}' not found"),
        // A PATH search reports EACCES when some directory of PATH could
        // not be searched by the task's user (the agent's PATH may name
        // directories only root can enter), even if no directory holds
        // the command: then it is simply not there.
        std::io::ErrorKind::PermissionDenied
            if !program.contains('/') && !on_path(program, path.unwrap_or("")) =>
        {
            format!("command '{program}' not found")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied executing '{program}'")
        }
        _ => format!("cannot execute '{program}': {e}"),
    }
}

/// Does any directory of `path` (a `PATH` value) hold an entry `program`?
fn on_path(program: &str, path: &str) -> bool {
    path.split(':')
        .filter(|d| !d.is_empty())
        .any(|d| Path::new(d).join(program).symlink_metadata().is_ok())
}

extern "C" fn on_termination_signal(_: libc::c_int) {}

/// A no-op handler, not SIG_IGN: exec resets handlers to the default but
/// keeps SIG_IGN, and the command must still die of SIGTERM.
fn ignore_termination_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_termination_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// Writes one line to the agent's pipe, then lets go of the pipe so the
/// agent sees end-of-file (and a dead agent does not matter).
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    drop(out);
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

/// Blocks until `pid` has exited, leaving it a zombie (`WNOWAIT`).
fn wait_without_reaping(pid: u32) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let pid = nix::unistd::Pid::from_raw(pid as libc::pid_t);
    while let Err(nix::errno::Errno::EINTR) =
        waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
    {}
}
