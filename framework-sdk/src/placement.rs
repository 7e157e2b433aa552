//! Placement helpers: which offer each task request goes to (first-fit,
//! bin-pack or spread), with ports picked from the offered ranges and GPUs
//! from the agent's GPU identities. Pure: offers and requests in, a [`Plan`]
//! out. Whether something fits is [`Resources::contains`], the master's own
//! check; it is never rewritten here.

use std::collections::BTreeMap;

use crate::proto;
use crate::{AgentId, Driver, OfferId, Resources, TaskBuilder};

/// The range resource ports are picked from.
pub const PORTS: &str = "ports";
/// The set resource that holds an agent's GPU identities.
pub const GPUS: &str = "gpus";

/// What one task needs: fixed resources, plus a number of ports and GPUs
/// that placement picks from the offer.
///
/// ```
/// use mezz_sdk::{Resources, TaskRequest};
/// let web = TaskRequest::new("web-1", Resources::parse("cpus:0.5;mem:256").unwrap()).ports(2);
/// let train = TaskRequest::new("train-1", Resources::parse("cpus:4;mem:8192").unwrap()).gpus(1);
/// assert_eq!((web.ports, train.gpus), (2, 1));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskRequest {
    /// The caller's name for the request (e.g. the task id to be).
    pub key: String,
    /// Fixed resources: scalars, and any exact ports or GPUs wanted.
    pub resources: Resources,
    /// How many ports to pick from the offer's [`PORTS`] ranges.
    pub ports: usize,
    /// How many GPUs to pick from the offer's [`GPUS`] identities.
    pub gpus: usize,
}

impl TaskRequest {
    /// A request for `resources`, with no ports or GPUs to pick.
    pub fn new(key: impl Into<String>, resources: Resources) -> Self {
        TaskRequest {
            key: key.into(),
            resources,
            ports: 0,
            gpus: 0,
        }
    }

    /// Asks for `n` ports, whichever the offer has.
    pub fn ports(mut self, n: usize) -> Self {
        self.ports = n;
        self
    }

    /// Asks for `n` GPUs, whichever the offer's agent has.
    pub fn gpus(mut self, n: usize) -> Self {
        self.gpus = n;
        self
    }
}

/// How to choose among the offers a task fits in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// The first offer, in the order given, where the task fits.
    #[default]
    FirstFit,
    /// The offer left fullest by the task (smallest dominant share left):
    /// packs tasks tightly and keeps whole agents free for big ones.
    BinPack,
    /// The agent with the fewest tasks of this plan so far, then the one
    /// left emptiest: spreads tasks for fault tolerance.
    Spread,
}

/// One task request placed on one offer.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// Index of the request in the slice given to [`place`].
    pub request: usize,
    /// The request's key.
    pub key: String,
    /// The offer it goes to.
    pub offer_id: OfferId,
    /// That offer's agent.
    pub agent_id: AgentId,
    /// What the task takes, exactly: the request's resources plus the
    /// ports and GPUs picked for it.
    pub resources: Resources,
    /// The ports picked, in order.
    pub ports: Vec<u64>,
    /// The GPU identities picked.
    pub gpus: Vec<String>,
}

impl Placement {
    /// The task for this placement: `builder` with the placement's
    /// resources and agent, and the picked ports in its environment as
    /// `PORT0`, `PORT1`, … and `PORTS` (comma-separated).
    ///
    /// ```
    /// use mezz_sdk::{place, proto, Resources, Strategy, TaskBuilder, TaskRequest};
    /// let offer = proto::Offer {
    ///     id: "o1".into(),
    ///     agent_id: "a1".into(),
    ///     resources: Resources::parse("cpus:1;mem:512;ports:[31000-31009]").unwrap().to_proto(),
    ///     ..Default::default()
    /// };
    /// let web = TaskRequest::new("web", Resources::parse("cpus:0.5;mem:128").unwrap()).ports(2);
    /// let plan = place(Strategy::FirstFit, &[offer], &[web]);
    /// let task = plan.placed[0].task(TaskBuilder::shell("web", "serve --port $PORT0"));
    /// assert_eq!(task.agent_id, "a1");
    /// assert_eq!(task.command.unwrap().environment["PORTS"], "31000,31001");
    /// ```
    pub fn task(&self, builder: TaskBuilder) -> proto::TaskInfo {
        let mut builder = builder.resources(&self.resources);
        for (i, port) in self.ports.iter().enumerate() {
            builder = builder.env(format!("PORT{i}"), port.to_string());
        }
        if !self.ports.is_empty() {
            let all: Vec<String> = self.ports.iter().map(u64::to_string).collect();
            builder = builder.env("PORTS", all.join(","));
        }
        builder.build_on(&self.agent_id)
    }
}

