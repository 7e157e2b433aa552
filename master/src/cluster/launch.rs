//! The launch path: ACCEPT takes the offers, every task is checked against
//! what they hold (resources, ids, user, class, deadlines), and each one
//! that passes is recorded STAGING and sent to its agent; one that does
//! not ends at once with a reason the framework can act on.

use mezz_proto::resources::{CPUS, MEM};
use mezz_proto::v1::{
    master_message, operation, AcceptRequest, LaunchTask, MasterMessage, StatusSource, TaskInfo,
    TaskReason, TaskState, TaskStatus,
};
use mezz_proto::{AgentId, FrameworkId, OfferId, Resources, TaskId};

use super::frameworks::refuse_ms;
use super::{CallError, Cluster, Effect, Millis};

impl Cluster {
    /// Takes offers out of circulation; all must belong to `fid` and one
    /// agent. Returns the agent and the pooled resources.
    fn take_offers(
        &mut self,
        fid: &FrameworkId,
        ids: &[String],
    ) -> Result<(AgentId, Resources), CallError> {
        if ids.is_empty() {
            return Err(CallError::Invalid("no offer ids given".into()));
        }
        let mut agent: Option<AgentId> = None;
        for oid in ids {
            let Some(o) = self.offers.get(&OfferId(oid.clone())) else {
                return Err(CallError::NotFound(format!(
                    "offer {oid} is no longer valid (rescinded, expired or already used)"
                )));
            };
            if o.framework_id != *fid {
                return Err(CallError::Invalid(format!(
                    "offer {oid} was not made to framework {fid}"
                )));
            }
            if agent.as_ref().is_some_and(|a| *a != o.agent_id) {
                return Err(CallError::Invalid(
                    "offers of different agents cannot be combined".into(),
                ));
            }
            agent = Some(o.agent_id.clone());
        }
        let mut pool = Resources::new();
        for oid in ids {
            if let Some(o) = self.remove_offer(&OfferId(oid.clone())) {
                pool.add(&o.resources);
            }
        }
        Ok((agent.unwrap_or_default(), pool))
    }

