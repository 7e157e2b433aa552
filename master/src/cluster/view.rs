//! Read-only views of the state machine for the operator API, `/api/state`
//! and the status page.

use mezz_proto::v1::{
    AgentView, ClusterState, FrameworkView, MasterView, PriorityClassView, QueueEntryView,
    TaskStateChange, TaskView,
};
use mezz_proto::PROTOCOL_VERSION;
use mezz_proto::{FrameworkId, TaskId};

use super::queue::need_text;
use super::{Cluster, Task};

fn task_view(c: &Cluster, t: &Task) -> TaskView {
    let agent = c.agents.get(&t.agent_id);
    let gpus: Vec<String> = t
        .resources
        .set_items(mezz_proto::resources::GPUS)
        .into_iter()
        .map(String::from)
        .collect();
    let gpu_usage = agent
        .map(|a| {
            gpus.iter()
                .filter_map(|g| c.gpu_usage_view(a, g, Some(&t.info.task_id)))
                .collect()
        })
        .unwrap_or_default();
    let cmd = t
        .info
        .command
        .as_ref()
        .map(|c| {
            if c.shell || c.arguments.is_empty() {
                c.value.clone()
            } else {
                format!("{} {}", c.value, c.arguments.join(" "))
            }
        })
        .unwrap_or_default();
    let key = (
        FrameworkId(t.framework_id.0.clone()),
        TaskId(t.info.task_id.clone()),
    );
    let mut history: Vec<TaskStateChange> = c
        .history
        .get(&key)
        .map(|h| h.iter().cloned().collect())
        .unwrap_or_default();
    // The latest state may have been set without passing through
    // `set_task_status` (a launch, an agent re-registering).
    let state = t.status.state().short_name();
    if history.last().is_none_or(|last| last.state != state) {
        history.push(TaskStateChange {
            state: state.to_string(),
            timestamp: t.status.timestamp,
            reason: t.status.reason().short_name().to_string(),
            message: t.status.message.clone(),
        });
    }
    TaskView {
        id: t.info.task_id.clone(),
        name: t.info.name.clone(),
        framework_id: t.framework_id.0.clone(),
        framework_name: t.framework_name.clone(),
        role: t.framework_role.clone(),
        agent_id: t.agent_id.0.clone(),
        agent_address: agent.map(|a| a.info.address.clone()).unwrap_or_default(),
        hostname: agent.map(|a| a.info.hostname.clone()).unwrap_or_default(),
        state: t.status.state().short_name().to_string(),
        reason: t.status.reason().short_name().to_string(),
        message: t.status.message.clone(),
        exit_code: t.status.exit_code,
        signal: t.status.signal,
        resources: t.resources.to_string(),
        command: cmd,
        launched_at: t.launched_at,
        updated_at: t.status.timestamp,
        gpus,
        gpu_usage,
        history,
        healthy: t.status.healthy,
        labels: t.info.labels.clone(),
        priority: c.task_priority(t).name.clone(),
    }
}

impl Cluster {
    /// The use of `agent`'s GPU `gpu`, held by task `holder`; `None`
    /// until a heartbeat reported it.
    fn gpu_usage_view(
        &self,
        agent: &super::Agent,
        gpu: &str,
        holder: Option<&str>,
    ) -> Option<mezz_proto::v1::GpuUsageView> {
        agent
            .gpu_usage
            .get(gpu)?
            .view(gpu, holder, self.timeouts.gpu_idle_after, self.now, |m| {
                self.wall_time(m)
            })
    }

    /// One task, active or among the completed ones kept, as the operator
    /// sees it: what a grant to its sandbox needs, without building the
    /// whole state.
    pub fn task(&self, framework_id: &str, task_id: &str) -> Option<TaskView> {
        let key = (
            FrameworkId(framework_id.to_string()),
            TaskId(task_id.to_string()),
        );
        // A task id used again: the newest of its ends, as the full view
        // lists them.
        let t = self
            .tasks
            .get(&key)
            .or_else(|| self.completed.find(&key.0, task_id))?;
        Some(task_view(self, t))
    }

