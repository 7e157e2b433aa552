//! Agents in the state machine: (re-)registration with the tasks they run,
//! heartbeats, status updates (forwarded at least once) and agents that go
//! away (offers rescinded at once, tasks LOST after the re-register timeout).
//!
//! Nothing an agent says is taken on trust beyond what it may speak for: a
//! registration must present the secret pinned for its id (see
//! `identity`), and an agent's status updates and task lists count only
//! for tasks the master placed on, or adopted from, that very agent.

use mezz_proto::v1::{
    event, master_message, replicated_command::Command, AgentRefused, AgentRegistered, Event,
    Failure, GpuUsage, KillTask, MasterMessage, RegisterAgent, ReplicatedCommand, StatusAck,
    TaskReason, TaskState, TaskStatus,
};
use mezz_proto::{AgentId, FrameworkId, Resources, TaskId, PROTOCOL_VERSION};

use super::{identity, Cluster, ConnId, Effect, Millis, Task};

impl Cluster {
    /// Refuses a registration: the stream gets `AgentRefused` and ends;
    /// nothing else changes. The shell logs it with the peer's address.
    fn refuse_agent(&mut self, conn: ConnId, message: String) {
        tracing::debug!(conn, "refusing agent registration: {message}");
        self.counters.agent_registrations_refused += 1;
        self.effects.push(Effect::ToAgent(
            conn,
            MasterMessage {
                message: Some(master_message::Message::Refused(AgentRefused { message })),
            },
        ));
        self.effects.push(Effect::CloseAgent(conn));
    }

    /// An agent (re-)registers on stream `conn`.
    pub fn agent_register(&mut self, conn: ConnId, msg: RegisterAgent, now: Millis) {
        self.now = now;
        if msg.protocol_version != PROTOCOL_VERSION {
            return self.refuse_agent(
                conn,
                format!(
                    "agent speaks protocol version {}, this master speaks {PROTOCOL_VERSION}; \
                     run the same Mezzanine release on agents and masters",
                    msg.protocol_version
                ),
            );
        }
        let Some(info) = msg.agent.clone() else {
            return self.refuse_agent(conn, "registration carries no agent info".into());
        };
        if let Err(e) = mezz_proto::ids::validate_id("agent", &info.id) {
            return self.refuse_agent(conn, e);
        }
        if let Err(e) = Resources::from_proto(&info.resources) {
            return self.refuse_agent(conn, format!("agent {}: {e}", info.id));
        }
        for t in &msg.tasks {
            let Some(task) = &t.task else {
                return self.refuse_agent(
                    conn,
                    format!("agent {}: a reported task has no task info", info.id),
                );
            };
            if let Err(e) = Resources::from_proto(&task.resources) {
                return self.refuse_agent(
                    conn,
                    format!("agent {}: task {}: {e}", info.id, task.task_id),
                );
            }
        }
        let id = AgentId(info.id.clone());
        // Who is registering is settled before anything changes: a
        // registration that is refused leaves the agent of that id, its
        // stream, tasks and resources exactly as they were.
        if let Err(e) = identity::check_secret(&id.0, &msg.secret) {
            return self.refuse_agent(conn, e);
        }
        let pinned = self.registry.agent_credentials.get(&id);
        if let Some(cred) = pinned {
            if !identity::verify(cred, &id.0, &msg.secret) {
                return self.refuse_agent(conn, wrong_secret(&id));
            }
        }
        let pin = pinned.is_none().then(|| {
            let salt = self.next_id("salt");
            identity::credential(&id.0, salt.as_bytes(), &msg.secret)
        });
        // Frameworks only the agent remembers (e.g. the master's data was
        // lost) are registered again so they can fail over.
        for fw in &msg.frameworks {
            let fid = FrameworkId(fw.id.clone());
            if !fw.id.is_empty()
                && !self.registry.frameworks.contains_key(&fid)
                && !self.registry.removed_frameworks.contains(&fid)
            {
                self.effects.push(Effect::Propose(ReplicatedCommand {
                    command: Some(Command::RegisterFramework(fw.clone())),
                }));
                self.ensure_framework(fw);
            }
        }
        if pin.is_none() && self.registry.agents.get(&id) == Some(&info) {
            self.complete_agent_registration(conn, msg);
        } else {
            tracing::info!(agent_id = %id, "registering agent {} ({})", info.hostname, info.address);
            if let Some((old, _)) = self.pending_agents.insert(id, (conn, msg)) {
                self.effects.push(Effect::CloseAgent(old));
            }
            // An id seen for the first time (or registered before secrets
            // existed) pins the secret it presents; the pin is applied
            // before the registration that follows it in the log.
            if let Some(cred) = pin {
                self.effects.push(Effect::Propose(ReplicatedCommand {
                    command: Some(Command::PinAgentSecret(cred)),
                }));
            }
            self.effects.push(Effect::Propose(ReplicatedCommand {
                command: Some(Command::RegisterAgent(info)),
            }));
        }
    }

