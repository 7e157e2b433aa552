//! The replicated part of the master's state: what cannot be rebuilt from
//! agents (the agent registry, framework registrations, role weights and
//! quotas). It changes only
//! by applying committed raft commands, in log order, on every master.

use std::collections::{BTreeMap, BTreeSet};

use mezz_proto::v1::{
    replicated_command::Command, AgentInfo, FrameworkInfo, ReplicatedCommand, ReplicatedSnapshot,
    RoleConfig,
};
use mezz_proto::{AgentId, FrameworkId};

/// Agents and frameworks known to the raft group.
#[derive(Debug, Default, Clone, PartialEq)]
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
            None => tracing::warn!("ignoring an empty replicated command"),
        }
    }

    /// How many records the registry holds (what a snapshot encodes).
    pub fn records(&self) -> u64 {
        (self.agents.len()
            + self.removed_agents.len()
            + self.frameworks.len()
            + self.removed_frameworks.len()
            + self.roles.len()) as u64
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
        }
    }

    /// A registry restored from a snapshot.
    pub fn from_snapshot(s: &ReplicatedSnapshot) -> Self {
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
        assert_eq!(Registry::from_snapshot(&r.to_snapshot()), r);
    }
}
