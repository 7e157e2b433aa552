//! The task wrapper (`mezz __launch SPEC`): a small synchronous program that
//! sits between the agent and the command. It leaves the agent's session so
//! that the task outlives an agent crash, starts the command in its own
//! process group with its output in the sandbox, tells the agent the
//! command's pid (or why it could not start) on its stdout pipe, and records
//! how the command ended in `exit_status.json`. It never talks to the master
//! and keeps no state beyond those files.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::launch_spec::{write_atomic, ExitRecord, LaunchSpec};

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
    // Isolation seam: an isolator that needs the command inside a cgroup or
    // new namespaces would join/unshare here, before the spawn (pre_exec),
    // driven by fields the agent adds to the launch spec.

    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = spawn_error_message(program, &e);
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
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe {
        libc::killpg(pid as libc::pid_t, libc::SIGKILL);
    }
    let record = match child.wait() {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(code), _) => ExitRecord {
                exit_code: Some(code),
                signal: None,
            },
            (None, sig) => ExitRecord {
                exit_code: None,
                signal: Some(sig.unwrap_or(0)),
            },
        },
        Err(e) => {
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

/// What the agent shows when the command cannot start.
pub fn spawn_error_message(program: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("command '{program}' not found"),
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied executing '{program}'")
        }
        _ => format!("cannot execute '{program}': {e}"),
    }
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
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto fd 1 with a valid open fd.
        unsafe {
            libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
        }
    }
}

/// Blocks until `pid` has exited, leaving it a zombie (`WNOWAIT`).
fn wait_without_reaping(pid: u32) {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value to be filled in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}