    /// Completes a registration whose secret matches the pinned one; the
    /// check is made again here because two registrations of a new id may
    /// have raced to pin theirs, and only the first pin applied counts.
    pub(super) fn complete_agent_registration(&mut self, conn: ConnId, msg: RegisterAgent) {
        let Some(info) = msg.agent.as_ref() else {
            return;
        };
        let id = AgentId(info.id.clone());
        match self.registry.agent_credentials.get(&id) {
            Some(cred) if identity::verify(cred, &id.0, &msg.secret) => {}
            Some(_) => return self.refuse_agent(conn, wrong_secret(&id)),
            None => {
                return self.refuse_agent(
                    conn,
                    format!("agent {id}: its secret is not recorded yet; register again"),
                )
            }
        }
        let Some(info) = msg.agent else { return };
        self.ensure_agent(&info);
        let now = self.now;
        let old_conn = self.agents.get(&id).and_then(|a| a.conn);
        if let Some(old) = old_conn.filter(|&c| c != conn) {
            self.agent_conns.remove(&old);
            self.effects.push(Effect::CloseAgent(old));
        }
        self.agent_conns.insert(conn, id.clone());
        if let Some(agent) = self.agents.get_mut(&id) {
            agent.conn = Some(conn);
            agent.last_seen = now;
            agent.disconnected_since = None;
            agent.removal_proposed = false;
        }
        self.effects.push(Effect::ToAgent(
            conn,
            MasterMessage {
                message: Some(master_message::Message::Registered(AgentRegistered {
                    protocol_version: PROTOCOL_VERSION,
                    agent_id: id.0.clone(),
                    master_id: self.master_id.clone(),
                    heartbeat_interval_secs: self.timeouts.agent_heartbeat as f64 / 1000.0,
                    // The shell's to fill in (a random key is no part of
                    // the replicated state): see `api::guard`.
                    grant_key: Vec::new(),
                })),
            },
        ));
        tracing::info!(agent_id = %id, tasks = msg.tasks.len(), "agent registered");
        self.reconcile_agent_tasks(conn, &id, msg.tasks);
        self.dirty_agents.insert(id);
    }