/// Where each request went, and which did not fit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The placed requests, in request order.
    pub placed: Vec<Placement>,
    /// Indices of the requests that fit nowhere.
    pub unplaced: Vec<usize>,
    /// Every offer considered, in the order given.
    pub offers: Vec<OfferId>,
}

impl Plan {
    /// True when every request was placed.
    pub fn is_complete(&self) -> bool {
        self.unplaced.is_empty()
    }

    /// The offers that received at least one task, in offer order.
    pub fn used_offers(&self) -> Vec<OfferId> {
        self.offers
            .iter()
            .filter(|o| self.placed.iter().any(|p| &p.offer_id == *o))
            .cloned()
            .collect()
    }

    /// The offers that received nothing, in offer order.
    pub fn unused_offers(&self) -> Vec<OfferId> {
        self.offers
            .iter()
            .filter(|o| !self.placed.iter().any(|p| &p.offer_id == *o))
            .cloned()
            .collect()
    }

    /// Launches every placed task, one launch per offer, building each with
    /// `build` (see [`Placement::task`]). Unused offers are left to the
    /// caller (decline them, or keep them for later).
    pub fn launch(&self, driver: &Driver, mut build: impl FnMut(&Placement) -> TaskBuilder) {
        let mut per_offer: BTreeMap<usize, Vec<proto::TaskInfo>> = BTreeMap::new();
        for p in &self.placed {
            let index = self
                .offers
                .iter()
                .position(|o| *o == p.offer_id)
                .unwrap_or(usize::MAX);
            per_offer.entry(index).or_default().push(p.task(build(p)));
        }
        for (index, tasks) in per_offer {
            if let Some(offer) = self.offers.get(index) {
                driver.launch([offer.clone()], tasks);
            }
        }
    }
}

/// An offer being filled: what is left of it and how many tasks it got.
struct Slot {
    offer_id: OfferId,
    agent_id: AgentId,
    left: Resources,
}

/// What a request takes from an offer: exact resources, ports, GPUs.
type Claim = (Resources, Vec<u64>, Vec<String>);

/// The exact resources `request` would take from `left`, with the ports
/// and GPUs picked; `None` when it does not fit.
fn claim(request: &TaskRequest, left: &Resources) -> Option<Claim> {
    let rest = left.checked_sub(&request.resources)?;
    let mut ports = Vec::with_capacity(request.ports);
    for &(begin, end) in rest.ranges(PORTS) {
        let mut port = begin;
        while ports.len() < request.ports && port <= end {
            ports.push(port);
            port += 1;
        }
    }
    let gpus: Vec<String> = rest
        .set_items(GPUS)
        .into_iter()
        .take(request.gpus)
        .map(String::from)
        .collect();
    if ports.len() < request.ports || gpus.len() < request.gpus {
        return None;
    }
    let pairs: Vec<(u64, u64)> = ports.iter().map(|&p| (p, p)).collect();
    let mut exact = request.resources.clone().with_ranges(PORTS, &pairs);
    if !gpus.is_empty() {
        exact = exact.with_set(GPUS, gpus.iter().cloned());
    }
    // The one definition of "fits" has the last word.
    left.contains(&exact).then_some((exact, ports, gpus))
}

