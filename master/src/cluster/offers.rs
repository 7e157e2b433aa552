//! Offers: turning the allocator's decisions into OFFERS events, and taking
//! offers back (timeout, agent gone, framework gone). Offers are the
//! leader's soft state and are never replicated.

use mezz_proto::v1::{event, AgentInfo, Event, Offer, Offers, Rescind};
use mezz_proto::{AgentId, FrameworkId, OfferId, Resources};

use super::{Cluster, Effect, Millis, OfferRecord};
use crate::allocator::{FrameworkState, Scope};

/// A full sweep also re-syncs one of this many slices of the agents that
/// did not change, so that all of them are re-synced every so many sweeps.
const RESYNC_SLICES: usize = 16;
/// Changed agents one allocation cycle takes at most: a cycle costs tens
/// of microseconds per agent, and a turn of the master's loop must stay
/// well under raft's election timeout.
const MAX_AGENTS_PER_CYCLE: usize = 2048;

/// The agent's `--gpu-reserve`, when it sent a usable one (anything but
/// cpus and mem is ignored; without it the default share applies).
pub(super) fn gpu_reserve(info: &AgentInfo) -> Option<Resources> {
    Resources::from_proto(&info.gpu_reserve)
        .ok()
        .filter(|r| mezz_proto::holdback::per_gpu(r).is_some())
}

/// What the agent keeps back for its idle GPUs now (cpus and mem), by the
/// same definition the allocator applies, for `/api/state`.
pub(super) fn held_for_gpus(a: &super::Agent) -> Resources {
    mezz_proto::holdback::held_back(&a.total, &a.available(), gpu_reserve(&a.info).as_ref())
}

impl Cluster {
    /// Whether an allocation cycle is due: resources changed somewhere, or
    /// a full sweep is wanted and the last one is at least one batch old.
    pub fn allocation_due(&self) -> bool {
        !self.dirty_agents.is_empty()
            || !self.dirty_frameworks.is_empty()
            || (self.alloc_dirty && self.sweep_allowed(self.now))
    }

    fn sweep_allowed(&self, now: Millis) -> bool {
        self.last_sweep
            .is_none_or(|t| now.saturating_sub(t) >= self.timeouts.allocation_batch)
    }

    /// Brings the allocator's mirror of one agent up to date.
    fn sync_agent(&mut self, id: &AgentId) {
        // An agent back from removal is not offered until what it ran
        // before is killed (see `Registry::removed_agents`).
        let usable =
            |a: &&super::Agent| a.conn.is_some() && !self.registry.removed_agents.contains(id);
        match self.agents.get(id).filter(usable) {
            Some(a) => {
                let mut available = a.available();
                // What the queue holds for waiting demand is not offered.
                self.queue.subtract_holds(id, &mut available);
                let reserve = gpu_reserve(&a.info);
                self.allocator.update_agent_with_reserve(
                    id,
                    &a.total,
                    &available,
                    reserve.as_ref(),
                );
            }
            None => self.allocator.remove_agent(id),
        }
    }

    /// Brings the allocator's mirror of one framework up to date.
    fn sync_framework(&mut self, id: &FrameworkId) {
        match self.frameworks.get(id) {
            Some(f) => {
                let mut allocated = f.used.clone();
                allocated.add(&f.offered);
                let state = FrameworkState {
                    role: f.info.role.clone(),
                    active: f.conn.is_some() && !f.suppressed,
                    gpu_capable: f
                        .info
                        .capabilities()
                        .any(|c| c == mezz_proto::v1::Capability::GpuResources),
                    allocated,
                };
                self.allocator.update_framework(id, &state);
            }
            None => self.allocator.remove_framework(id),
        }
    }

    /// Runs an allocation cycle and sends the offers it decides: over the
    /// agents whose resources changed since the last cycle, or over every
    /// agent when a full sweep is due (a framework subscribed or revived, a
    /// role changed, or the periodic sweep).
    pub fn allocate(&mut self, now: Millis) {
        self.now = now;
        self.serve_holds();
        // One cycle takes at most MAX_AGENTS_PER_CYCLE changed agents; the
        // rest wait for the next turn of the loop (within a tick). A sweep
        // (over every agent) waits until no more than that many changed
        // ones are left, since it must see all of them as they are.
        let backlog = self.dirty_agents.len() > MAX_AGENTS_PER_CYCLE;
        let full = self.alloc_dirty && self.sweep_allowed(now) && !backlog;
        // Every change to an agent marks it dirty, so a sweep re-syncs only
        // those, and a slice of the others as a safety net (all of them
        // every RESYNC_SLICES sweeps): re-syncing 10,000 agents each second
        // kept a busy leader's loop from turning for most of a second,
        // long enough for its followers to elect another.
        let mut agents: Vec<AgentId> = self
            .dirty_agents
            .iter()
            .take(MAX_AGENTS_PER_CYCLE)
            .cloned()
            .collect();
        if full && std::mem::take(&mut self.resync_all) {
            agents = self.agents.keys().cloned().collect();
        } else if full {
            let n = self.agents.len();
            let slice = n.div_ceil(RESYNC_SLICES).max(1);
            if self.resync_cursor >= n {
                self.resync_cursor = 0;
            }
            agents.extend(
                self.agents
                    .keys()
                    .skip(self.resync_cursor)
                    .take(slice)
                    .filter(|id| !self.dirty_agents.contains(*id))
                    .cloned(),
            );
            self.resync_cursor += slice;
        }
        let frameworks: Vec<FrameworkId> = if full {
            let mut ids: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
            ids.extend(self.dirty_frameworks.iter().cloned());
            ids
        } else {
            self.dirty_frameworks.iter().cloned().collect()
        };
        if backlog {
            for id in &agents {
                self.dirty_agents.remove(id);
            }
        } else {
            self.dirty_agents.clear();
        }
        self.dirty_frameworks.clear();
        for id in &agents {
            self.sync_agent(id);
        }
        for id in &frameworks {
            self.sync_framework(id);
        }
        if full {
            self.alloc_dirty = false;
            self.last_sweep = Some(now);
        }
        self.counters.allocation_runs += 1;
        let scope = if full {
            Scope::All
        } else {
            Scope::Agents(&agents)
        };
        let fws = &self.frameworks;
        let filtered = |f: &FrameworkId, a: &AgentId| {
            fws.get(f)
                .and_then(|f| f.filters.get(a))
                .is_some_and(|&until| until > now)
        };
        let decisions = self.allocator.allocate(scope, &filtered);
        let mut per_framework: std::collections::BTreeMap<FrameworkId, Vec<Offer>> =
            Default::default();
        for d in decisions {
            if let Some(offer) = self.record_offer(&d.framework, d.agent, d.resources) {
                per_framework.entry(d.framework).or_default().push(offer);
            }
        }
        for (fid, offers) in per_framework {
            self.send_offers(&fid, offers);
        }
    }

