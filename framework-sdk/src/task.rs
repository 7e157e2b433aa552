//! `TaskBuilder`: the few lines every framework writes to turn a command and
//! resources into a [`proto::TaskInfo`] placed on an offer's agent.

use std::time::Duration;

use crate::proto;
use crate::{AgentId, Resources, TaskId};

/// Builds a [`proto::TaskInfo`].
///
/// ```
/// use mezz_sdk::{proto, Resources, TaskBuilder};
///
/// let offer = proto::Offer { agent_id: "agent-1".into(), ..Default::default() };
/// let task = TaskBuilder::shell("hello-1", "echo hello from $MEZZ_TASK_ID")
///     .resources(&Resources::new().with_scalar("cpus", 0.1).with_scalar("mem", 32.0))
///     .env("GREETING", "hi")
///     .build(&offer);
/// assert_eq!(task.agent_id, "agent-1");
/// assert_eq!(task.name, "hello-1");
/// assert!(task.command.unwrap().shell);
/// ```
#[derive(Clone, Debug)]
pub struct TaskBuilder {
    info: proto::TaskInfo,
}

impl TaskBuilder {
    fn new(task_id: TaskId, command: proto::CommandInfo) -> Self {
        TaskBuilder {
            info: proto::TaskInfo {
                name: task_id.0.clone(),
                task_id: task_id.0,
                command: Some(command),
                ..Default::default()
            },
        }
    }

    /// A task that runs `command` with `/bin/sh -c`.
    pub fn shell(task_id: impl Into<TaskId>, command: impl Into<String>) -> Self {
        Self::new(
            task_id.into(),
            proto::CommandInfo {
                value: command.into(),
                shell: true,
                ..Default::default()
            },
        )
    }

    /// A task that runs `program` with `args`, without a shell.
    pub fn exec<I, A>(task_id: impl Into<TaskId>, program: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        Self::new(
            task_id.into(),
            proto::CommandInfo {
                value: program.into(),
                arguments: args.into_iter().map(Into::into).collect(),
                shell: false,
                ..Default::default()
            },
        )
    }

