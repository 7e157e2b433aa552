//! Simulated agents: each registers with its secret, runs the tasks a
//! master launches on it (within what it has, or the run fails),
//! finishes some, and resends status updates until they are acknowledged.
//! What an agent holds is the truth the checks compare frameworks with.

use std::collections::BTreeMap;

use mezz_proto::v1::{
    master_message, AgentInfo, AgentTask, FrameworkInfo, RegisterAgent, StatusSource, TaskInfo,
    TaskReason, TaskState, TaskStatus,
};
use mezz_proto::{Resources, PROTOCOL_VERSION};

use super::streams::{Client, Down, Up};
use super::Sim;
use crate::cluster::ConnId;

/// A task as its agent knows it: the truth.
pub(super) struct AgentTaskState {
    pub(super) framework: FrameworkInfo,
    pub(super) info: TaskInfo,
    pub(super) status: TaskStatus,
}

pub(super) struct SimAgent {
    pub(super) id: String,
    /// What it proves its identity with.
    pub(super) secret: String,
    pub(super) total: Resources,
    pub(super) tasks: BTreeMap<(String, String), AgentTaskState>,
    /// Updates not yet acknowledged, oldest first, with when last sent.
    pub(super) unacked: Vec<(TaskStatus, Option<u64>)>,
    /// Every update this agent produced, by uuid: (framework, task, state).
    pub(super) produced: BTreeMap<String, (String, String, TaskState)>,
    pub(super) conn: Option<ConnId>,
    pub(super) registered: bool,
    /// Registered at least once: its secret is pinned.
    pub(super) ever_registered: bool,
    pub(super) hint: Option<u64>,
    pub(super) last_heartbeat: u64,
    /// The master on whose side of a partition this agent is.
    pub(super) home: u64,
}

impl Sim {
    pub(super) fn agent_round(&mut self, a: usize, heal: bool) -> Result<(), String> {
        let step = self.step;
        // Connect.
        if self.agents[a].conn.is_none() {
            if !self.rng.chance(0.3) {
                return Ok(());
            }
            let hint = self.agents[a].hint.take();
            let target = self.pick_master(hint);
            if !self.master_up(target) || !self.reachable(Client::Agent(a), target) {
                return Ok(()); // refused, or no route
            }
            let conn = self.conns.open(target, Client::Agent(a));
            let reg = self.register_message(a);
            self.conns.push_up(conn, step + 1, Up::Register(reg));
            self.agents[a].conn = Some(conn);
            return Ok(());
        }
        let conn = self.agents[a].conn.expect("checked");
        let Some(msgs) = self.client_inbox(conn) else {
            return Ok(());
        };
        for m in msgs {
            self.agent_message(a, m)?;
        }
        let agent = &mut self.agents[a];
        if agent.conn != Some(conn) || !agent.registered {
            return Ok(());
        }
        // Tasks end on their own now and then.
        if !heal {
            let running: Vec<(String, String)> = agent
                .tasks
                .iter()
                .filter(|(_, t)| !t.status.state().is_terminal())
                .map(|(k, _)| k.clone())
                .collect();
            for key in running {
                if self.rng.chance(0.01) {
                    self.task_changed(a, &key, TaskState::Finished, TaskReason::CommandExited);
                }
            }
        }
        let agent = &mut self.agents[a];
        let mut send = Vec::new();
        if step >= agent.last_heartbeat + 10 {
            agent.last_heartbeat = step;
            send.push(Up::Heartbeat);
        }
        // Unacknowledged updates: new ones at once, old ones again after
        // a while (as the agent's resend timer does).
        for (status, sent) in agent.unacked.iter_mut() {
            if sent.is_none_or(|s| step >= s + 20) {
                *sent = Some(step);
                send.push(Up::Update(status.clone()));
            }
        }
        for m in send {
            self.conns.push_up(conn, step + 1, m);
        }
        Ok(())
    }

