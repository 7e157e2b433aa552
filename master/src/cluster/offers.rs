//! Offers: turning the allocator's decisions into OFFERS events, and taking
//! offers back (timeout, agent gone, framework gone). Offers are the
//! leader's soft state and are never replicated.

use std::collections::BTreeSet;

use mezz_proto::v1::{event, Event, Offer, Offers, Rescind};
use mezz_proto::{AgentId, FrameworkId, OfferId, Resources};

use super::{Cluster, Effect, Millis, OfferRecord};
use crate::allocator::{self, AgentSlot, FrameworkSlot};

impl Cluster {
    /// Whether an allocation cycle is due (something changed).
    pub fn allocation_due(&self) -> bool {
        self.alloc_dirty
    }

    /// Runs an allocation cycle and sends the offers it decides.
    pub fn allocate(&mut self, now: Millis) {
        self.now = now;
        self.alloc_dirty = false;
        self.counters.allocation_runs += 1;
        let mut total = Resources::new();
        let mut agents = Vec::new();
        for (id, a) in &self.agents {
            if a.conn.is_none() {
                continue;
            }
            total.add(&a.total);
            agents.push(AgentSlot {
                id: id.clone(),
                available: a.available(),
            });
        }
        let frameworks: Vec<FrameworkSlot> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.conn.is_some() && !f.suppressed)
            .map(|(id, f)| FrameworkSlot {
                id: id.clone(),
                role: f.info.role.clone(),
                allocated: {
                    let mut r = f.used.clone();
                    r.add(&f.offered);
                    r
                },
                filtered: f
                    .filters
                    .iter()
                    .filter(|(_, &until)| until > now)
                    .map(|(a, _)| a.clone())
                    .collect::<BTreeSet<AgentId>>(),
                gpu_capable: f
                    .info
                    .capabilities()
                    .any(|c| c == mezz_proto::v1::Capability::GpuResources),
            })
            .collect();
        let decisions = allocator::allocate(&agents, &frameworks, &total);
        let mut per_framework: std::collections::BTreeMap<FrameworkId, Vec<Offer>> =
            Default::default();
        for d in decisions {
            let id = OfferId(self.next_id("o"));
            let Some(agent) = self.agents.get_mut(&d.agent) else {
                continue;
            };
            agent.offered.add(&d.resources);
            let offer = Offer {
                id: id.0.clone(),
                framework_id: d.framework.0.clone(),
                agent_id: d.agent.0.clone(),
                hostname: agent.info.hostname.clone(),
                agent_address: agent.info.address.clone(),
                resources: d.resources.to_proto(),
                attributes: agent.info.attributes.clone(),
            };
            if let Some(fw) = self.frameworks.get_mut(&d.framework) {
                fw.offered.add(&d.resources);
            }
            self.offers.insert(
                id,
                OfferRecord {
                    framework_id: d.framework.clone(),
                    agent_id: d.agent,
                    resources: d.resources,
                    created: now,
                },
            );
            per_framework.entry(d.framework).or_default().push(offer);
        }
        for (fid, offers) in per_framework {
            self.counters.offers_sent += offers.len() as u64;
            if let Some(conn) = self.frameworks.get(&fid).and_then(|f| f.conn) {
                self.effects.push(Effect::ToFramework(
                    conn,
                    Event {
                        event: Some(event::Event::Offers(Offers { offers })),
                    },
                ));
            }
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
        self.alloc_dirty = true;
        Some(o)
    }

    fn rescind(&mut self, id: &OfferId) {
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
            let before = fw.filters.len();
            fw.filters.retain(|_, until| *until > now);
            if fw.filters.len() != before {
                self.alloc_dirty = true;
            }
        }
    }
}
