//! The replicated part of the master's state: what cannot be rebuilt from
//! agents (the agent registry and the hashes of agents' secrets, framework
//! registrations, role weights and quotas, the history of finished
//! tasks, the sizes menu and the jobs of `mezz job`). It changes only by applying committed raft commands, in log
//! order, on every master.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mezz_proto::v1::{
    replicated_command::Command, AgentCredential, AgentInfo, FinishedTask, FrameworkInfo,
    ReplicatedCommand, ReplicatedSnapshot, RoleConfig, TokenRecord,
};
use mezz_proto::{AgentId, FrameworkId};

/// How many finished tasks the registry keeps unless told otherwise.
pub const DEFAULT_FINISHED_KEPT: usize = 1000;

/// Agents and frameworks known to the raft group.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    /// Registered agents by id.
    pub agents: BTreeMap<AgentId, AgentInfo>,
    /// Agents removed after being unreachable too long. One that comes
    /// back is registered again but stays listed here until the leader has
    /// killed what it ran before its removal (whose tasks were declared
    /// LOST), so that a leader elected in between kills them too.
    pub removed_agents: BTreeSet<AgentId>,
    /// Registered frameworks by id.
    pub frameworks: BTreeMap<FrameworkId, FrameworkInfo>,
    /// Frameworks torn down or expired; they may not come back.
    pub removed_frameworks: BTreeSet<FrameworkId>,
    /// Role weights and quotas by role name.
    pub roles: BTreeMap<String, RoleConfig>,
    /// The salted hash of the first secret each agent id presented (trust
    /// on first use). Kept when the agent is removed, so that nobody else
    /// can take its id while it is away.
    pub agent_credentials: BTreeMap<AgentId, AgentCredential>,
    /// The most recently finished tasks, newest first, at most
    /// `finished_kept` of them.
    pub finished: VecDeque<FinishedTask>,
    /// The bound on `finished` (a master flag, not replicated: masters
    /// started with different bounds keep different amounts of history).
    pub finished_kept: usize,
    /// Bearer tokens by id, as salted hashes; revoked ones are kept so
    /// their use is refused as revoked.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// The ACLs as canonical JSON; empty: ACLs are off.
    pub acls: String,
    /// The menu of named sizes.
    pub sizes: crate::size_menu::SizeMenu,
    /// The jobs of `mezz job`, bounded by this master's `--jobs-kept`.
    pub jobs: crate::job_store::JobStore,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            agents: BTreeMap::new(),
            removed_agents: BTreeSet::new(),
            frameworks: BTreeMap::new(),
            removed_frameworks: BTreeSet::new(),
            roles: BTreeMap::new(),
            agent_credentials: BTreeMap::new(),
            finished: VecDeque::new(),
            finished_kept: DEFAULT_FINISHED_KEPT,
            tokens: BTreeMap::new(),
            acls: String::new(),
            sizes: Default::default(),
            jobs: Default::default(),
        }
    }
}