    /// Takes `resources` of `agent_id` out of circulation as a new offer
    /// to `framework`.
    fn record_offer(
        &mut self,
        framework: &FrameworkId,
        agent_id: AgentId,
        resources: Resources,
    ) -> Option<Offer> {
        let id = OfferId(self.next_id("o"));
        let agent = self.agents.get_mut(&agent_id)?;
        agent.offered.add(&resources);
        let offer = Offer {
            id: id.0.clone(),
            framework_id: framework.0.clone(),
            agent_id: agent_id.0.clone(),
            hostname: agent.info.hostname.clone(),
            agent_address: agent.info.address.clone(),
            resources: resources.to_proto(),
            attributes: agent.info.attributes.clone(),
        };
        if let Some(fw) = self.frameworks.get_mut(framework) {
            fw.offered.add(&resources);
        }
        self.dirty_agents.insert(agent_id.clone());
        self.offers.insert(
            id,
            OfferRecord {
                framework_id: framework.clone(),
                agent_id,
                resources,
                created: self.now,
            },
        );
        Some(offer)
    }

    fn send_offers(&mut self, fid: &FrameworkId, offers: Vec<Offer>) {
        self.counters.offers_sent += offers.len() as u64;
        if let Some(conn) = self.frameworks.get(fid).and_then(|f| f.conn) {
            self.effects.push(Effect::ToFramework(
                conn,
                Event {
                    event: Some(event::Event::Offers(Offers { offers })),
                },
            ));
        }
    }

    /// Offers `resources` of `agent_id` to `framework` now, outside the
    /// allocator (resources the queue held for it).
    pub(super) fn offer_to(
        &mut self,
        framework: &FrameworkId,
        agent_id: &AgentId,
        resources: Resources,
    ) {
        if let Some(offer) = self.record_offer(framework, agent_id.clone(), resources) {
            self.send_offers(framework, vec![offer]);
        }
    }

    /// Removes an offer and returns its resources to the agent's pool.
    pub(super) fn remove_offer(&mut self, id: &OfferId) -> Option<OfferRecord> {
        let o = self.offers.remove(id)?;
        if let Some(a) = self.agents.get_mut(&o.agent_id) {
            a.offered.subtract(&o.resources);
        }
        if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
            f.offered.subtract(&o.resources);
        }
        self.dirty_agents.insert(o.agent_id.clone());
        self.dirty_frameworks.insert(o.framework_id.clone());
        Some(o)
    }

    pub(super) fn rescind(&mut self, id: &OfferId) {
        let Some(o) = self.remove_offer(id) else {
            return;
        };
        self.counters.offers_rescinded += 1;
        if let Some(conn) = self.frameworks.get(&o.framework_id).and_then(|f| f.conn) {
            self.effects.push(Effect::ToFramework(
                conn,
                Event {
                    event: Some(event::Event::Rescind(Rescind {
                        offer_id: id.0.clone(),
                    })),
                },
            ));
        }
    }

    pub(super) fn rescind_agent_offers(&mut self, agent: &AgentId) {
        let ids: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| o.agent_id == *agent)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.rescind(&id);
        }
    }

    /// A framework that went away keeps no offers.
    pub(super) fn recover_framework_offers(&mut self, fw: &FrameworkId) {
        let ids: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| o.framework_id == *fw)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.remove_offer(&id);
        }
    }

    pub(super) fn expire_offers(&mut self) {
        let now = self.now;
        let timeout = self.timeouts.offer;
        let ids: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| now.saturating_sub(o.created) >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            tracing::debug!(offer_id = %id, "offer timed out; rescinding");
            self.rescind(&id);
        }
    }

    pub(super) fn expire_filters(&mut self) {
        let now = self.now;
        for fw in self.frameworks.values_mut() {
            // An expired filter makes its agent worth offering again.
            let dirty = &mut self.dirty_agents;
            fw.filters.retain(|agent, until| {
                let keep = *until > now;
                if !keep {
                    dirty.insert(agent.clone());
                }
                keep
            });
        }
    }
}