    /// A human-readable name (defaults to the task id).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.info.name = name.into();
        self
    }

    /// The resources the task needs; they must fit in the offer.
    pub fn resources(mut self, resources: &Resources) -> Self {
        self.info.resources = resources.to_proto();
        self
    }

    /// An environment variable for the command.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let Some(command) = self.info.command.as_mut() {
            command.environment.insert(key.into(), value.into());
        }
        self
    }

    /// An environment variable whose value is secret (a password, an API
    /// key): the task sees it like any other, and Mezzanine never shows or
    /// logs it (`CommandInfo.secret_keys`).
    ///
    /// ```
    /// # use mezz_sdk::{proto, TaskBuilder};
    /// # let offer = proto::Offer { agent_id: "a1".into(), ..Default::default() };
    /// let task = TaskBuilder::exec("t1", "app", Vec::<String>::new())
    ///     .secret_env("API_KEY", "s3cr3t")
    ///     .build(&offer);
    /// let cmd = task.command.unwrap();
    /// assert_eq!(cmd.environment["API_KEY"], "s3cr3t");
    /// assert_eq!(cmd.secret_keys, ["API_KEY"]);
    /// ```
    pub fn secret_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        if let Some(command) = self.info.command.as_mut() {
            if !command.secret_keys.contains(&key) {
                command.secret_keys.push(key.clone());
            }
            command.environment.insert(key, value.into());
        }
        self
    }

    /// A label, kept with the task and shown by `mezz ps`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.info.labels.insert(key.into(), value.into());
        self
    }

    /// Time between SIGTERM and SIGKILL when the task is killed.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.info.kill_grace_period_secs = grace.as_secs_f64();
        self
    }

    /// The task's priority class (see `mezz priorities`); without it the
    /// framework's (`FrameworkInfo.priority`), else the cluster's default.
    /// A task of a higher class may preempt preemptible tasks of lower
    /// classes; an unknown class is refused (TASK_ERROR).
    ///
    /// ```
    /// use mezz_sdk::{proto, TaskBuilder};
    /// let offer = proto::Offer { agent_id: "agent-1".into(), ..Default::default() };
    /// let task = TaskBuilder::shell("train-1", "python train.py").priority("production").build(&offer);
    /// assert_eq!(task.priority, "production");
    /// ```
    pub fn priority(mut self, class: impl Into<String>) -> Self {
        self.info.priority = class.into();
        self
    }

    /// The run deadline: the master kills the task (TASK_KILLED,
    /// TASK_REASON_DEADLINE_EXCEEDED) once it has run this long.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mezz_sdk::{proto, TaskBuilder};
    /// let offer = proto::Offer { agent_id: "agent-1".into(), ..Default::default() };
    /// let task = TaskBuilder::shell("t", "sleep 1000").max_run(Duration::from_secs(60)).build(&offer);
    /// assert_eq!(task.max_run_secs, 60.0);
    /// ```
    pub fn max_run(mut self, limit: Duration) -> Self {
        self.info.max_run_secs = limit.as_secs_f64();
        self
    }

    /// A health check the agent runs while the task is RUNNING: a change of
    /// health arrives as a RUNNING update with `healthy` set, and after
    /// `consecutive_failures` failures in a row the agent kills the task
    /// (TASK_KILLED, TASK_REASON_HEALTH_CHECK_FAILED).
    ///
    /// ```
    /// use mezz_sdk::{proto, TaskBuilder};
    ///
    /// let offer = proto::Offer { agent_id: "agent-1".into(), ..Default::default() };
    /// let check = proto::HealthCheck {
    ///     check: Some(proto::health_check::Check::Http(proto::HttpHealthCheck {
    ///         port: 8080,
    ///         path: "/ready".into(),
    ///         ..Default::default()
    ///     })),
    ///     interval_secs: 5.0,
    ///     consecutive_failures: 3,
    ///     ..Default::default()
    /// };
    /// let task = TaskBuilder::shell("web-1", "./serve --port 8080")
    ///     .health_check(check)
    ///     .build(&offer);
    /// assert_eq!(task.health_check.unwrap().interval_secs, 5.0);
    /// ```
    pub fn health_check(mut self, check: proto::HealthCheck) -> Self {
        self.info.health_check = Some(check);
        self
    }

    /// The task, placed on `offer`'s agent.
    pub fn build(self, offer: &proto::Offer) -> proto::TaskInfo {
        self.build_on(&AgentId(offer.agent_id.clone()))
    }

    /// The task, placed on `agent_id` (see [`crate::Placement::task`]).
    pub fn build_on(mut self, agent_id: &AgentId) -> proto::TaskInfo {
        self.info.agent_id = agent_id.0.clone();
        self.info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_tasks_keep_their_arguments() {
        let offer = proto::Offer {
            agent_id: "a1".into(),
            ..Default::default()
        };
        let needs = Resources::parse("cpus:0.5;mem:64").expect("valid resources");
        let task = TaskBuilder::exec("t1", "/bin/echo", ["a", "b"])
            .name("echo")
            .resources(&needs)
            .label("team", "ml")
            .kill_grace(Duration::from_millis(2500))
            .build(&offer);
        let command = task.command.clone().expect("command set");
        assert_eq!(command.value, "/bin/echo");
        assert_eq!(command.arguments, ["a", "b"]);
        assert!(!command.shell);
        assert_eq!((task.task_id.as_str(), task.name.as_str()), ("t1", "echo"));
        assert_eq!(task.agent_id, "a1");
        assert_eq!(task.labels.get("team").map(String::as_str), Some("ml"));
        assert_eq!(task.kill_grace_period_secs, 2.5);
        assert_eq!(Resources::from_proto(&task.resources), Ok(needs));
    }
}
