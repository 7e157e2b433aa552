//! The task lifecycle decisions, as pure functions: is a launch valid, and
//! which terminal status does an ended run get. No I/O, no clock; the agent
//! shell feeds facts in and sends what comes out.

use mezz_proto::ids::validate_id;
use mezz_proto::v1::{FrameworkInfo, TaskInfo, TaskReason, TaskState};

use crate::launch_spec::ExitRecord;

/// Checks a `LaunchTask`; `existing` is the state of a run of the same task
/// id in the same framework that this agent still holds, if any.
pub fn validate_launch(
    framework: &FrameworkInfo,
    task: &TaskInfo,
    existing: Option<TaskState>,
) -> Result<(), String> {
    validate_id("framework", &framework.id)?;
    validate_id("task", &task.task_id)?;
    let has_command = task
        .command
        .as_ref()
        .is_some_and(|c| !c.value.trim().is_empty());
    if !has_command {
        return Err(format!(
            "task '{}' has no command; set command.value",
            task.task_id
        ));
    }
    if let Some(check) = &task.health_check {
        crate::health::Policy::from_proto(check)
            .map_err(|e| format!("task '{}': {e}", task.task_id))?;
    }
    if let Some(state) = existing.filter(|s| !s.is_terminal()) {
        return Err(format!(
            "task '{}' of framework '{}' is already active on this agent ({}); task ids must be unique within a framework",
            task.task_id,
            framework.id,
            state.short_name()
        ));
    }
    Ok(())
}

/// How a task run ended, ready to become a `TaskStatus`.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Terminal state.
    pub state: TaskState,
    /// Why.
    pub reason: TaskReason,
    /// For people.
    pub message: String,
    /// The command's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

/// Where the ending was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The agent watched the wrapper exit.
    Watched,
    /// The wrapper was already gone when the agent (re)started.
    AfterAgentRestart,
}

/// The terminal outcome of a run from the wrapper's exit record.
pub fn outcome(record: Option<ExitRecord>, kill_requested: bool, observed: Observed) -> Outcome {
    let (exit_code, signal) = record.map_or((None, None), |r| (r.exit_code, r.signal));
    let make = |state, reason, message: String| Outcome {
        state,
        reason,
        message,
        exit_code,
        signal,
    };
    match (exit_code, signal) {
        (Some(0), _) => make(TaskState::Finished, TaskReason::Unspecified, "command exited with code 0".into()),
        (Some(code), _) if kill_requested => make(
            TaskState::Killed,
            TaskReason::KilledByRequest,
            format!("killed on request; command exited with code {code}"),
        ),
        (Some(code), _) => make(
            TaskState::Failed,
            TaskReason::CommandExited,
            format!("command exited with code {code}"),
        ),
        (None, Some(sig)) if kill_requested => make(
            TaskState::Killed,
            TaskReason::KilledByRequest,
            format!("killed on request by signal {sig} ({})", signal_name(sig)),
        ),
        (None, Some(sig)) => make(
            TaskState::Failed,
            TaskReason::CommandSignaled,
            format!("command was killed by signal {sig} ({})", signal_name(sig)),
        ),
        (None, None) if kill_requested => make(
            TaskState::Killed,
            TaskReason::KilledByRequest,
            "killed on request".into(),
        ),
        (None, None) => match observed {
            Observed::AfterAgentRestart => make(
                TaskState::Failed,
                TaskReason::AgentRestarted,
                "task process ended while the agent was down; exit status unknown".into(),
            ),
            Observed::Watched => make(
                TaskState::Failed,
                TaskReason::Unspecified,
                "the task wrapper ended without recording the command's exit status; see .mezz/wrapper.log in the sandbox".into(),
            ),
        },
    }
}

/// `outcome` corrected for the OOM killer: a run the kernel killed for its
/// memory limit (and that nobody asked to kill) is FAILED with the memory
/// reason, whatever its exit looked like.
pub fn with_oom(o: Outcome, oom_killed: bool, kill_requested: bool) -> Outcome {
    if !oom_killed || kill_requested || o.state == TaskState::Finished {
        return o;
    }
    Outcome {
        state: TaskState::Failed,
        reason: TaskReason::MemoryLimit,
        message: "memory limit exceeded: the kernel's OOM killer ended the task; ask for more mem"
            .into(),
        ..o
    }
}