/// Places `requests`, in order, on `offers` by `strategy`. Each request goes
/// whole to one offer or is listed in [`Plan::unplaced`]; what a request
/// takes is gone for the next. Offers whose resources cannot be read are
/// treated as empty.
///
/// ```
/// use mezz_sdk::{place, proto, Resources, Strategy, TaskRequest};
/// let offer = |id: &str, cpus: f64| proto::Offer {
///     id: id.into(),
///     agent_id: format!("agent-{id}"),
///     resources: Resources::new().with_scalar("cpus", cpus).with_scalar("mem", 1024.0).to_proto(),
///     ..Default::default()
/// };
/// let offers = [offer("a", 4.0), offer("b", 2.0)];
/// let one_cpu = Resources::parse("cpus:1;mem:128").unwrap();
/// let requests: Vec<_> = (0..3).map(|i| TaskRequest::new(format!("t{i}"), one_cpu.clone())).collect();
///
/// let packed = place(Strategy::BinPack, &offers, &requests);
/// assert!(packed.placed.iter().all(|p| p.offer_id.as_str() == "b" || p.key == "t2"));
/// let spread = place(Strategy::Spread, &offers, &requests);
/// let on_b = spread.placed.iter().filter(|p| p.offer_id.as_str() == "b").count();
/// assert_eq!(on_b, 1);
/// let too_big = TaskRequest::new("big", Resources::parse("cpus:8").unwrap());
/// assert_eq!(place(Strategy::FirstFit, &offers, &[too_big]).unplaced, vec![0]);
/// ```
pub fn place(strategy: Strategy, offers: &[proto::Offer], requests: &[TaskRequest]) -> Plan {
    let mut slots: Vec<Slot> = offers
        .iter()
        .map(|o| Slot {
            offer_id: OfferId(o.id.clone()),
            agent_id: AgentId(o.agent_id.clone()),
            left: Resources::from_proto(&o.resources).unwrap_or_default(),
        })
        .collect();
    let mut total = Resources::new();
    for slot in &slots {
        total.add(&slot.left);
    }
    let mut plan = Plan {
        offers: slots.iter().map(|s| s.offer_id.clone()).collect(),
        ..Plan::default()
    };
    let mut per_agent: BTreeMap<AgentId, usize> = BTreeMap::new();
    for (index, request) in requests.iter().enumerate() {
        let candidates = slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| claim(request, &slot.left).map(|claimed| (i, claimed)));
        let score = |i: usize, exact: &Resources| -> (usize, f64) {
            let slot = &slots[i];
            let mut after = slot.left.clone();
            after.subtract(exact);
            let share = after.dominant_share(&total);
            let tasks = per_agent.get(&slot.agent_id).copied().unwrap_or(0);
            match strategy {
                Strategy::FirstFit => (0, 0.0),
                Strategy::BinPack => (0, share),
                Strategy::Spread => (tasks, -share),
            }
        };
        // The lowest score wins; ties go to the earlier offer.
        let mut best: Option<(usize, Claim, (usize, f64))> = None;
        for (i, claimed) in candidates {
            let s = score(i, &claimed.0);
            let better = match &best {
                None => true,
                Some((_, _, b)) => s < *b,
            };
            if better {
                let first_fit = strategy == Strategy::FirstFit;
                best = Some((i, claimed, s));
                if first_fit {
                    break;
                }
            }
        }
        let Some((i, (exact, ports, gpus), _)) = best else {
            plan.unplaced.push(index);
            continue;
        };
        let slot = &mut slots[i];
        slot.left.subtract(&exact);
        *per_agent.entry(slot.agent_id.clone()).or_default() += 1;
        plan.placed.push(Placement {
            request: index,
            key: request.key.clone(),
            offer_id: slot.offer_id.clone(),
            agent_id: slot.agent_id.clone(),
            resources: exact,
            ports,
            gpus,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, agent: &str, resources: &str) -> proto::Offer {
        proto::Offer {
            id: id.into(),
            agent_id: agent.into(),
            resources: Resources::parse(resources)
                .expect("valid resources")
                .to_proto(),
            ..Default::default()
        }
    }

    #[test]
    fn ports_and_gpus_are_picked_and_not_reused() {
        let offers = [offer(
            "o1",
            "a1",
            "cpus:4;ports:[100-101,200-200];gpus:{g0,g1,g2}",
        )];
        let req = TaskRequest::new("t", Resources::parse("cpus:1").expect("valid"))
            .ports(2)
            .gpus(2);
        let plan = place(Strategy::FirstFit, &offers, &[req.clone(), req]);
        assert_eq!(plan.placed.len(), 1);
        assert_eq!(plan.unplaced, vec![1]);
        let p = &plan.placed[0];
        assert_eq!(p.ports, vec![100, 101]);
        assert_eq!(p.gpus, vec!["g0", "g1"]);
        assert_eq!(p.resources.ranges(PORTS), &[(100, 101)]);
        assert_eq!(p.resources.set_items(GPUS), vec!["g0", "g1"]);
    }

    #[test]
    fn explicit_ports_are_not_picked_twice() {
        let offers = [offer("o1", "a1", "cpus:4;ports:[100-102]")];
        let req =
            TaskRequest::new("t", Resources::new().with_ranges(PORTS, &[(100, 100)])).ports(2);
        let plan = place(Strategy::FirstFit, &offers, &[req]);
        assert_eq!(plan.placed[0].ports, vec![101, 102]);
        assert_eq!(plan.placed[0].resources.range_count(PORTS), 3);
    }

    #[test]
    fn strategies_choose_differently() {
        let offers = [
            offer("big", "a1", "cpus:8;mem:8192"),
            offer("small", "a2", "cpus:2;mem:2048"),
        ];
        let req = TaskRequest::new("t", Resources::parse("cpus:1;mem:512").expect("valid"));
        let first = place(Strategy::FirstFit, &offers, std::slice::from_ref(&req));
        assert_eq!(first.placed[0].offer_id.as_str(), "big");
        let packed = place(Strategy::BinPack, &offers, std::slice::from_ref(&req));
        assert_eq!(packed.placed[0].offer_id.as_str(), "small");
        let spread = place(Strategy::Spread, &offers, &[req.clone(), req]);
        let agents: Vec<_> = spread.placed.iter().map(|p| p.agent_id.as_str()).collect();
        assert_eq!(agents, ["a1", "a2"]);
        assert_eq!(spread.used_offers().len(), 2);
        assert!(spread.unused_offers().is_empty());
    }
}