    /// Which task holds each GPU, by (agent id, GPU), over the tasks that
    /// hold any.
    fn gpu_holders(&self) -> std::collections::HashMap<(&str, &str), &str> {
        self.tasks
            .values()
            .filter(|t| t.resources.set_len(mezz_proto::resources::GPUS) > 0)
            .flat_map(|t| {
                t.resources
                    .set_items(mezz_proto::resources::GPUS)
                    .into_iter()
                    .map(move |gpu| ((t.agent_id.0.as_str(), gpu), t.info.task_id.as_str()))
            })
            .collect()
    }

    /// The whole cluster as the operator sees it. `masters` and `leader`
    /// come from the replication layer.
    pub fn view(
        &self,
        completed: bool,
        masters: Vec<MasterView>,
        leader: String,
        started_at: f64,
    ) -> ClusterState {
        let holders = self.gpu_holders();
        let mut agents: Vec<AgentView> = self
            .agents
            .values()
            .map(|a| AgentView {
                id: a.info.id.clone(),
                hostname: a.info.hostname.clone(),
                address: a.info.address.clone(),
                status: if a.conn.is_some() {
                    "connected"
                } else {
                    "disconnected"
                }
                .into(),
                resources: a.total.to_string(),
                total: a.total.quantities(),
                used: a.used.quantities(),
                offered: a.offered.quantities(),
                gpus: a
                    .total
                    .set_items("gpus")
                    .into_iter()
                    .map(String::from)
                    .collect(),
                registered_at: a.registered_at,
                // The state machine's clock is monotonic; the view speaks
                // wall-clock time.
                last_seen: self.wall_time(a.last_seen),
                gpu_usage: a
                    .total
                    .set_items(mezz_proto::resources::GPUS)
                    .into_iter()
                    .filter_map(|g| {
                        self.gpu_usage_view(a, g, holders.get(&(a.info.id.as_str(), g)).copied())
                    })
                    .collect(),
                attributes: a.info.attributes.clone(),
                held_for_gpus: super::offers::held_for_gpus(a).quantities(),
                idle_gpus: mezz_proto::holdback::gpus_milli(&a.available()) as f64 / 1000.0,
            })
            .collect();
        agents.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
        let mut outstanding: std::collections::HashMap<&FrameworkId, u32> =
            std::collections::HashMap::new();
        for o in self.offers.values() {
            *outstanding.entry(&o.framework_id).or_default() += 1;
        }
        let mut active: std::collections::HashMap<&FrameworkId, u32> =
            std::collections::HashMap::new();
        for t in self.tasks.values() {
            *active.entry(&t.framework_id).or_default() += 1;
        }
        let mut frameworks: Vec<FrameworkView> = self
            .frameworks
            .iter()
            .map(|(id, f)| FrameworkView {
                id: id.0.clone(),
                name: f.info.name.clone(),
                role: f.info.role.clone(),
                user: f.info.user.clone(),
                status: if f.conn.is_some() {
                    "connected"
                } else {
                    "disconnected"
                }
                .into(),
                failover_timeout_secs: f.info.failover_timeout_secs,
                used: f.used.quantities(),
                offered: f.offered.quantities(),
                active_tasks: active.get(id).copied().unwrap_or(0),
                offers_outstanding: outstanding.get(id).copied().unwrap_or(0),
                registered_at: f.registered_at,
                capabilities: f
                    .info
                    .capabilities()
                    .map(|c| {
                        c.as_str_name()
                            .trim_start_matches("CAPABILITY_")
                            .to_string()
                    })
                    .collect(),
                webui_url: f.info.webui_url.clone(),
            })
            .collect();
        frameworks.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let mut tasks: Vec<TaskView> = self.tasks.values().map(|t| task_view(self, t)).collect();
        tasks.sort_by(|a, b| {
            b.launched_at
                .total_cmp(&a.launched_at)
                .then(a.id.cmp(&b.id))
        });
        // Only active tasks are replicas; take them before completed ones join.
        let services = super::services::services(&tasks);
        if completed {
            tasks.extend(self.completed.iter().map(|t| task_view(self, t)));
        }
        ClusterState {
            protocol_version: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            leader,
            masters,
            agents,
            frameworks,
            tasks,
            roles: self.role_views(),
            started_at,
            services,
            sizes: self.sizes(),
            priority_classes: self.priority_class_views(),
            queue: self.queue_views(),
        }
    }
}