/// `outcome` corrected for the agent's own kill: a run the agent killed
/// for `reason` (a failed health check) says so, and why, instead of
/// "killed on request".
pub fn with_kill_reason(o: Outcome, reason: Option<TaskReason>, why: Option<&str>) -> Outcome {
    match reason {
        Some(reason) if o.state == TaskState::Killed && reason != TaskReason::KilledByRequest => {
            let detail = o
                .message
                .strip_prefix("killed on request")
                .unwrap_or(&o.message)
                .trim_start_matches(';')
                .trim();
            let message = match (why, detail.is_empty()) {
                (Some(w), true) => w.to_string(),
                (Some(w), false) => format!("{w} (killed {detail})"),
                (None, _) => o.message.clone(),
            };
            Outcome {
                reason,
                message,
                ..o
            }
        }
        _ => o,
    }
}

/// `SIGTERM` for 15, `signal N` for what has no name.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_proto::v1::CommandInfo;

    fn code(c: i32) -> Option<ExitRecord> {
        Some(ExitRecord {
            exit_code: Some(c),
            signal: None,
        })
    }
    fn sig(s: i32) -> Option<ExitRecord> {
        Some(ExitRecord {
            exit_code: None,
            signal: Some(s),
        })
    }

    #[test]
    fn outcomes() {
        let o = outcome(code(0), false, Observed::Watched);
        assert_eq!(o.state, TaskState::Finished);
        let o = outcome(code(3), false, Observed::Watched);
        assert_eq!(
            (o.state, o.reason, o.exit_code),
            (TaskState::Failed, TaskReason::CommandExited, Some(3))
        );
        assert_eq!(o.message, "command exited with code 3");
        let o = outcome(sig(9), false, Observed::Watched);
        assert_eq!(o.reason, TaskReason::CommandSignaled);
        assert_eq!(o.message, "command was killed by signal 9 (SIGKILL)");
        let o = outcome(sig(15), true, Observed::Watched);
        assert_eq!(
            (o.state, o.reason, o.signal),
            (TaskState::Killed, TaskReason::KilledByRequest, Some(15))
        );
        let o = outcome(None, false, Observed::AfterAgentRestart);
        assert_eq!(o.reason, TaskReason::AgentRestarted);
        assert_eq!(
            o.message,
            "task process ended while the agent was down; exit status unknown"
        );
    }

    #[test]
    fn health_kills_say_so() {
        let o = with_kill_reason(
            outcome(sig(15), true, Observed::Watched),
            Some(TaskReason::HealthCheckFailed),
            Some("health check command 'false' failed 2 time(s) in a row"),
        );
        assert_eq!(
            (o.state, o.reason),
            (TaskState::Killed, TaskReason::HealthCheckFailed)
        );
        assert_eq!(
            o.message,
            "health check command 'false' failed 2 time(s) in a row (killed by signal 15 (SIGTERM))"
        );
        // It finished on its own meanwhile: that stands.
        let o = with_kill_reason(
            outcome(code(0), true, Observed::Watched),
            Some(TaskReason::HealthCheckFailed),
            Some("x"),
        );
        assert_eq!(o.state, TaskState::Finished);
    }

    #[test]
    fn launch_validation() {
        let fw = FrameworkInfo {
            id: "f1".into(),
            ..Default::default()
        };
        let mut task = TaskInfo {
            task_id: "t1".into(),
            command: Some(CommandInfo {
                value: "true".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(validate_launch(&fw, &task, None).is_ok());
        assert!(validate_launch(&fw, &task, Some(TaskState::Finished)).is_ok());
        let e = validate_launch(&fw, &task, Some(TaskState::Running)).unwrap_err();
        assert!(e.contains("already active") && e.contains("'t1'"), "{e}");
        task.task_id = "../x".into();
        assert!(validate_launch(&fw, &task, None)
            .unwrap_err()
            .contains("'/'"));
        task.task_id = "t2".into();
        task.command = None;
        assert!(validate_launch(&fw, &task, None)
            .unwrap_err()
            .contains("no command"));
    }
}