    /// Adopts what a (re-)registering agent runs: after a master failover
    /// the agents are the source of truth for running tasks. Tasks the
    /// master already declared LOST are killed, tasks of frameworks that are
    /// gone are shut down, and tasks the master expected on this agent but
    /// the agent does not know are LOST.
    fn reconcile_agent_tasks(
        &mut self,
        conn: ConnId,
        id: &AgentId,
        reported: Vec<mezz_proto::v1::AgentTask>,
    ) {
        let mut seen = std::collections::HashSet::new();
        // The report is the truth about what still runs: holds for tasks
        // being killed are rebuilt from it.
        let held: Vec<(FrameworkId, TaskId)> = self
            .agents
            .get(id)
            .map(|a| a.killing.keys().cloned().collect())
            .unwrap_or_default();
        for key in held {
            self.release_killed(id, &key);
        }
        // An agent removed for staying away too long: whatever it still
        // runs was declared LOST and is killed now.
        let returning = self.registry.removed_agents.contains(id);
        for t in reported {
            let Some(info) = t.task else { continue };
            let fid = FrameworkId(t.framework_id.clone());
            let key = (fid.clone(), TaskId(info.task_id.clone()));
            if let Some(other) = self
                .tasks
                .get(&key)
                .map(|t| &t.agent_id)
                .filter(|a| *a != id)
            {
                tracing::warn!(
                    agent_id = %id,
                    task_id = %info.task_id,
                    framework_id = %fid,
                    "agent reports a task that runs on agent {other}; ignored"
                );
                continue;
            }
            seen.insert(key.clone());
            let status = t.latest_status.unwrap_or_default();
            let framework_known = self.frameworks.contains_key(&fid);
            let was_lost = returning || self.completed.ended_on(&fid, &info.task_id, id);
            if (!framework_known || was_lost) && !status.state().is_terminal() {
                let reason = if framework_known {
                    TaskReason::AgentRemoved
                } else {
                    TaskReason::FrameworkRemoved
                };
                let resources = Resources::from_proto(&info.resources).unwrap_or_default();
                self.hold_while_killing(id, &key, &resources);
                self.effects.push(Effect::ToAgent(
                    conn,
                    MasterMessage {
                        message: Some(master_message::Message::Kill(KillTask {
                            framework_id: fid.0.clone(),
                            task_id: info.task_id.clone(),
                            grace_period_secs: None,
                            reason: reason as i32,
                            message: String::new(),
                        })),
                    },
                ));
                continue;
            }
            if self.tasks.contains_key(&key) {
                if status.state().is_terminal() {
                    self.set_task_status(&key, status.clone());
                } else if let Some(task) = self.tasks.get_mut(&key) {
                    if !status.uuid.is_empty() || task.status.state() == TaskState::Staging {
                        task.status = status.clone();
                    }
                }
                if task_needs_kill(self.tasks.get(&key)) {
                    self.send_kill(&key, None);
                }
                continue;
            }
            if status.state().is_terminal() {
                // It ended while this master did not know it (before a
                // failover, say).
                let resources = Resources::from_proto(&info.resources).unwrap_or_default();
                self.remember_ended(&fid, id, info, resources, status);
                continue;
            }
            let resources = Resources::from_proto(&info.resources).unwrap_or_default();
            if let Some(agent) = self.agents.get_mut(id) {
                agent.used.add(&resources);
            }
            if let Some(fw) = self.frameworks.get_mut(&fid) {
                fw.used.add(&resources);
            }
            self.dirty_agents.insert(id.clone());
            self.dirty_frameworks.insert(fid.clone());
            let mut task = self.task_record(&fid, id.clone(), info, resources, status);
            // A master that learns of a running task here (after a failover)
            // keeps its age, run deadline and attained GPU time: the agent
            // says when it launched it. A time ahead of this master's clock
            // (skew) is not believed.
            if t.launched_at > 0.0 && t.launched_at < task.launched_at {
                task.launched_at = t.launched_at;
            }
            self.tasks.insert(key, task);
        }
        if returning {
            tracing::info!(agent_id = %id, "agent came back after it was removed; killing what it ran before");
            self.maybe_agent_returned(id);
        }
        // Tasks the master launched here that the agent does not report were
        // lost on the way (the launch never arrived, or the agent's work dir
        // was wiped).
        let missing: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .on_agent(id)
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in missing {
            if let Some(task) = self.tasks.get(&key).cloned() {
                let st = self.master_status(
                    &task,
                    TaskState::Lost,
                    TaskReason::AgentRestarted,
                    format!("agent {id} re-registered without this task"),
                    true,
                );
                self.set_task_status(&key, st.clone());
                self.forward_update(st);
            }
        }
    }

    /// A heartbeat on an agent's stream, with its GPUs' use. Samples of
    /// GPUs the agent does not advertise are dropped.
    pub fn agent_heartbeat(&mut self, conn: ConnId, gpus: &[GpuUsage], now: Millis) {
        self.now = now;
        if let Some(agent) = self
            .agent_conns
            .get(&conn)
            .and_then(|id| self.agents.get_mut(id))
        {
            agent.last_seen = now;
            if gpus.is_empty() {
                return;
            }
            let known = agent.total.set_items(mezz_proto::resources::GPUS);
            for u in gpus.iter().filter(|u| known.contains(&u.gpu.as_str())) {
                agent
                    .gpu_usage
                    .entry(u.gpu.clone())
                    .or_default()
                    .record(u, now);
            }
        }
    }