    pub(super) fn register_message(&mut self, a: usize) -> RegisterAgent {
        let agent = &mut self.agents[a];
        // Every update is sent again on the new stream.
        for (_, sent) in agent.unacked.iter_mut() {
            *sent = None;
        }
        let mut frameworks: BTreeMap<String, FrameworkInfo> = BTreeMap::new();
        let tasks = agent
            .tasks
            .iter()
            .map(|((fid, _), t)| {
                frameworks.insert(fid.clone(), t.framework.clone());
                AgentTask {
                    framework_id: fid.clone(),
                    task: Some(t.info.clone()),
                    latest_status: Some(t.status.clone()),
                    launched_at: 0.0,
                }
            })
            .collect();
        RegisterAgent {
            protocol_version: PROTOCOL_VERSION,
            agent: Some(AgentInfo {
                id: agent.id.clone(),
                hostname: agent.id.clone(),
                address: "127.0.0.1:1".into(),
                resources: agent.total.to_proto(),
                ..Default::default()
            }),
            tasks,
            frameworks: frameworks.into_values().collect(),
            secret: agent.secret.clone(),
        }
    }

    /// A task changes state on its agent: the agent produces an update.
    pub(super) fn task_changed(
        &mut self,
        a: usize,
        key: &(String, String),
        state: TaskState,
        reason: TaskReason,
    ) {
        let uuid = format!("{:016x}", self.rng.next());
        let agent = &mut self.agents[a];
        let Some(task) = agent.tasks.get_mut(key) else {
            return;
        };
        if task.status.state().is_terminal() {
            return;
        }
        let status = TaskStatus {
            task_id: key.1.clone(),
            framework_id: key.0.clone(),
            agent_id: agent.id.clone(),
            state: state as i32,
            reason: reason as i32,
            uuid: uuid.clone(),
            source: StatusSource::Agent as i32,
            ..Default::default()
        };
        task.status = status.clone();
        agent
            .produced
            .insert(uuid, (key.0.clone(), key.1.clone(), state));
        agent.unacked.push((status, None));
    }

    pub(super) fn agent_message(&mut self, a: usize, m: Down) -> Result<(), String> {
        let msg = match m {
            Down::Refused(_, hint) => {
                self.agents[a].hint = hint;
                return Ok(());
            }
            Down::Agent(msg) => msg,
            Down::Event(_) | Down::Accepted(..) => {
                return Err(format!("agent {a} got a framework's message"))
            }
        };
        use master_message::Message as M;
        match msg.message {
            Some(M::Registered(_)) => {
                self.agents[a].registered = true;
                self.agents[a].ever_registered = true;
            }
            Some(M::Launch(l)) => {
                let (Some(fw), Some(task)) = (l.framework, l.task) else {
                    return Err("a launch without framework or task".into());
                };
                let key = (fw.id.clone(), task.task_id.clone());
                let agent = &mut self.agents[a];
                if agent.tasks.contains_key(&key) {
                    return Err(format!("task {key:?} launched twice on {}", agent.id));
                }
                let mut used = Resources::new();
                for t in agent.tasks.values() {
                    if !t.status.state().is_terminal() {
                        used.add(&Resources::from_proto(&t.info.resources).unwrap_or_default());
                    }
                }
                used.add(&Resources::from_proto(&task.resources).unwrap_or_default());
                if !agent.total.contains(&used) {
                    return Err(format!(
                        "agent {} was asked to run {used} but has {} (resources handed out twice)",
                        agent.id, agent.total
                    ));
                }
                agent.tasks.insert(
                    key.clone(),
                    AgentTaskState {
                        framework: fw,
                        info: task,
                        status: TaskStatus {
                            state: TaskState::Staging as i32,
                            ..Default::default()
                        },
                    },
                );
                self.launches += 1;
                self.task_changed(a, &key, TaskState::Running, TaskReason::Unspecified);
            }
            Some(M::Kill(k)) => {
                let key = (k.framework_id, k.task_id);
                self.task_changed(a, &key, TaskState::Killed, TaskReason::KilledByRequest);
            }
            Some(M::Ack(ack)) => {
                self.agents[a].unacked.retain(|(s, _)| s.uuid != ack.uuid);
            }
            Some(M::ShutdownFramework(s)) => {
                let keys: Vec<_> = self.agents[a]
                    .tasks
                    .keys()
                    .filter(|(f, _)| *f == s.framework_id)
                    .cloned()
                    .collect();
                for key in keys {
                    self.task_changed(a, &key, TaskState::Killed, TaskReason::FrameworkRemoved);
                }
            }
            Some(M::Refused(r)) => {
                return Err(format!("agent {a} refused: {}", r.message));
            }
            None => {}
        }
        Ok(())
    }
}