    /// ACCEPT: launch tasks on offered resources. Bad tasks are answered
    /// with TASK_ERROR / TASK_DROPPED updates, as in Mesos; what is left of
    /// the offers goes back with a refuse filter.
    pub fn accept(&mut self, req: AcceptRequest, now: Millis) -> Result<(), CallError> {
        self.now = now;
        let fid = FrameworkId(req.framework_id.clone());
        self.framework(&req.framework_id)?;
        let tasks: Vec<TaskInfo> = req
            .operations
            .iter()
            .filter_map(|op| {
                op.operation.as_ref().map(|o| match o {
                    operation::Operation::Launch(l) => l.tasks.clone(),
                })
            })
            .flatten()
            .collect();
        let (agent_id, mut pool) = match self.take_offers(&fid, &req.offer_ids) {
            Ok(v) => v,
            Err(e) if !tasks.is_empty() => {
                for t in &tasks {
                    self.reject_task(
                        &fid,
                        t,
                        TaskState::Dropped,
                        TaskReason::ResourcesUnavailable,
                        e.to_string(),
                    );
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.counters.offers_accepted += 1;
        for mut task in tasks {
            if task.agent_id.is_empty() {
                task.agent_id = agent_id.0.clone();
            }
            match self.validate_task(&fid, &agent_id, &task, &pool) {
                Ok(resources) => {
                    pool.subtract(&resources);
                    self.launch(&fid, &agent_id, task, resources);
                }
                Err(msg) => {
                    self.reject_task(&fid, &task, TaskState::Error, TaskReason::InvalidTask, msg)
                }
            }
        }
        let refuse = refuse_ms(
            req.filters.as_ref().and_then(|f| f.refuse_seconds),
            self.timeouts.default_refuse,
        );
        self.dirty_agents.insert(agent_id.clone());
        self.dirty_frameworks.insert(fid.clone());
        if let Some(fw) = self.frameworks.get_mut(&fid) {
            if refuse > 0 && !pool.is_empty() {
                fw.filters.insert(agent_id, now + refuse);
            }
        }
        Ok(())
    }

    fn validate_task(
        &self,
        fid: &FrameworkId,
        agent_id: &AgentId,
        task: &TaskInfo,
        pool: &Resources,
    ) -> Result<Resources, String> {
        mezz_proto::ids::validate_id("task", &task.task_id)?;
        let tid = &task.task_id;
        if task.agent_id != agent_id.0 {
            return Err(format!(
                "task {tid} names agent {} but the offer is for agent {agent_id}",
                task.agent_id
            ));
        }
        let cmd = task.command.as_ref().filter(|c| !c.value.trim().is_empty());
        if cmd.is_none() {
            return Err(format!("task {tid} has no command"));
        }
        if self.tasks.contains_key(&(fid.clone(), TaskId(tid.clone()))) {
            return Err(format!(
                "task {tid} is already active in framework {fid}; task ids must be unique"
            ));
        }
        let resources =
            Resources::from_proto(&task.resources).map_err(|e| format!("task {tid}: {e}"))?;
        if resources.scalar(CPUS) <= 0.0 && resources.scalar(MEM) <= 0.0 {
            return Err(format!(
                "task {tid} asks for no cpus and no mem; give it at least one"
            ));
        }
        if !pool.contains(&resources) {
            return Err(format!(
                "task {tid} needs {resources} but the accepted offers have only {pool} left"
            ));
        }
        if let Some(url) = task.labels.get("url") {
            mezz_proto::ids::validate_web_url(&format!("task {tid}: label 'url'"), url)?;
        }
        if !task.kill_grace_period_secs.is_finite() || task.kill_grace_period_secs < 0.0 {
            return Err(format!(
                "task {tid}: kill_grace_period_secs must be a non-negative number"
            ));
        }
        self.check_task_scheduling(task)?;
        Ok(resources)
    }

    fn launch(
        &mut self,
        fid: &FrameworkId,
        agent_id: &AgentId,
        mut task: TaskInfo,
        resources: Resources,
    ) {
        let Some(fw_info) = self.frameworks.get(fid).map(|f| f.info.clone()) else {
            return;
        };
        // The class a task runs in is the one in force at its launch: kept
        // with it, so it outlives its framework's registration (a finished
        // task of a torn-down framework still shows it) and reaches the
        // agent, which reports it to a new leader.
        if task.priority.is_empty() {
            task.priority = fw_info.priority.clone();
        }
        let Some(conn) = self.agents.get(agent_id).and_then(|a| a.conn) else {
            self.reject_task(
                fid,
                &task,
                TaskState::Dropped,
                TaskReason::ResourcesUnavailable,
                format!("agent {agent_id} disconnected"),
            );
            return;
        };
        tracing::info!(task_id = %task.task_id, framework_id = %fid, agent_id = %agent_id, "launching task");
        self.counters.tasks_launched += 1;
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.used.add(&resources);
        }
        if let Some(f) = self.frameworks.get_mut(fid) {
            f.used.add(&resources);
        }
        self.dirty_agents.insert(agent_id.clone());
        self.dirty_frameworks.insert(fid.clone());
        let status = TaskStatus {
            task_id: task.task_id.clone(),
            framework_id: fid.0.clone(),
            agent_id: agent_id.0.clone(),
            state: TaskState::Staging as i32,
            timestamp: self.unix_time(),
            source: StatusSource::Master as i32,
            ..Default::default()
        };
        let record = self.task_record(fid, agent_id.clone(), task.clone(), resources, status);
        self.tasks
            .insert((fid.clone(), TaskId(task.task_id.clone())), record);
        self.effects.push(Effect::ToAgent(
            conn,
            MasterMessage {
                message: Some(master_message::Message::Launch(LaunchTask {
                    framework: Some(fw_info),
                    task: Some(task),
                })),
            },
        ));
    }

    fn reject_task(
        &mut self,
        fid: &FrameworkId,
        task: &TaskInfo,
        state: TaskState,
        reason: TaskReason,
        message: String,
    ) {
        tracing::info!(task_id = %task.task_id, framework_id = %fid, "task refused: {message}");
        let t = self.task_record(
            fid,
            AgentId(task.agent_id.clone()),
            task.clone(),
            Resources::new(),
            TaskStatus::default(),
        );
        let st = self.master_status(&t, state, reason, message, false);
        *self
            .counters
            .terminal
            .entry(state.short_name())
            .or_default() += 1;
        let mut done = t;
        done.status = st.clone();
        self.remember_completed(done);
        self.forward_update(st);
    }
}