    /// A status update from the agent on `conn`.
    pub fn agent_status_update(&mut self, conn: ConnId, status: TaskStatus, now: Millis) {
        self.now = now;
        let Some(agent_id) = self.agent_conns.get(&conn).cloned() else {
            tracing::debug!(conn, "status update from an unregistered stream ignored");
            return;
        };
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.last_seen = now;
        }
        if status.agent_id != agent_id.0 {
            tracing::warn!(agent_id = %agent_id, "status update names agent {}; ignored", status.agent_id);
            return;
        }
        self.counters.status_updates += 1;
        let fid = FrameworkId(status.framework_id.clone());
        let key = (fid.clone(), TaskId(status.task_id.clone()));
        tracing::debug!(task_id = %status.task_id, framework_id = %fid, state = status.state().short_name(), "status update");
        let placed_here = self.tasks.get(&key).map(|t| t.agent_id == agent_id);
        if placed_here == Some(true) {
            self.set_task_status(&key, status.clone());
        } else if placed_here.is_none() && status.state().is_terminal() {
            // An end of a task the master does not track counts only when
            // this agent was killing it, or it is the end this agent
            // already reported (an update sent again).
            let released = self.release_killed(&agent_id, &key);
            let ended_here =
                released.is_some() || self.completed.ended_on(&fid, &status.task_id, &agent_id);
            if !ended_here {
                return self.drop_update(conn, &agent_id, &status, "a task it does not run");
            }
            let info = mezz_proto::v1::TaskInfo {
                task_id: status.task_id.clone(),
                agent_id: agent_id.0.clone(),
                ..Default::default()
            };
            self.remember_ended(
                &fid,
                &agent_id,
                info,
                released.unwrap_or_default(),
                status.clone(),
            );
            self.maybe_agent_returned(&agent_id);
        } else if placed_here == Some(false) {
            return self.drop_update(conn, &agent_id, &status, "a task of another agent");
        } else {
            // Every task an agent runs is either tracked or being killed
            // since it registered, so a live state for an untracked task is
            // an old update sent again: forwarding it would show the
            // framework a task that was declared lost coming back.
            tracing::debug!(task_id = %status.task_id, "stale update for an untracked task; acknowledged, not forwarded");
            if !status.uuid.is_empty() {
                self.effects.push(Effect::ToAgent(
                    conn,
                    ack_message(&status.framework_id, &status.task_id, &status.uuid),
                ));
            }
            return;
        }
        let fw_alive = self.frameworks.contains_key(&fid);
        if fw_alive {
            self.forward_update(status);
        } else if !status.uuid.is_empty() {
            // Nobody will acknowledge it: do so on the framework's behalf.
            self.effects.push(Effect::ToAgent(
                conn,
                ack_message(&status.framework_id, &status.task_id, &status.uuid),
            ));
        }
    }

    /// Drops an update the agent on `conn` may not give: it changes no
    /// task. It is acknowledged all the same, so that an agent that sends
    /// an old update again (of an earlier run of a reused task id, say)
    /// stops sending it.
    fn drop_update(&mut self, conn: ConnId, agent_id: &AgentId, status: &TaskStatus, what: &str) {
        tracing::warn!(
            agent_id = %agent_id,
            task_id = %status.task_id,
            framework_id = %status.framework_id,
            state = status.state().short_name(),
            "status update for {what}; ignored"
        );
        self.counters.status_updates_refused += 1;
        if !status.uuid.is_empty() {
            self.effects.push(Effect::ToAgent(
                conn,
                ack_message(&status.framework_id, &status.task_id, &status.uuid),
            ));
        }
    }

    /// An agent's stream ended.
    pub fn agent_disconnected(&mut self, conn: ConnId, now: Millis) {
        self.now = now;
        self.pending_agents.retain(|_, (c, _)| *c != conn);
        let Some(id) = self.agent_conns.remove(&conn) else {
            return;
        };
        if let Some(agent) = self.agents.get_mut(&id) {
            if agent.conn == Some(conn) {
                agent.conn = None;
                agent.disconnected_since = Some(now);
                self.dirty_agents.insert(id.clone());
                tracing::info!(agent_id = %id, "agent disconnected; waiting for it to re-register");
            }
        }
        self.rescind_agent_offers(&id);
    }

    pub(super) fn expire_agents(&mut self) {
        let now = self.now;
        let silent_after = self.timeouts.agent_heartbeat * 3;
        let silent: Vec<ConnId> = self
            .agents
            .values()
            .filter_map(|a| {
                a.conn
                    .filter(|_| now.saturating_sub(a.last_seen) > silent_after)
            })
            .collect();
        for conn in silent {
            tracing::warn!(
                conn,
                "agent sent no heartbeat for {} ms; closing its stream",
                silent_after
            );
            self.effects.push(Effect::CloseAgent(conn));
            self.agent_disconnected(conn, now);
        }
        let timeout = self.timeouts.agent_reregister;
        let gone: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| {
                a.conn.is_none()
                    && !a.removal_proposed
                    && a.disconnected_since
                        .is_some_and(|t| now.saturating_sub(t) >= timeout)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            // Nothing is declared LOST before the removal is committed: a
            // leader that is replaced meanwhile must not have told anyone.
            tracing::warn!(agent_id = %id, "agent did not re-register within {} s; removing it", timeout / 1000);
            if let Some(a) = self.agents.get_mut(&id) {
                a.removal_proposed = true;
            }
            self.effects.push(Effect::Propose(ReplicatedCommand {
                command: Some(Command::RemoveAgent(id.0.clone())),
            }));
        }
    }

    /// The removal of an agent is committed. One that came back meanwhile
    /// keeps its tasks (nobody was told they were lost) and is an ordinary
    /// agent again once the group records its return; otherwise its tasks
    /// are LOST.
    pub(super) fn agent_removed(&mut self, id: &AgentId) {
        let Some(agent) = self.agents.get(id) else {
            return;
        };
        if agent.conn.is_some() {
            self.dirty_agents.insert(id.clone());
            self.maybe_agent_returned(id);
            return;
        }
        let timeout = self.timeouts.agent_reregister;
        tracing::warn!(agent_id = %id, "agent removed; its tasks are LOST");
        self.agents.remove(id);
        self.dirty_agents.insert(id.clone());
        self.pending_agents.remove(id);
        self.rescind_agent_offers(id);
        let keys: Vec<(FrameworkId, TaskId)> = self.tasks.on_agent(id).cloned().collect();
        for key in keys {
            if let Some(task) = self.tasks.get(&key).cloned() {
                let st = self.master_status(
                    &task,
                    TaskState::Lost,
                    TaskReason::AgentRemoved,
                    format!(
                        "agent {id} was unreachable for more than {} s",
                        timeout / 1000
                    ),
                    true,
                );
                self.set_task_status(&key, st.clone());
                self.forward_update(st);
            }
        }
        let conns: Vec<ConnId> = self.frameworks.values().filter_map(|f| f.conn).collect();
        for conn in conns {
            self.effects.push(Effect::ToFramework(
                conn,
                Event {
                    event: Some(event::Event::Failure(Failure {
                        agent_id: id.0.clone(),
                        message: "agent removed after it stayed unreachable".into(),
                    })),
                },
            ));
        }
    }

    /// Sends a kill for an active task to its agent, if connected; a task on
    /// a disconnected agent is killed when the agent re-registers.
    pub(super) fn send_kill(&mut self, key: &(FrameworkId, TaskId), grace: Option<f64>) {
        self.send_kill_because(key, grace, TaskReason::KilledByRequest, String::new());
    }

    /// [`Cluster::send_kill`] for a kill the master decided (a preemption,
    /// a run deadline): the task ends with `reason` and `message`.
    pub(super) fn send_kill_because(
        &mut self,
        key: &(FrameworkId, TaskId),
        grace: Option<f64>,
        reason: TaskReason,
        message: String,
    ) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        task.kill_requested = true;
        let Some(conn) = self.agents.get(&task.agent_id).and_then(|a| a.conn) else {
            return;
        };
        self.effects.push(Effect::ToAgent(
            conn,
            MasterMessage {
                message: Some(master_message::Message::Kill(KillTask {
                    framework_id: key.0 .0.clone(),
                    task_id: key.1 .0.clone(),
                    grace_period_secs: grace,
                    reason: reason as i32,
                    message,
                })),
            },
        ));
    }
}

/// A kill was requested (perhaps while the agent was away) and the task
/// still runs: resend it when the agent re-registers.
fn task_needs_kill(task: Option<&Task>) -> bool {
    task.is_some_and(|t| t.kill_requested && !t.status.state().is_terminal())
}

fn wrong_secret(id: &AgentId) -> String {
    format!(
        "agent {id}: the secret does not match the one this agent id first registered with; \
         an agent keeps its id and secret in its work dir (meta/): start it with that work \
         dir, or with an empty one to join as a new agent"
    )
}

pub(super) fn ack_message(framework_id: &str, task_id: &str, uuid: &str) -> MasterMessage {
    MasterMessage {
        message: Some(master_message::Message::Ack(StatusAck {
            framework_id: framework_id.to_string(),
            task_id: task_id.to_string(),
            uuid: uuid.to_string(),
        })),
    }
}
