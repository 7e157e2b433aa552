//! Placement helpers: which offer each task request goes to (first-fit,
//! bin-pack or spread), with ports picked from the offered ranges and GPUs
//! from the agent's GPU identities (several GPUs: the best-connected set,
//! when the agent advertises its topology, see [`mezz_proto::topology`]).
//! Pure: offers and requests in, a [`Plan`]
//! out. Whether something fits is [`Resources::contains`], the master's own
//! check; it is never rewritten here.
//!
//! A port is an address only together with its host, and several agents can
//! share a host (`mezz dev --agents N`, or one agent per NUMA node): two
//! tasks of one plan never get the same host:port, even from two agents
//! that offer the same port range on one host.

use std::collections::BTreeMap;

use crate::proto;
use crate::{AgentId, Driver, OfferId, Resources, TaskBuilder};

pub use mezz_proto::resources::{GPUS, PORTS};
use mezz_proto::topology::Topology;

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

/// The host that tasks on `offer`'s agent are reached at: the host of the
/// agent's advertised API address (agents advertise what peers can reach),
/// else its hostname. Two agents with the same `offer_host` share one
/// network: a port taken on one is taken on the other.
///
/// ```
/// use mezz_sdk::{offer_host, proto};
/// let offer = proto::Offer {
///     hostname: "dev-agent-2".into(),
///     agent_address: "127.0.0.1:5052".into(),
///     ..Default::default()
/// };
/// assert_eq!(offer_host(&offer), "127.0.0.1");
/// let v6 = proto::Offer { agent_address: "[::1]:5051".into(), ..Default::default() };
/// assert_eq!(offer_host(&v6), "::1");
/// ```
pub fn offer_host(offer: &proto::Offer) -> String {
    match offer.agent_address.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => host.trim_matches(['[', ']']).to_string(),
        _ => offer.hostname.clone(),
    }
}

/// The names under which an offer's ports are addresses: its
/// [`offer_host`] and its agent's hostname. Agents that share either share
/// ports, as far as placement can tell.
fn host_keys(offer: &proto::Offer) -> Vec<String> {
    let mut keys = vec![offer_host(offer)];
    if !offer.hostname.is_empty() && !keys.contains(&offer.hostname) {
        keys.push(offer.hostname.clone());
    }
    keys.retain(|k| !k.is_empty());
    keys
}

/// An offer being filled: what is left of it and how many tasks it got.
struct Slot {
    offer_id: OfferId,
    agent_id: AgentId,
    left: Resources,
    /// See [`host_keys`].
    hosts: Vec<String>,
    /// How the agent's GPUs are connected, when it says.
    topology: Option<Topology>,
}

/// Ports already given to a task of this plan: ranges, by host.
#[derive(Default)]
struct TakenPorts(BTreeMap<String, Vec<(u64, u64)>>);

impl TakenPorts {
    fn on<'a>(&'a self, hosts: &'a [String]) -> impl Iterator<Item = (u64, u64)> + 'a {
        hosts
            .iter()
            .filter_map(|h| self.0.get(h))
            .flat_map(|r| r.iter().copied())
    }

    /// The end of the furthest taken range holding `port`, if any.
    fn taken_until(&self, hosts: &[String], port: u64) -> Option<u64> {
        self.on(hosts)
            .filter(|&(b, e)| (b..=e).contains(&port))
            .map(|(_, e)| e)
            .max()
    }

    /// Whether any port of `ranges` is taken on one of `hosts`.
    fn any_taken(&self, hosts: &[String], ranges: &[(u64, u64)]) -> bool {
        self.on(hosts)
            .any(|(b, e)| ranges.iter().any(|&(rb, re)| rb <= e && b <= re))
    }

    fn take(&mut self, hosts: &[String], ranges: &[(u64, u64)]) {
        for h in hosts {
            self.0
                .entry(h.clone())
                .or_default()
                .extend_from_slice(ranges);
        }
    }
}

/// What a request takes from an offer: exact resources, ports, GPUs.
type Claim = (Resources, Vec<u64>, Vec<String>);