impl Registry {
    /// Applies one committed command. Applying the same log to two empty
    /// registries gives equal registries.
    pub fn apply(&mut self, cmd: &ReplicatedCommand) {
        match &cmd.command {
            Some(Command::RegisterAgent(info)) => {
                self.agents.insert(AgentId(info.id.clone()), info.clone());
            }
            Some(Command::AgentReturned(id)) => {
                self.removed_agents.remove(&AgentId(id.clone()));
            }
            Some(Command::RemoveAgent(id)) => {
                let id = AgentId(id.clone());
                self.agents.remove(&id);
                self.removed_agents.insert(id);
            }
            Some(Command::RegisterFramework(info)) => {
                self.frameworks
                    .insert(FrameworkId(info.id.clone()), info.clone());
            }
            Some(Command::RemoveFramework(id)) => {
                let id = FrameworkId(id.clone());
                self.frameworks.remove(&id);
                self.removed_frameworks.insert(id);
            }
            Some(Command::SetRole(cfg)) => {
                self.roles.insert(cfg.role.clone(), cfg.clone());
            }
            Some(Command::PinAgentSecret(cred)) => {
                // The first pin wins: two registrations racing for an id
                // that has none both propose one, and only the first
                // applied counts, on every master alike.
                self.agent_credentials
                    .entry(AgentId(cred.agent_id.clone()))
                    .or_insert_with(|| cred.clone());
            }
            Some(Command::TasksFinished(batch)) => {
                for t in &batch.tasks {
                    self.finished.push_front(t.clone());
                }
                self.finished.truncate(self.finished_kept);
            }
            Some(Command::AddToken(t)) => {
                // A bootstrap token counts only while the group holds no
                // token at all: several masters may each propose one, and
                // the first applied wins on every master alike. An id is
                // never reused.
                if !t.bootstrap || self.tokens.is_empty() {
                    self.tokens.entry(t.id.clone()).or_insert_with(|| t.clone());
                }
            }
            Some(Command::RevokeTokens(r)) => {
                for id in &r.ids {
                    if let Some(t) = self.tokens.get_mut(id) {
                        if t.revoked_at == 0.0 {
                            t.revoked_at = r.at;
                        }
                    }
                }
            }
            Some(Command::SetAcls(doc)) => {
                if !doc.seed || self.acls.is_empty() {
                    self.acls = doc.json.clone();
                }
            }
            Some(c @ (Command::SetSize(_) | Command::RemoveSize(_))) => self.sizes.apply(c),
            Some(
                c @ (Command::JobsSubmitted(_)
                | Command::JobUpdated(_)
                | Command::JobControl(_)
                | Command::JobFired(_)),
            ) => self.jobs.apply(c),
            None => tracing::warn!("ignoring an empty replicated command"),
        }
    }

    /// How many records the registry holds (what a snapshot encodes).
    pub fn records(&self) -> u64 {
        (self.agents.len()
            + self.removed_agents.len()
            + self.frameworks.len()
            + self.removed_frameworks.len()
            + self.roles.len()
            + self.agent_credentials.len()
            + self.finished.len()
            + self.tokens.len()
            + self.sizes.len()
            + self.jobs.len()) as u64
    }

    /// The registry as a snapshot.
    pub fn to_snapshot(&self) -> ReplicatedSnapshot {
        ReplicatedSnapshot {
            agents: self.agents.values().cloned().collect(),
            removed_agents: self.removed_agents.iter().map(|a| a.0.clone()).collect(),
            frameworks: self.frameworks.values().cloned().collect(),
            removed_frameworks: self
                .removed_frameworks
                .iter()
                .map(|f| f.0.clone())
                .collect(),
            roles: self.roles.values().cloned().collect(),
            agent_credentials: self.agent_credentials.values().cloned().collect(),
            finished_tasks: self.finished.iter().cloned().collect(),
            tokens: self.tokens.values().cloned().collect(),
            acls: (!self.acls.is_empty()).then(|| mezz_proto::v1::AclDocument {
                json: self.acls.clone(),
                seed: false,
            }),
            sizes: self.sizes.to_snapshot().0,
            sizes_custom: self.sizes.to_snapshot().1,
            jobs: self.jobs.to_snapshot(),
        }
    }

    /// A registry restored from a snapshot, keeping at most
    /// [`DEFAULT_FINISHED_KEPT`] finished tasks and
    /// [`DEFAULT_JOBS_KEPT`](crate::job_store::DEFAULT_JOBS_KEPT) ended jobs
    /// (see [`Registry::from_snapshot_keeping`]).
    pub fn from_snapshot(s: &ReplicatedSnapshot) -> Self {
        Self::from_snapshot_keeping(s, DEFAULT_FINISHED_KEPT)
    }

