//! Roles in the state machine: weights and quotas set by the operator go
//! through raft (`ReplicatedCommand::SetRole`) and reach the allocator when
//! they come back applied; the roles view reports usage against quota.

use std::collections::BTreeMap;

use mezz_proto::v1::{replicated_command::Command, ReplicatedCommand, RoleConfig, RoleView};
use mezz_proto::Resources;

use super::{CallError, Cluster, Effect};
use crate::allocator;

/// The largest weight a role may be given.
pub const MAX_WEIGHT: f64 = 1.0e6;

fn check_role(role: &str) -> Result<(), CallError> {
    if role == mezz_proto::resources::UNRESERVED_ROLE {
        return Ok(());
    }
    mezz_proto::resources::check_role(role).map_err(CallError::Invalid)
}

fn quota_resources(
    what: &str,
    role: &str,
    r: &[mezz_proto::v1::Resource],
) -> Result<Resources, CallError> {
    let res = Resources::from_proto(r)
        .map_err(|e| CallError::Invalid(format!("{what} of role '{role}': {e}")))?;
    if res.has_reservations() {
        return Err(CallError::Invalid(format!(
            "{what} of role '{role}' names reserved resources; give plain names (cpus, mem, disk, gpus)"
        )));
    }
    Ok(res)
}

/// The allocator's form of a replicated role configuration.
pub fn role_config(cfg: &RoleConfig) -> allocator::RoleConfig {
    allocator::RoleConfig {
        weight: if cfg.weight > 0.0 { cfg.weight } else { 1.0 },
        guarantee: Resources::from_proto(&cfg.guarantee).unwrap_or_default(),
        limit: Resources::from_proto(&cfg.limit).unwrap_or_default(),
    }
}

impl Cluster {
    pub(super) fn apply_role(&mut self, cfg: &RoleConfig) {
        self.allocator.set_role(&cfg.role, role_config(cfg));
        self.alloc_dirty = true;
    }

    fn propose_role(&mut self, cfg: RoleConfig) {
        self.effects.push(Effect::Propose(ReplicatedCommand {
            command: Some(Command::SetRole(cfg)),
        }));
    }

    fn current_role(&self, role: &str) -> RoleConfig {
        self.registry
            .roles
            .get(role)
            .cloned()
            .unwrap_or_else(|| RoleConfig {
                role: role.to_string(),
                weight: 1.0,
                ..Default::default()
            })
    }

    /// Sets a role's quota (guarantee and limit; both empty removes it).
    /// The change is proposed to raft and takes effect once applied.
    pub fn set_quota(
        &mut self,
        role: &str,
        guarantee: Vec<mezz_proto::v1::Resource>,
        limit: Vec<mezz_proto::v1::Resource>,
    ) -> Result<(), CallError> {
        check_role(role)?;
        let g = quota_resources("the guarantee", role, &guarantee)?;
        let l = quota_resources("the limit", role, &limit)?;
        let lq = l.quantities();
        for (name, v) in g.quantities() {
            if let Some(&max) = lq.get(&name) {
                if v > max {
                    return Err(CallError::Invalid(format!(
                        "role '{role}': the guarantee of {name} ({v}) is above its limit ({max})"
                    )));
                }
            }
        }
        let mut cfg = self.current_role(role);
        cfg.guarantee = g.to_proto();
        cfg.limit = l.to_proto();
        self.propose_role(cfg);
        Ok(())
    }

    /// Sets a role's DRF weight.
    pub fn set_weight(&mut self, role: &str, weight: f64) -> Result<(), CallError> {
        check_role(role)?;
        if !weight.is_finite() || weight <= 0.0 || weight > MAX_WEIGHT {
            return Err(CallError::Invalid(format!(
                "weight {weight} for role '{role}' must be a number above 0 and at most {MAX_WEIGHT}"
            )));
        }
        let mut cfg = self.current_role(role);
        cfg.weight = weight;
        self.propose_role(cfg);
        Ok(())
    }

    /// Every role that has frameworks, a configuration or a reservation:
    /// weight, quota, and what it holds.
    pub fn role_views(&self) -> Vec<RoleView> {
        let mut roles: BTreeMap<String, RoleView> = BTreeMap::new();
        fn get<'a>(roles: &'a mut BTreeMap<String, RoleView>, name: &str) -> &'a mut RoleView {
            roles.entry(name.to_string()).or_insert_with(|| RoleView {
                name: name.to_string(),
                weight: 1.0,
                ..Default::default()
            })
        }
        for (name, cfg) in &self.registry.roles {
            let r = get(&mut roles, name);
            r.weight = if cfg.weight > 0.0 { cfg.weight } else { 1.0 };
            if let Ok(g) = Resources::from_proto(&cfg.guarantee) {
                r.guarantee = g.quantities().into_iter().collect();
            }
            if let Ok(l) = Resources::from_proto(&cfg.limit) {
                r.limit = l.quantities().into_iter().collect();
            }
        }
        for f in self.frameworks.values() {
            let r = get(&mut roles, &f.info.role);
            r.frameworks += 1;
            for (k, v) in f.used.quantities() {
                *r.used.entry(k).or_default() += v;
            }
            for (k, v) in f.offered.quantities() {
                *r.offered.entry(k).or_default() += v;
            }
        }
        for a in self.agents.values() {
            for (role, res) in a.total.reservations() {
                let r = get(&mut roles, role);
                for (k, v) in res.quantities() {
                    *r.reserved.entry(k).or_default() += v;
                }
            }
        }
        roles.into_values().collect()
    }
}