/// The exact resources `request` would take from `slot`, with the ports
/// (none taken on its host already) and GPUs picked; `None` when it does
/// not fit.
fn claim(request: &TaskRequest, slot: &Slot, taken: &TakenPorts) -> Option<Claim> {
    let left = &slot.left;
    if taken.any_taken(&slot.hosts, request.resources.ranges(PORTS)) {
        return None;
    }
    let rest = left.checked_sub(&request.resources)?;
    let mut ports = Vec::with_capacity(request.ports);
    for &(begin, end) in rest.ranges(PORTS) {
        let mut port = begin;
        while ports.len() < request.ports {
            // The next port to try, or the end of this range.
            let next = match taken.taken_until(&slot.hosts, port) {
                // Skip the whole taken stretch at once.
                Some(last) => last,
                None => {
                    ports.push(port);
                    port
                }
            };
            if next >= end {
                break;
            }
            port = next + 1;
        }
    }
    let gpus = choose_gpus(slot.topology.as_ref(), &rest, request.gpus).unwrap_or_default();
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

/// `k` of the GPUs in `offered`: with two or more and a known topology,
/// the best-connected set (NVLink before PCIe); else the first ones. `None`
/// when `offered` has fewer than `k`.
fn choose_gpus(topology: Option<&Topology>, offered: &Resources, k: usize) -> Option<Vec<String>> {
    let ids = offered.set_items(GPUS);
    if ids.len() < k {
        return None;
    }
    match topology {
        Some(t) if k > 1 => t.best_set(&ids, k),
        _ => Some(ids.into_iter().take(k).map(String::from).collect()),
    }
}

/// `k` GPU ids for a task from those `offered` on `offer`'s agent: the
/// best-connected set when the agent advertises its topology (the
/// [`mezz_proto::topology::ATTRIBUTE`] attribute), else the first ones.
/// `None` when there are fewer than `k`. [`place`] picks GPUs this way;
/// this is for a scheduler that builds its own launch.
pub fn pick_gpus(offer: &proto::Offer, offered: &Resources, k: usize) -> Option<Vec<String>> {
    choose_gpus(offer_topology(offer).as_ref(), offered, k)
}

/// The topology `offer`'s agent advertises, if any (and readable).
fn offer_topology(offer: &proto::Offer) -> Option<Topology> {
    offer
        .attributes
        .get(mezz_proto::topology::ATTRIBUTE)
        .and_then(|t| Topology::parse(t).ok())
}

/// Places `requests`, in order, on `offers` by `strategy`. Each request goes
/// whole to one offer or is listed in [`Plan::unplaced`]; what a request
/// takes is gone for the next. No two requests get the same port on one
/// host (see [`offer_host`]), whichever agents offer it. Offers whose
/// resources cannot be read are treated as empty.
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
            hosts: host_keys(o),
            topology: offer_topology(o),
        })
        .collect();
    let mut taken = TakenPorts::default();
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
            .filter_map(|(i, slot)| claim(request, slot, &taken).map(|claimed| (i, claimed)));
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
        taken.take(&slot.hosts, exact.ranges(PORTS));
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
    use proptest::prelude::{
        any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig,
    };
    use std::collections::BTreeSet;

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
    fn several_gpus_go_to_the_best_connected_set() {
        let mut o = offer("o1", "a1", "cpus:4;gpus:{g0,g1,g2,g3}");
        // (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): g2-g3 on four NVLinks, g0-g1
        // on two, the rest across NUMA nodes.
        o.attributes.insert(
            mezz_proto::topology::ATTRIBUTE.into(),
            "g0,g1,g2,g3;NV2,SYS,SYS,SYS,SYS,NV4".into(),
        );
        let req = TaskRequest::new("t", Resources::parse("cpus:1").expect("valid")).gpus(2);
        let plan = place(
            Strategy::FirstFit,
            &[o.clone()],
            &[req.clone(), req.clone()],
        );
        let gpus: Vec<_> = plan.placed.iter().map(|p| p.gpus.clone()).collect();
        assert_eq!(gpus, [vec!["g2", "g3"], vec!["g0", "g1"]]);
        // One GPU, or an agent that says nothing: the first ones.
        let one = TaskRequest::new("t", Resources::parse("cpus:1").expect("valid")).gpus(1);
        assert_eq!(
            place(Strategy::FirstFit, &[o], &[one]).placed[0].gpus,
            ["g0"]
        );
        let plain = offer("o2", "a2", "cpus:4;gpus:{g0,g1,g2,g3}");
        assert_eq!(
            place(Strategy::FirstFit, &[plain], &[req]).placed[0].gpus,
            ["g0", "g1"]
        );
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

    fn offer_on(id: &str, agent: &str, host: &str, address: &str, res: &str) -> proto::Offer {
        proto::Offer {
            hostname: host.into(),
            agent_address: address.into(),
            ..offer(id, agent, res)
        }
    }

    #[test]
    fn agents_of_one_host_never_hand_out_one_port_twice() {
        // `mezz dev --agents 2` as it once was: both agents on 127.0.0.1,
        // both offering the same range.
        let offers = [
            offer_on(
                "o1",
                "a1",
                "dev-agent-1",
                "127.0.0.1:5051",
                "cpus:1;ports:[31000-31001]",
            ),
            offer_on(
                "o2",
                "a2",
                "dev-agent-2",
                "127.0.0.1:5052",
                "cpus:1;ports:[31000-31001]",
            ),
        ];
        let req = TaskRequest::new("t", Resources::parse("cpus:1").expect("valid")).ports(1);
        let plan = place(Strategy::Spread, &offers, &[req.clone(), req]);
        assert!(plan.is_complete(), "{plan:?}");
        let ports: Vec<u64> = plan.placed.iter().flat_map(|p| p.ports.clone()).collect();
        assert_eq!(ports, [31000, 31001]);
        let agents: BTreeSet<&str> = plan.placed.iter().map(|p| p.agent_id.as_str()).collect();
        assert_eq!(agents.len(), 2, "still spread over both agents");

        // Same hostname, addresses that name no host: the hostname decides.
        let offers = [
            offer_on("o1", "a1", "gpu-box", "", "cpus:1;ports:[100-100]"),
            offer_on("o2", "a2", "gpu-box", "", "cpus:1;ports:[100-100]"),
        ];
        let req = TaskRequest::new("t", Resources::parse("cpus:1").expect("valid")).ports(1);
        let plan = place(Strategy::FirstFit, &offers, &[req.clone(), req]);
        assert_eq!(plan.placed.len(), 1, "{plan:?}");
        assert_eq!(plan.unplaced, vec![1], "port 100 of gpu-box is taken");

        // Two hosts: the same port on each is fine.
        let offers = [
            offer_on("o1", "a1", "h1", "10.0.0.1:5051", "cpus:1;ports:[100-100]"),
            offer_on("o2", "a2", "h2", "10.0.0.2:5051", "cpus:1;ports:[100-100]"),
        ];
        let plan = place(
            Strategy::FirstFit,
            &offers,
            &[
                TaskRequest::new("a", Resources::parse("cpus:1").expect("valid")).ports(1),
                TaskRequest::new("b", Resources::parse("cpus:1").expect("valid")).ports(1),
            ],
        );
        assert!(plan.is_complete());
    }

    #[test]
    fn an_explicit_port_taken_on_the_host_goes_elsewhere() {
        let offers = [
            offer_on("o1", "a1", "h", "10.0.0.1:1", "cpus:4;ports:[100-101]"),
            offer_on("o2", "a2", "h", "10.0.0.1:2", "cpus:4;ports:[100-101]"),
            offer_on("o3", "a3", "other", "10.0.0.3:1", "cpus:4;ports:[100-101]"),
        ];
        let fixed = TaskRequest::new("f", Resources::new().with_ranges(PORTS, &[(100, 100)]));
        let plan = place(Strategy::FirstFit, &offers, &[fixed.clone(), fixed]);
        let on: Vec<&str> = plan.placed.iter().map(|p| p.offer_id.as_str()).collect();
        assert_eq!(on, ["o1", "o3"]);
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

    /// An offer on one of three hosts, reached by address or by hostname
    /// only, with a port range somewhere in 100..=112.
    fn arb_offer() -> impl proptest::strategy::Strategy<Value = (usize, bool, u64, u64, u32)> {
        (0..3usize, any::<bool>(), 100..110u64, 0..4u64, 1..4u32)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the offers (several agents per host, overlapping
        /// ranges), every placed task fits its offer, gets its ports from
        /// it, and no host:port is given twice.
        #[test]
        fn no_host_port_is_placed_twice(
            offers in proptest::collection::vec(arb_offer(), 1..6),
            requests in proptest::collection::vec((0..3usize, proptest::option::of(100..112u64)), 1..10),
            strategy in prop_oneof![Just(Strategy::FirstFit), Just(Strategy::BinPack), Just(Strategy::Spread)],
        ) {
            let offers: Vec<proto::Offer> = offers
                .iter()
                .enumerate()
                .map(|(i, &(host, by_address, begin, len, cpus))| {
                    let address = if by_address { format!("10.0.0.{host}:{}", 5051 + i) } else { String::new() };
                    let hostname = if by_address { format!("agent-{i}") } else { format!("10.0.0.{host}") };
                    offer_on(
                        &format!("o{i}"),
                        &format!("a{i}"),
                        &hostname,
                        &address,
                        &format!("cpus:{cpus};ports:[{begin}-{}]", begin + len),
                    )
                })
                .collect();
            let requests: Vec<TaskRequest> = requests
                .iter()
                .enumerate()
                .map(|(i, &(ports, fixed))| {
                    let mut r = Resources::new().with_scalar("cpus", 0.5);
                    if let Some(p) = fixed {
                        r = r.with_ranges(PORTS, &[(p, p)]);
                    }
                    TaskRequest::new(format!("t{i}"), r).ports(ports)
                })
                .collect();
            let plan = place(strategy, &offers, &requests);
            prop_assert_eq!(plan.placed.len() + plan.unplaced.len(), requests.len());
            let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
            let mut used: BTreeMap<&str, Resources> = BTreeMap::new();
            for p in &plan.placed {
                let offer = offers.iter().find(|o| o.id == p.offer_id.as_str()).expect("offer");
                prop_assert_eq!(p.ports.len(), requests[p.request].ports);
                let total = used.entry(offer.id.as_str()).or_default();
                total.add(&p.resources);
                let offered = Resources::from_proto(&offer.resources).expect("valid");
                prop_assert!(offered.contains(total), "{} over-committed: {}", offer.id, total);
                for &(b, e) in p.resources.ranges(PORTS) {
                    for port in b..=e {
                        prop_assert!(
                            seen.insert((offer_host(offer), port)),
                            "{}:{} given twice in {:?}", offer_host(offer), port, plan
                        );
                    }
                }
            }
        }
    }
}