    /// A registry restored from a snapshot that keeps at most
    /// `finished_kept` finished tasks. Snapshots written before secrets
    /// and history were replicated have neither: such agents pin the first
    /// secret they present.
    pub fn from_snapshot_keeping(s: &ReplicatedSnapshot, finished_kept: usize) -> Self {
        Registry {
            agents: s
                .agents
                .iter()
                .map(|a| (AgentId(a.id.clone()), a.clone()))
                .collect(),
            removed_agents: s.removed_agents.iter().cloned().map(AgentId).collect(),
            frameworks: s
                .frameworks
                .iter()
                .map(|f| (FrameworkId(f.id.clone()), f.clone()))
                .collect(),
            removed_frameworks: s
                .removed_frameworks
                .iter()
                .cloned()
                .map(FrameworkId)
                .collect(),
            roles: s
                .roles
                .iter()
                .map(|r| (r.role.clone(), r.clone()))
                .collect(),
            agent_credentials: s
                .agent_credentials
                .iter()
                .map(|c| (AgentId(c.agent_id.clone()), c.clone()))
                .collect(),
            finished: s
                .finished_tasks
                .iter()
                .take(finished_kept)
                .cloned()
                .collect(),
            finished_kept,
            tokens: s.tokens.iter().map(|t| (t.id.clone(), t.clone())).collect(),
            acls: s.acls.as_ref().map(|a| a.json.clone()).unwrap_or_default(),
            sizes: crate::size_menu::SizeMenu::from_snapshot(&s.sizes, s.sizes_custom),
            jobs: crate::job_store::JobStore::from_snapshot(
                &s.jobs,
                crate::job_store::DEFAULT_JOBS_KEPT,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_and_snapshot_roundtrip() {
        let mut r = Registry::default();
        r.apply(&ReplicatedCommand {
            command: Some(Command::RegisterAgent(AgentInfo {
                id: "a1".into(),
                hostname: "h".into(),
                ..Default::default()
            })),
        });
        r.apply(&ReplicatedCommand {
            command: Some(Command::RegisterFramework(FrameworkInfo {
                id: "f1".into(),
                name: "x".into(),
                ..Default::default()
            })),
        });
        r.apply(&ReplicatedCommand {
            command: Some(Command::RemoveFramework("f1".into())),
        });
        r.apply(&ReplicatedCommand {
            command: Some(Command::SetRole(RoleConfig {
                role: "eng/ml".into(),
                weight: 2.0,
                ..Default::default()
            })),
        });
        assert_eq!(r.roles["eng/ml"].weight, 2.0);
        assert_eq!(r.agents.len(), 1);
        assert!(r.frameworks.is_empty());
        assert!(r.removed_frameworks.contains(&FrameworkId::from("f1")));
        let pin = |hash: &[u8]| ReplicatedCommand {
            command: Some(Command::PinAgentSecret(AgentCredential {
                agent_id: "a1".into(),
                salt: b"s".to_vec(),
                hash: hash.to_vec(),
            })),
        };
        r.apply(&pin(b"first"));
        r.apply(&pin(b"second"));
        r.apply(&ReplicatedCommand {
            command: Some(Command::RemoveAgent("a1".into())),
        });
        assert_eq!(
            r.agent_credentials[&AgentId::from("a1")].hash,
            b"first",
            "the first pin wins and outlives the agent's removal"
        );
        r.finished_kept = 2;
        for batch in [vec!["t1", "t2"], vec!["t3"]] {
            r.apply(&ReplicatedCommand {
                command: Some(Command::TasksFinished(mezz_proto::v1::FinishedTasks {
                    tasks: batch
                        .into_iter()
                        .map(|id| FinishedTask {
                            record_id: id.into(),
                            ..Default::default()
                        })
                        .collect(),
                })),
            });
        }
        let token = |id: &str, bootstrap: bool| ReplicatedCommand {
            command: Some(Command::AddToken(TokenRecord {
                id: id.into(),
                principal: "p".into(),
                bootstrap,
                ..Default::default()
            })),
        };
        r.apply(&token("boot1", true));
        r.apply(&token("boot2", true));
        r.apply(&token("t1", false));
        r.apply(&ReplicatedCommand {
            command: Some(Command::RevokeTokens(mezz_proto::v1::RevokeTokens {
                ids: vec!["t1".into(), "nope".into()],
                at: 7.0,
            })),
        });
        let ids: Vec<&str> = r.tokens.keys().map(String::as_str).collect();
        assert_eq!(ids, ["boot1", "t1"], "the first bootstrap wins");
        assert_eq!(r.tokens["t1"].revoked_at, 7.0);
        let acls = |json: &str, seed: bool| ReplicatedCommand {
            command: Some(Command::SetAcls(mezz_proto::v1::AclDocument {
                json: json.into(),
                seed,
            })),
        };
        r.apply(&acls("{\"a\":1}", true));
        r.apply(&acls("{\"b\":1}", true));
        assert_eq!(r.acls, "{\"a\":1}", "a seed applies only to none");
        r.apply(&acls("{}", false));
        assert_eq!(r.acls, "{}");
        let ids: Vec<&str> = r.finished.iter().map(|t| t.record_id.as_str()).collect();
        assert_eq!(ids, ["t3", "t2"], "newest first, bounded");
        assert_eq!(Registry::from_snapshot_keeping(&r.to_snapshot(), 2), r);
    }

    #[test]
    fn job_commands_apply_alike_and_survive_a_snapshot() {
        use mezz_proto::v1::{JobControl, JobFire, JobRecord, JobUpdate, JobsSubmitted};
        let cmd = |c: Command| ReplicatedCommand { command: Some(c) };
        let job = |name: &str, state: &str, at: f64| JobRecord {
            name: name.into(),
            state: state.into(),
            spec_json: "{}".into(),
            kind: "command".into(),
            submitted_at: at,
            version: 1,
            runs: 1,
            ..Default::default()
        };
        let update = |name: &str, state: &str, expected_version: u64, at: f64| {
            cmd(Command::JobUpdated(JobUpdate {
                job: Some(JobRecord {
                    name: name.into(),
                    state: state.into(),
                    ..Default::default()
                }),
                expected_version,
                at,
            }))
        };
        let log = vec![
            cmd(Command::JobsSubmitted(JobsSubmitted {
                jobs: vec![job("b", "PENDING", 1.0), job("a", "PENDING", 1.0)],
                at: 1.0,
            })),
            // A second submit of a job that has not ended changes nothing.
            cmd(Command::JobsSubmitted(JobsSubmitted {
                jobs: vec![job("a", "PENDING", 2.0)],
                at: 2.0,
            })),
            update("a", "RUNNING", 1, 3.0),
            // Read at version 1 too: stale once the first applied.
            update("a", "FAILED", 1, 4.0),
            update("a", "SUCCEEDED", 2, 5.0),
            cmd(Command::JobControl(JobControl {
                name: "b".into(),
                action: "kill".into(),
                principal: "p".into(),
                at: 6.0,
            })),
            cmd(Command::JobsSubmitted(JobsSubmitted {
                jobs: vec![JobRecord {
                    schedule: "@hourly".into(),
                    ..job("s", "SCHEDULED", 7.0)
                }],
                at: 7.0,
            })),
            cmd(Command::JobFired(JobFire {
                name: "s".into(),
                fire_at: 3600.0,
                run: Some(JobRecord {
                    parent: "s".into(),
                    ..job("s.3600", "PENDING", 8.0)
                }),
                replace: vec![],
                at: 8.0,
            })),
            // The same fire again (a retry) makes no second run.
            cmd(Command::JobFired(JobFire {
                name: "s".into(),
                fire_at: 3600.0,
                run: None,
                replace: vec![],
                at: 9.0,
            })),
        ];
        let (mut r1, mut r2) = (Registry::default(), Registry::default());
        for c in &log {
            r1.apply(c);
            r2.apply(c);
        }
        assert_eq!(r1, r2);
        let a = r1.jobs.get("a").expect("a");
        assert_eq!((a.state.as_str(), a.version), ("SUCCEEDED", 3));
        assert_eq!((a.submitted_at, a.finished_at), (1.0, 5.0));
        let b = r1.jobs.get("b").expect("b");
        assert_eq!(
            (b.state.as_str(), b.reason.as_str()),
            ("KILLED", "killed by p")
        );
        let s = r1.jobs.get("s").expect("s");
        assert_eq!((s.last_fired_at, s.version), (3600.0, 2));
        let snap = r1.to_snapshot();
        let names: Vec<&str> = snap.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "s", "s.3600"], "by name");
        assert_eq!(Registry::from_snapshot(&snap), r1);
        assert_eq!(r1.records() - Registry::default().records(), 4);
    }

    #[test]
    fn a_snapshot_from_before_secrets_and_history_still_loads() {
        use prost::Message as _;
        // Fields 1-5 only, as the previous release wrote them.
        let old = ReplicatedSnapshot {
            agents: vec![AgentInfo {
                id: "a1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let r = Registry::from_snapshot(&ReplicatedSnapshot::decode(old.as_slice()).unwrap());
        assert_eq!(r.agents.len(), 1);
        assert!(r.agent_credentials.is_empty());
        assert!(r.finished.is_empty());
    }
}
