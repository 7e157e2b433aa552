//! Helpers over the generated task-state enums: terminal or not, and the
//! short Mesos names ("RUNNING") people read in the CLI and on the page.

use crate::v1::{TaskReason, TaskState};

impl TaskState {
    /// A terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Lost
                | TaskState::Error
                | TaskState::Dropped
                | TaskState::Gone
        )
    }

    /// The Mesos name without prefix, e.g. `RUNNING`.
    pub fn short_name(self) -> &'static str {
        self.as_str_name()
            .strip_prefix("TASK_STATE_")
            .unwrap_or("UNSPECIFIED")
    }
}

impl TaskReason {
    /// The reason's name without prefix, e.g. `COMMAND_EXITED`; empty when
    /// unspecified.
    pub fn short_name(self) -> &'static str {
        match self {
            TaskReason::Unspecified => "",
            other => other
                .as_str_name()
                .strip_prefix("TASK_REASON_")
                .unwrap_or(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_terminality() {
        assert_eq!(TaskState::Running.short_name(), "RUNNING");
        assert!(!TaskState::Running.is_terminal());
        assert!(TaskState::Killed.is_terminal());
        assert!(!TaskState::Unreachable.is_terminal());
        assert_eq!(TaskReason::CommandExited.short_name(), "COMMAND_EXITED");
        assert_eq!(TaskReason::Unspecified.short_name(), "");
    }
}