/// The queue and its classes, as `/api/state` shows them.
impl Cluster {
    /// The classes for `/api/state`, highest first.
    pub(super) fn priority_class_views(&self) -> Vec<PriorityClassView> {
        let cfg = &self.queue.config;
        cfg.sorted()
            .into_iter()
            .map(|c| PriorityClassView {
                name: c.name.clone(),
                value: c.value,
                preemptible: c.preemptible,
                preempts: c.preempts,
                default: c.name == cfg.default_class,
            })
            .collect()
    }

    /// The waiting demand for `/api/state`, in queue order.
    pub(super) fn queue_views(&self) -> Vec<QueueEntryView> {
        let attained = self.attained();
        self.queue_order()
            .into_iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let w = self.queue.waiting.get(&k)?;
                Some(QueueEntryView {
                    position: i as u32 + 1,
                    framework_id: k.0 .0.clone(),
                    framework_name: self
                        .frameworks
                        .get(&k.0)
                        .map(|f| f.info.name.clone())
                        .unwrap_or_default(),
                    demand_id: k.1.clone(),
                    priority: w.class.name.clone(),
                    priority_value: w.class.value,
                    tasks: w.need.tasks as u32,
                    resources: need_text(&w.need),
                    attained_gpu_seconds: attained.get(&k.0).copied().unwrap_or(0.0),
                    waiting_since: w.since_unix,
                    start_deadline: if w.demand.start_deadline_secs > 0.0 {
                        w.since_unix + w.demand.start_deadline_secs
                    } else {
                        0.0
                    },
                    why: w.why.clone(),
                })
            })
            .collect()
    }
}

/// What `/metrics` reports about the cluster, counted in one pass without
/// building the whole view: with 100,000 tasks the view took the state
/// machine's loop hundreds of milliseconds, and a scraper asking every few
/// seconds held back raft long enough for the followers to elect another
/// leader.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Active tasks by state.
    pub tasks_by_state: std::collections::BTreeMap<&'static str, u64>,
    /// Active tasks.
    pub tasks_active: usize,
    /// Agents known.
    pub agents: usize,
    /// Of them, connected.
    pub agents_connected: usize,
    /// Frameworks known.
    pub frameworks: usize,
    /// Of them, connected.
    pub frameworks_connected: usize,
    /// Every agent's resources, summed, as `Resources::quantities` counts
    /// them.
    pub total: std::collections::BTreeMap<String, f64>,
    /// What tasks hold of them, the same way.
    pub used: std::collections::BTreeMap<String, f64>,
    /// Each reported GPU's latest use, by agent id.
    pub gpu_usage: Vec<(String, mezz_proto::v1::GpuUsageView)>,
}

impl Cluster {
    /// The counts `/metrics` reports (see [`Gauges`]).
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges {
            tasks_active: self.tasks.len(),
            agents: self.agents.len(),
            frameworks: self.frameworks.len(),
            ..Default::default()
        };
        for t in self.tasks.values() {
            *g.tasks_by_state
                .entry(t.status.state().short_name())
                .or_default() += 1;
        }
        g.agents_connected = self.agents.values().filter(|a| a.conn.is_some()).count();
        g.frameworks_connected = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_some())
            .count();
        for a in self.agents.values() {
            for (sum, of) in [(&mut g.total, &a.total), (&mut g.used, &a.used)] {
                for (n, v) in of.quantities() {
                    *sum.entry(n).or_default() += v;
                }
            }
        }
        // Which task holds each reported GPU: only when some agent reported
        // its GPUs, and only over tasks that hold GPUs.
        if self.agents.values().any(|a| !a.gpu_usage.is_empty()) {
            let holders = self.gpu_holders();
            let mut agents: Vec<&super::Agent> = self
                .agents
                .values()
                .filter(|a| !a.gpu_usage.is_empty())
                .collect();
            agents.sort_by(|a, b| a.info.id.cmp(&b.info.id));
            for a in agents {
                for gpu in a.total.set_items(mezz_proto::resources::GPUS) {
                    let holder = holders.get(&(a.info.id.as_str(), gpu)).copied();
                    if let Some(v) = self.gpu_usage_view(a, gpu, holder) {
                        g.gpu_usage.push((a.info.id.clone(), v));
                    }
                }
            }
        }
        g
    }
}
