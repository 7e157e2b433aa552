//! Frameworks in the state machine: subscription and failover, the calls of
//! the scheduler API (accept, decline, revive, suppress, kill, acknowledge,
//! reconcile, teardown) and removal when a failover timeout runs out.

use mezz_proto::v1::{
    event, master_message, replicated_command::Command, Event, FrameworkInfo, MasterMessage,
    ReconcileTask, ReplicatedCommand, ShutdownFramework, StatusSource, Subscribed, TaskInfo,
    TaskReason, TaskState, TaskStatus,
};
use mezz_proto::{AgentId, FrameworkId, OfferId, Resources, TaskId, PROTOCOL_VERSION};

use super::agents::ack_message;
use super::{CallError, Cluster, ConnId, Effect, Millis};

/// The longest failover timeout a framework may ask for (one week).
pub const MAX_FAILOVER_SECS: f64 = 7.0 * 24.0 * 3600.0;

impl Cluster {
    /// A framework subscribes on stream `conn`. `Ok` means the stream
    /// stays open; the `Subscribed` event follows once the registration is
    /// replicated.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        protocol_version: u32,
        mut info: FrameworkInfo,
        now: Millis,
    ) -> Result<(), CallError> {
        self.now = now;
        if protocol_version != PROTOCOL_VERSION {
            return Err(CallError::Invalid(format!(
                "framework speaks protocol version {protocol_version}, this master speaks \
                 {PROTOCOL_VERSION}; upgrade the framework's SDK"
            )));
        }
        if info.name.trim().is_empty() {
            return Err(CallError::Invalid(
                "framework.name is empty; give the framework a name".into(),
            ));
        }
        if !info.failover_timeout_secs.is_finite()
            || !(0.0..=MAX_FAILOVER_SECS).contains(&info.failover_timeout_secs)
        {
            return Err(CallError::Invalid(format!(
                "framework.failover_timeout_secs {} must be between 0 and {MAX_FAILOVER_SECS}",
                info.failover_timeout_secs
            )));
        }
        mezz_proto::ids::validate_web_url("framework.webui_url", &info.webui_url)
            .map_err(CallError::Invalid)?;
        if info.role.is_empty() {
            info.role = "*".into();
        }
        mezz_proto::resources::check_role(&info.role)
            .map_err(|e| CallError::Invalid(format!("framework.role: {e}")))?;
        if !info.priority.is_empty() {
            self.check_priority(&info.priority, "framework.priority")
                .map_err(CallError::Invalid)?;
        }
        if info.id.is_empty() {
            info.id = self.next_id("f");
        } else {
            mezz_proto::ids::validate_id("framework", &info.id).map_err(CallError::Invalid)?;
        }
        let id = FrameworkId(info.id.clone());
        if self.registry.removed_frameworks.contains(&id) {
            return Err(CallError::FailedPrecondition(format!(
                "framework {id} was removed (torn down or its failover timeout expired); \
                 subscribe again without an id"
            )));
        }
        if self.registry.frameworks.get(&id) == Some(&info) {
            self.complete_subscription(conn, &id);
        } else {
            tracing::info!(framework_id = %id, "registering framework '{}'", info.name);
            if let Some(old) = self.pending_frameworks.insert(id.clone(), conn) {
                self.effects.push(Effect::CloseFramework(old));
            }
            self.effects.push(Effect::Propose(ReplicatedCommand {
                command: Some(Command::RegisterFramework(info)),
            }));
        }
        Ok(())
    }

    pub(super) fn complete_subscription(&mut self, conn: ConnId, id: &FrameworkId) {
        let Some(fw) = self.frameworks.get_mut(id) else {
            return;
        };
        let reconnected = fw.conn.is_some() || !fw.unacked.is_empty();
        if let Some(old) = fw.conn.replace(conn).filter(|&c| c != conn) {
            self.framework_conns.remove(&old);
            self.effects.push(Effect::ToFramework(
                old,
                error_event("framework failed over to a new connection"),
            ));
            self.effects.push(Effect::CloseFramework(old));
        }
        fw.disconnected_since = None;
        fw.suppressed = false;
        fw.unacked.begin_resend();
        let unacked: Vec<TaskStatus> = fw.unacked.take_resend(super::RESEND_WINDOW);
        self.framework_conns.insert(conn, id.clone());
        self.effects.push(Effect::ToFramework(
            conn,
            Event {
                event: Some(event::Event::Subscribed(Subscribed {
                    protocol_version: PROTOCOL_VERSION,
                    framework_id: id.0.clone(),
                    heartbeat_interval_secs: self.timeouts.framework_heartbeat as f64 / 1000.0,
                    master_id: self.master_id.clone(),
                })),
            },
        ));
        tracing::info!(framework_id = %id, reconnected, "framework subscribed");
        for status in unacked {
            self.forward_update(status);
        }
        self.dirty_frameworks.insert(id.clone());
        self.alloc_dirty = true;
    }

    /// A framework's event stream ended.
    pub fn framework_disconnected(&mut self, conn: ConnId, now: Millis) {
        self.now = now;
        self.pending_frameworks.retain(|_, c| *c != conn);
        let Some(id) = self.framework_conns.remove(&conn) else {
            return;
        };
        if let Some(fw) = self.frameworks.get_mut(&id) {
            if fw.conn == Some(conn) {
                fw.conn = None;
                fw.disconnected_since = Some(now);
                self.dirty_frameworks.insert(id.clone());
                tracing::info!(framework_id = %id, "framework disconnected; failover timeout {} s", fw.info.failover_timeout_secs);
            }
        }
        self.recover_framework_offers(&id);
    }

    pub(super) fn expire_frameworks(&mut self) {
        let now = self.now;
        let expired: Vec<FrameworkId> = self
            .frameworks
            .iter()
            .filter(|(_, f)| {
                f.conn.is_none()
                    && f.disconnected_since.is_some_and(|t| {
                        now.saturating_sub(t) as f64 >= f.info.failover_timeout_secs * 1000.0
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(framework_id = %id, "framework failover timeout expired; removing it");
            self.remove_framework(&id);
        }
    }

    fn remove_framework(&mut self, id: &FrameworkId) {
        self.recover_framework_offers(id);
        if let Some(fw) = self.frameworks.remove(id) {
            if let Some(conn) = fw.conn {
                self.framework_conns.remove(&conn);
                self.effects
                    .push(Effect::ToFramework(conn, error_event("framework removed")));
                self.effects.push(Effect::CloseFramework(conn));
            }
        }
        self.effects.push(Effect::Propose(ReplicatedCommand {
            command: Some(Command::RemoveFramework(id.0.clone())),
        }));
        let conns: Vec<ConnId> = self.agents.values().filter_map(|a| a.conn).collect();
        for conn in conns {
            self.effects.push(Effect::ToAgent(
                conn,
                MasterMessage {
                    message: Some(master_message::Message::ShutdownFramework(
                        ShutdownFramework {
                            framework_id: id.0.clone(),
                        },
                    )),
                },
            ));
        }
        let keys: Vec<(FrameworkId, TaskId)> =
            self.tasks.keys().filter(|k| k.0 == *id).cloned().collect();
        for key in keys {
            if let Some(task) = self.tasks.get(&key).cloned() {
                // Taken until the agent confirms the kill.
                self.hold_while_killing(&task.agent_id, &key, &task.resources);
                let st = self.master_status(
                    &task,
                    TaskState::Killed,
                    TaskReason::FrameworkRemoved,
                    "framework removed".into(),
                    false,
                );
                self.set_task_status(&key, st);
            }
        }
        self.dirty_frameworks.insert(id.clone());
    }

    pub(super) fn framework(&self, id: &str) -> Result<&super::Framework, CallError> {
        self.frameworks
            .get(&FrameworkId(id.to_string()))
            .ok_or_else(|| {
                CallError::NotFound(format!(
                    "framework '{id}' is not registered; subscribe first"
                ))
            })
    }

    /// DECLINE: give offers back and do not offer their agents again for
    /// refuse-seconds. Offers of several agents may be declined at once
    /// (as Mesos allows), each agent filtered. Offers no longer valid
    /// (rescinded, expired) are skipped: there is nothing to give back; the
    /// call fails only when none is valid, or when one was made to another
    /// framework (then nothing is declined).
    pub fn decline(
        &mut self,
        framework_id: &str,
        offer_ids: &[String],
        refuse_seconds: Option<f64>,
        now: Millis,
    ) -> Result<(), CallError> {
        self.now = now;
        let fid = FrameworkId(framework_id.to_string());
        self.framework(framework_id)?;
        if offer_ids.is_empty() {
            return Err(CallError::Invalid("no offer ids given".into()));
        }
        let mut valid = Vec::new();
        for oid in offer_ids {
            match self.offers.get(&OfferId(oid.clone())) {
                Some(o) if o.framework_id != fid => {
                    return Err(CallError::Invalid(format!(
                        "offer {oid} was not made to framework {fid}"
                    )))
                }
                Some(_) => valid.push(OfferId(oid.clone())),
                None => {
                    tracing::debug!(offer_id = %oid, framework_id, "declined offer is gone already")
                }
            }
        }
        if valid.is_empty() {
            return Err(CallError::NotFound(format!(
                "offer {} is no longer valid (rescinded, expired or already used)",
                offer_ids.join(", ")
            )));
        }
        let refuse = refuse_ms(refuse_seconds, self.timeouts.default_refuse);
        for oid in valid {
            let Some(o) = self.remove_offer(&oid) else {
                continue; // named twice
            };
            self.counters.offers_declined += 1;
            if let Some(fw) = self.frameworks.get_mut(&fid) {
                if refuse > 0 {
                    fw.filters.insert(o.agent_id, now + refuse);
                }
            }
        }
        Ok(())
    }

    /// REVIVE: clear filters and resume offers.
    pub fn revive(&mut self, framework_id: &str, now: Millis) -> Result<(), CallError> {
        self.now = now;
        self.framework(framework_id)?;
        if let Some(fw) = self
            .frameworks
            .get_mut(&FrameworkId(framework_id.to_string()))
        {
            fw.filters.clear();
            fw.suppressed = false;
        }
        self.dirty_frameworks
            .insert(FrameworkId(framework_id.to_string()));
        self.alloc_dirty = true;
        Ok(())
    }

    /// SUPPRESS: no more offers until REVIVE; outstanding ones stay.
    pub fn suppress(&mut self, framework_id: &str, now: Millis) -> Result<(), CallError> {
        self.now = now;
        self.framework(framework_id)?;
        if let Some(fw) = self
            .frameworks
            .get_mut(&FrameworkId(framework_id.to_string()))
        {
            fw.suppressed = true;
        }
        self.dirty_frameworks
            .insert(FrameworkId(framework_id.to_string()));
        Ok(())
    }

    /// KILL a task of a framework.
    pub fn kill(
        &mut self,
        framework_id: &str,
        task_id: &str,
        grace: Option<f64>,
        now: Millis,
    ) -> Result<(), CallError> {
        self.now = now;
        self.framework(framework_id)?;
        if let Some(g) = grace {
            if !g.is_finite() || g < 0.0 {
                return Err(CallError::Invalid(format!(
                    "grace period {g} must be a non-negative number"
                )));
            }
        }
        let key = (
            FrameworkId(framework_id.to_string()),
            TaskId(task_id.to_string()),
        );
        if !self.tasks.contains_key(&key) {
            // Answer with what we know, as Mesos does for unknown tasks.
            self.reconcile(
                framework_id,
                vec![ReconcileTask {
                    task_id: task_id.to_string(),
                    agent_id: String::new(),
                }],
                now,
            )?;
            return Ok(());
        }
        tracing::info!(task_id, framework_id, "kill requested");
        self.send_kill(&key, grace);
        Ok(())
    }

    /// Operator kill by task id (the framework found by search when not
    /// given). Returns the framework and task killed.
    pub fn operator_kill(
        &mut self,
        task_id: &str,
        framework_id: &str,
        now: Millis,
    ) -> Result<(FrameworkId, TaskId), CallError> {
        let matches: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .keys()
            .filter(|(f, t)| t.0 == task_id && (framework_id.is_empty() || f.0 == framework_id))
            .cloned()
            .collect();
        match matches.as_slice() {
            [] => Err(CallError::NotFound(format!(
                "no active task '{task_id}'; see `mezz ps`"
            ))),
            [key] => {
                self.kill(&key.0 .0.clone(), &key.1 .0.clone(), None, now)?;
                Ok(key.clone())
            }
            _ => Err(CallError::Invalid(format!(
                "task id '{task_id}' is active in {} frameworks; name the framework",
                matches.len()
            ))),
        }
    }

    /// ACKNOWLEDGE a status update: the agent may forget it.
    pub fn acknowledge(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        task_id: &str,
        uuid: &str,
        now: Millis,
    ) -> Result<(), CallError> {
        self.now = now;
        self.framework(framework_id)?;
        if uuid.is_empty() {
            return Err(CallError::Invalid("acknowledgement without a uuid".into()));
        }
        let (status, next) = match self
            .frameworks
            .get_mut(&FrameworkId(framework_id.to_string()))
        {
            // Each acknowledgement makes room for one more update kept
            // from before the subscription.
            Some(f) => (f.unacked.remove(uuid), f.unacked.take_resend(1)),
            None => (None, Vec::new()),
        };
        for s in next {
            self.forward_update(s);
        }
        let from_agent = status
            .as_ref()
            .is_none_or(|s| s.source() != StatusSource::Master);
        if from_agent {
            if let Some(conn) = self
                .agents
                .get(&AgentId(agent_id.to_string()))
                .and_then(|a| a.conn)
            {
                self.effects.push(Effect::ToAgent(
                    conn,
                    ack_message(framework_id, task_id, uuid),
                ));
            }
        }
        Ok(())
    }

    /// RECONCILE: the latest known state of the given tasks, or of all the
    /// framework's active tasks when none are given.
    pub fn reconcile(
        &mut self,
        framework_id: &str,
        tasks: Vec<ReconcileTask>,
        now: Millis,
    ) -> Result<(), CallError> {
        self.now = now;
        let fid = FrameworkId(framework_id.to_string());
        self.framework(framework_id)?;
        let mut answers = Vec::new();
        if tasks.is_empty() {
            for t in self.tasks.values().filter(|t| t.framework_id == fid) {
                answers.push(t.clone());
            }
        } else {
            for rt in &tasks {
                let key = (fid.clone(), TaskId(rt.task_id.clone()));
                let found = self
                    .tasks
                    .get(&key)
                    .or_else(|| self.completed.find(&fid, &rt.task_id))
                    .cloned();
                match found {
                    Some(t) => answers.push(t),
                    None => {
                        let agent = AgentId(rt.agent_id.clone());
                        let awaited = self.agents.get(&agent).is_some_and(|a| a.conn.is_none());
                        let removed = self.registry.removed_agents.contains(&agent);
                        let info = TaskInfo {
                            task_id: rt.task_id.clone(),
                            ..Default::default()
                        };
                        let t = self.task_record(
                            &fid,
                            agent,
                            info,
                            Resources::new(),
                            TaskStatus::default(),
                        );
                        let (state, msg) = if removed {
                            (
                                TaskState::Lost,
                                "the task's agent was removed after it stayed unreachable",
                            )
                        } else if awaited {
                            (
                                TaskState::Unreachable,
                                "the task's agent has not re-registered yet",
                            )
                        } else {
                            (TaskState::Unknown, "the master does not know this task")
                        };
                        let st = self.master_status(
                            &t,
                            state,
                            TaskReason::Reconciliation,
                            msg.into(),
                            false,
                        );
                        self.forward_update(st);
                    }
                }
            }
        }
        for t in answers {
            let mut st = t.status.clone();
            st.uuid.clear();
            st.reason = TaskReason::Reconciliation as i32;
            st.source = StatusSource::Master as i32;
            self.forward_update(st);
        }
        Ok(())
    }

    /// TEARDOWN: remove the framework and kill its tasks.
    pub fn teardown(&mut self, framework_id: &str, now: Millis) -> Result<(), CallError> {
        self.now = now;
        self.framework(framework_id)?;
        tracing::info!(framework_id, "framework teardown");
        self.remove_framework(&FrameworkId(framework_id.to_string()));
        Ok(())
    }
}

pub(super) fn refuse_ms(refuse_seconds: Option<f64>, default: Millis) -> Millis {
    match refuse_seconds {
        Some(s) if s.is_finite() && s > 0.0 => (s.min(365.0 * 86400.0) * 1000.0) as Millis,
        Some(_) => 0,
        None => default,
    }
}

fn error_event(message: &str) -> Event {
    Event {
        event: Some(event::Event::Error(mezz_proto::v1::Error {
            message: message.to_string(),
        })),
    }
}
