//! Read-only views of the state machine for the operator API, `/api/state`
//! and the status page.

use mezz_proto::v1::{AgentView, ClusterState, FrameworkView, MasterView, TaskView};
use mezz_proto::PROTOCOL_VERSION;

use super::{Cluster, Task};

fn task_view(c: &Cluster, t: &Task) -> TaskView {
    let agent = c.agents.get(&t.agent_id);
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
    TaskView {
        id: t.info.task_id.clone(),
        name: t.info.name.clone(),
        framework_id: t.framework_id.0.clone(),
        framework_name: t.framework_name.clone(),
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
    }
}

impl Cluster {
    /// The whole cluster as the operator sees it. `masters` and `leader`
    /// come from the replication layer.
    pub fn view(
        &self,
        completed: bool,
        masters: Vec<MasterView>,
        leader: String,
        started_at: f64,
    ) -> ClusterState {
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
                last_seen: 0.0,
            })
            .collect();
        agents.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
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
                active_tasks: self
                    .tasks
                    .values()
                    .filter(|t| t.framework_id == *id)
                    .count() as u32,
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
            })
            .collect();
        frameworks.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let mut tasks: Vec<TaskView> = self.tasks.values().map(|t| task_view(self, t)).collect();
        tasks.sort_by(|a, b| {
            b.launched_at
                .total_cmp(&a.launched_at)
                .then(a.id.cmp(&b.id))
        });
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
        }
    }
}
