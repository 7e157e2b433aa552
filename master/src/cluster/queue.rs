//! The cluster-wide queue of waiting demand, priority classes, preemption
//! and deadlines. In a two-level scheduler the master learns of work only
//! when a framework accepts an offer, so frameworks tell it what they wait
//! for (`SetDemand`: resources per task, gang size, class, start
//! deadline). Each tick the queue is walked in order (class, then
//! least-attained GPU service, then age): a demand that fits is left to
//! the allocator (so quotas and reservations hold) and what it will take
//! is not free for the demand behind it; one of a class that preempts and
//! does not fit gets victims picked by
//! [`preempt::select_victims`], killed with their grace period, and the
//! freed resources held for it. Deadlines are in `deadlines.rs`, the
//! views of the queue in `view.rs`.
//!
//! Demand, holds and the preemption log are the leader's soft state, as
//! offers are: frameworks send their demand again after a failover.

use std::collections::{BTreeMap, VecDeque};

use mezz_proto::v1::{Demand, SetDemandRequest, TaskInfo, TaskReason};
use mezz_proto::{AgentId, FrameworkId, Resources, TaskId};

use super::{CallError, Cluster, Map, Millis, Task};
use crate::allocator::preempt::{self, Candidate, Need, Waiting};
use crate::scheduling::{PriorityClass, SchedulingConfig};

const GPUS: &str = "gpus";
/// How long a demand whose resources were offered is left alone before it
/// counts as waiting again (its framework declined, or is slow).
const OFFER_PATIENCE: Millis = 5_000;
/// Run deadlines are checked at most this often.
const DEADLINE_SCAN: Millis = 500;

/// One waiting demand.
#[derive(Debug, Clone)]
pub(crate) struct Waiter {
    pub demand: Demand,
    pub need: Need,
    pub class: PriorityClass,
    pub since: Millis,
    pub since_unix: f64,
    /// Why it is not placed yet, for `mezz queue ls` and the deadline's
    /// message.
    pub why: String,
    /// Left alone until then: resources are held or offered for it.
    pub served_until: Millis,
}

/// Resources held on one agent for one waiting demand.
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    pub framework: FrameworkId,
    pub demand: String,
    pub agent: AgentId,
    /// Scalars for all its tasks on this agent.
    pub scalars: Resources,
    pub gpus: usize,
    pub until: Millis,
}

/// The queue's state. See the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Queue {
    pub config: SchedulingConfig,
    pub waiting: BTreeMap<(FrameworkId, String), Waiter>,
    pub holds: Vec<Hold>,
    /// When each recent victim was preempted (the cluster-wide rate).
    pub preempted_at: VecDeque<Millis>,
    pub last_deadline_scan: Millis,
}

impl Queue {
    /// Takes what holds keep on `agent` out of `available`, so that the
    /// allocator does not offer it to others.
    pub fn subtract_holds(&self, agent: &AgentId, available: &mut Resources) {
        for h in self.holds.iter().filter(|h| h.agent == *agent) {
            available.subtract(&h.scalars);
            take_gpus(available, h.gpus);
        }
    }
}

/// Removes `n` GPUs (any) from `r`; returns their names.
fn take_gpus(r: &mut Resources, n: usize) -> Vec<String> {
    let ids: Vec<String> = r
        .set_items(GPUS)
        .into_iter()
        .take(n)
        .map(str::to_string)
        .collect();
    r.subtract(&Resources::new().with_set(GPUS, ids.clone()));
    ids
}

/// How many tasks of a plan go to each agent.
fn per_agent(plan: &[AgentId]) -> BTreeMap<&AgentId, usize> {
    let mut n: BTreeMap<&AgentId, usize> = BTreeMap::new();
    for a in plan {
        *n.entry(a).or_default() += 1;
    }
    n
}

/// Takes what `plan` places out of `free`.
fn take_plan(need: &Need, plan: &[AgentId], free: &mut BTreeMap<AgentId, Resources>) {
    for (agent, n) in per_agent(plan) {
        if let Some(f) = free.get_mut(agent) {
            for _ in 0..n {
                f.subtract(&need.per_task);
            }
            take_gpus(f, need.gpus * n);
        }
    }
}

/// What a demand asks for per task, as text (`cpus:1;mem:128;gpus:2`).
pub(super) fn need_text(need: &Need) -> String {
    let base = need.per_task.to_string();
    match (need.gpus, base.is_empty()) {
        (0, _) => base,
        (g, true) => format!("gpus:{g}"),
        (g, false) => format!("{base};gpus:{g}"),
    }
}

impl Cluster {
    /// Sets the priority classes and preemption limits.
    pub fn set_scheduling(&mut self, config: SchedulingConfig) {
        self.queue.config = config;
    }

    /// The class of a task: its own, else its framework's, else the
    /// default (also for a name the configuration no longer knows).
    pub(super) fn task_priority(&self, t: &Task) -> PriorityClass {
        let cfg = &self.queue.config;
        let fw = self
            .frameworks
            .get(&t.framework_id)
            .map(|f| f.info.priority.as_str())
            .unwrap_or_default();
        [t.info.priority.as_str(), fw]
            .into_iter()
            .find(|n| !n.is_empty())
            .and_then(|n| cfg.class(n))
            .or_else(|| cfg.class(&cfg.default_class))
            .cloned()
            .unwrap_or(PriorityClass {
                name: cfg.default_class.clone(),
                value: 0,
                preemptible: false,
                preempts: false,
            })
    }

    /// Refuses a priority class name the master does not know.
    pub(super) fn check_priority(&self, name: &str, what: &str) -> Result<(), String> {
        self.queue
            .config
            .resolve(name)
            .map(|_| ())
            .map_err(|e| format!("{what}: {e}"))
    }

    /// What a task to launch must satisfy here: a known class and a
    /// sensible run deadline.
    pub(super) fn check_task_scheduling(&self, task: &TaskInfo) -> Result<(), String> {
        let tid = &task.task_id;
        if !task.priority.is_empty() {
            self.check_priority(&task.priority, &format!("task {tid}"))?;
        }
        if !task.max_run_secs.is_finite() || task.max_run_secs < 0.0 {
            return Err(format!(
                "task {tid}: max_run_secs must be a non-negative number of seconds"
            ));
        }
        Ok(())
    }

    /// SET_DEMAND: replaces what the framework waits for.
    pub fn set_demand(&mut self, req: SetDemandRequest, now: Millis) -> Result<(), CallError> {
        self.now = now;
        let fid = FrameworkId(req.framework_id.clone());
        let Some(fw) = self.frameworks.get(&fid) else {
            return Err(CallError::NotFound(format!(
                "framework '{fid}' is not registered; subscribe first"
            )));
        };
        let fw_priority = fw.info.priority.clone();
        let mut next: BTreeMap<(FrameworkId, String), Waiter> = BTreeMap::new();
        for d in req.demands {
            mezz_proto::ids::validate_id("demand", &d.id).map_err(CallError::Invalid)?;
            let what = format!("demand {}", d.id);
            let resources = Resources::from_proto(&d.resources)
                .map_err(|e| CallError::Invalid(format!("{what}: {e}")))?;
            let gpus = resources.scalar(GPUS);
            if gpus.fract() != 0.0 || gpus < 0.0 {
                return Err(CallError::Invalid(format!(
                    "{what}: gpus {gpus} must be a whole number (GPUs are not shared)"
                )));
            }
            let mut per_task = resources.clone();
            per_task.set_scalar(GPUS, 0.0);
            if !d.start_deadline_secs.is_finite() || d.start_deadline_secs < 0.0 {
                return Err(CallError::Invalid(format!(
                    "{what}: start_deadline_secs must be a non-negative number"
                )));
            }
            let name = if d.priority.is_empty() {
                &fw_priority
            } else {
                &d.priority
            };
            let class = self
                .queue
                .config
                .resolve(name)
                .map_err(|e| CallError::Invalid(format!("{what}: {e}")))?
                .clone();
            let key = (fid.clone(), d.id.clone());
            let old = self.queue.waiting.get(&key);
            let waiter = Waiter {
                need: Need {
                    per_task,
                    gpus: gpus as usize,
                    tasks: d.tasks.max(1) as usize,
                },
                class,
                since: old.map_or(now, |w| w.since),
                since_unix: old.map_or(self.unix_time(), |w| w.since_unix),
                why: old.map_or_else(|| "not looked at yet".into(), |w| w.why.clone()),
                served_until: old.map_or(0, |w| w.served_until),
                demand: d,
            };
            next.insert(key, waiter);
        }
        let dropped: Vec<(FrameworkId, String)> = self
            .queue
            .waiting
            .keys()
            .filter(|k| k.0 == fid && !next.contains_key(*k))
            .cloned()
            .collect();
        for key in dropped {
            self.forget_demand(&key);
        }
        self.queue.waiting.extend(next);
        Ok(())
    }

    /// Removes a waiting demand and what is held for it.
    pub(super) fn forget_demand(&mut self, key: &(FrameworkId, String)) {
        self.queue.waiting.remove(key);
        let dirty = &mut self.dirty_agents;
        self.queue.holds.retain(|h| {
            let mine = h.framework == key.0 && h.demand == key.1;
            if mine {
                dirty.insert(h.agent.clone());
            }
            !mine
        });
    }

    /// The queue's timers and decisions; called from `tick`.
    pub(super) fn run_queue(&mut self) {
        let now = self.now;
        self.expire_holds();
        if now.saturating_sub(self.queue.last_deadline_scan) >= DEADLINE_SCAN {
            self.queue.last_deadline_scan = now;
            self.enforce_run_deadlines();
        }
        if self.queue.waiting.is_empty() {
            return;
        }
        let fws = &self.frameworks;
        let gone: Vec<(FrameworkId, String)> = self
            .queue
            .waiting
            .keys()
            .filter(|(f, _)| !fws.contains_key(f))
            .cloned()
            .collect();
        for key in gone {
            self.forget_demand(&key);
        }
        self.expire_start_deadlines();
        while self
            .queue
            .preempted_at
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= 60_000)
        {
            self.queue.preempted_at.pop_front();
        }
        let mut free = self.free_map();
        let mut candidates = self.candidates();
        for key in self.queue_order() {
            let Some(w) = self.queue.waiting.get(&key) else {
                continue;
            };
            if w.served_until > now {
                continue;
            }
            let connected = self
                .frameworks
                .get(&key.0)
                .is_some_and(|f| f.conn.is_some());
            if !connected {
                self.set_why(&key, "its framework is disconnected".into());
                continue;
            }
            let (need, class) = (w.need.clone(), w.class.clone());
            if let Some(plan) = preempt::place(&need, &free) {
                // It fits: the allocator offers it as usual (within its
                // role's quota and reservations); what it will take is not
                // free for the demand behind it.
                take_plan(&need, &plan, &mut free);
                self.set_why(
                    &key,
                    "fits; waiting for its framework to take an offer".into(),
                );
                continue;
            }
            let wanted = format!("{} task(s) of {}", need.tasks, need_text(&need));
            if !class.preempts {
                self.set_why(
                    &key,
                    format!("waits for {wanted}; class {} does not preempt", class.name),
                );
                continue;
            }
            let Some(victims) = preempt::select_victims(&need, class.value, &free, &candidates)
            else {
                self.set_why(
                    &key,
                    format!(
                        "waits for {wanted}; not free, and preempting every preemptible task of \
                         a class below {} ({}) would not make room",
                        class.name, class.value
                    ),
                );
                continue;
            };
            let budget = self.queue.config.max_preemptions_per_minute as usize;
            if self.queue.preempted_at.len() + victims.len() > budget {
                self.set_why(
                    &key,
                    format!(
                        "waits for {wanted}; preempting {} task(s) would pass the cluster's \
                         limit of {budget} per minute",
                        victims.len()
                    ),
                );
                continue;
            }
            for v in &victims {
                if let Some(c) = candidates.iter().find(|c| c.id == *v) {
                    free.entry(c.agent.clone()).or_default().add(&c.resources);
                }
            }
            candidates.retain(|c| !victims.contains(&c.id));
            let Some(plan) = preempt::place(&need, &free) else {
                continue;
            };
            let grace_ms = self.preempt(&key, &class, &victims);
            self.hold_for(&key, &need, &plan, &mut free, grace_ms);
            let names: Vec<&str> = victims.iter().map(|v| v.1 .0.as_str()).collect();
            self.set_why(
                &key,
                format!("preempted {}; waiting for them to end", names.join(", ")),
            );
        }
    }

    fn set_why(&mut self, key: &(FrameworkId, String), why: String) {
        if let Some(w) = self.queue.waiting.get_mut(key) {
            w.why = why;
        }
    }

    /// Kills the victims for `key`; returns the longest grace period given,
    /// in milliseconds.
    fn preempt(
        &mut self,
        key: &(FrameworkId, String),
        class: &PriorityClass,
        victims: &[(FrameworkId, TaskId)],
    ) -> Millis {
        let fw_name = self
            .frameworks
            .get(&key.0)
            .map(|f| f.info.name.clone())
            .unwrap_or_default();
        let message = format!(
            "preempted by framework '{fw_name}' ({}) for '{}' of priority class {} ({})",
            key.0, key.1, class.name, class.value
        );
        let grace = self.queue.config.grace_secs;
        let mut longest: f64 = grace.unwrap_or(0.0);
        for v in victims {
            let task_grace = self
                .tasks
                .get(v)
                .map_or(0.0, |t| t.info.kill_grace_period_secs);
            longest = longest.max(grace.unwrap_or(if task_grace > 0.0 {
                task_grace
            } else {
                // The agent's default grace period.
                3.0
            }));
            tracing::info!(task_id = %v.1, framework_id = %v.0, preemptor = %key.0, demand = %key.1, "preempting task");
            self.send_kill_because(v, grace, TaskReason::Preempted, message.clone());
            self.queue.preempted_at.push_back(self.now);
        }
        (longest * 1000.0) as Millis
    }

    /// Holds the resources of `plan` for `key` (beyond the victims' grace
    /// period `grace_ms`) and takes them out of `free`.
    fn hold_for(
        &mut self,
        key: &(FrameworkId, String),
        need: &Need,
        plan: &[AgentId],
        free: &mut BTreeMap<AgentId, Resources>,
        grace_ms: Millis,
    ) {
        let until = self.now + grace_ms + self.queue.config.hold_ms;
        take_plan(need, plan, free);
        for (agent, n) in per_agent(plan) {
            let mut scalars = Resources::new();
            for _ in 0..n {
                scalars.add(&need.per_task);
            }
            // Offers of this agent to others go back, so the held
            // resources can be offered to the waiting framework (its own
            // stay: it may be holding them for a gang).
            let elsewhere: Vec<mezz_proto::OfferId> = self
                .offers
                .iter()
                .filter(|(_, o)| o.agent_id == *agent && o.framework_id != key.0)
                .map(|(id, _)| id.clone())
                .collect();
            for id in elsewhere {
                self.rescind(&id);
            }
            self.queue.holds.push(Hold {
                framework: key.0.clone(),
                demand: key.1.clone(),
                agent: agent.clone(),
                scalars,
                gpus: need.gpus * n,
                until,
            });
            self.dirty_agents.insert(agent.clone());
        }
        if let Some(w) = self.queue.waiting.get_mut(key) {
            w.served_until = until;
        }
    }

    /// Offers held resources that are free now to their framework; called
    /// at the start of an allocation cycle.
    pub(super) fn serve_holds(&mut self) {
        if self.queue.holds.is_empty() {
            return;
        }
        let holds = std::mem::take(&mut self.queue.holds);
        let mut keep = Vec::new();
        for h in holds {
            let Some(agent) = self.agents.get(&h.agent).filter(|a| a.conn.is_some()) else {
                continue;
            };
            let mut avail = agent.available().unreserved();
            if !avail.contains(&h.scalars) || avail.set_len(GPUS) < h.gpus {
                keep.push(h);
                continue;
            }
            let gpus = take_gpus(&mut avail, h.gpus);
            let resources = h.scalars.clone().with_set(GPUS, gpus);
            tracing::info!(framework_id = %h.framework, demand = %h.demand, agent_id = %h.agent, "offering held resources");
            self.offer_to(&h.framework, &h.agent, resources);
            if let Some(w) = self
                .queue
                .waiting
                .get_mut(&(h.framework.clone(), h.demand.clone()))
            {
                w.served_until = self.now + OFFER_PATIENCE;
                w.why = "offered; waiting for its framework to launch".into();
            }
        }
        self.queue.holds = keep;
    }

    fn expire_holds(&mut self) {
        let now = self.now;
        let (expired, kept): (Vec<Hold>, Vec<Hold>) = std::mem::take(&mut self.queue.holds)
            .into_iter()
            .partition(|h| h.until <= now);
        self.queue.holds = kept;
        for h in expired {
            self.dirty_agents.insert(h.agent.clone());
            if let Some(w) = self.queue.waiting.get_mut(&(h.framework, h.demand)) {
                w.served_until = 0;
            }
        }
    }

    /// Per usable agent, what is neither used nor held: outstanding offers
    /// count as free (they can be rescinded).
    fn free_map(&self) -> BTreeMap<AgentId, Resources> {
        self.agents
            .iter()
            .filter(|(id, a)| a.conn.is_some() && !self.registry.removed_agents.contains(*id))
            .map(|(id, a)| {
                let mut free = a.total.unreserved();
                free.subtract(&a.used);
                self.queue.subtract_holds(id, &mut free);
                (id.clone(), free)
            })
            .collect()
    }

    /// Running tasks that could be preempted (not already being killed,
    /// on a connected agent).
    fn candidates(&self) -> Vec<Candidate> {
        let now = self.unix_time();
        self.tasks
            .iter()
            .filter(|(_, t)| {
                !t.kill_requested
                    && !t.status.state().is_terminal()
                    && self
                        .agents
                        .get(&t.agent_id)
                        .is_some_and(|a| a.conn.is_some())
            })
            .map(|(key, t)| {
                let class = self.task_priority(t);
                let gpus = t.resources.set_len(GPUS).max(1) as f64;
                Candidate {
                    id: key.clone(),
                    gang: match t.info.labels.get("gang") {
                        Some(g) => format!("{}/gang/{g}", key.0),
                        None => format!("{}/task/{}", key.0, key.1),
                    },
                    agent: t.agent_id.clone(),
                    resources: t.resources.clone(),
                    value: class.value,
                    preemptible: class.preemptible,
                    work: (now - t.launched_at).max(0.0) * gpus,
                    started: t.launched_at,
                }
            })
            .collect()
    }

    /// GPU-seconds held so far by each framework's tasks, running and
    /// remembered.
    pub(super) fn attained(&self) -> Map<FrameworkId, f64> {
        let now = self.unix_time();
        let mut out: Map<FrameworkId, f64> = Map::default();
        for t in self.tasks.values() {
            let g = t.resources.set_len(GPUS) as f64;
            *out.entry(t.framework_id.clone()).or_default() += g * (now - t.launched_at).max(0.0);
        }
        for t in self.completed.iter() {
            let g = t.resources.set_len(GPUS) as f64;
            *out.entry(t.framework_id.clone()).or_default() +=
                g * (t.status.timestamp - t.launched_at).max(0.0);
        }
        out
    }

    /// The waiting demand's keys in queue order.
    pub(super) fn queue_order(&self) -> Vec<(FrameworkId, String)> {
        let attained = self.attained();
        let mut v: Vec<(Waiting, (FrameworkId, String))> = self
            .queue
            .waiting
            .iter()
            .map(|(k, w)| {
                (
                    Waiting {
                        value: w.class.value,
                        attained: attained.get(&k.0).copied().unwrap_or(0.0),
                        since: w.since as f64,
                        key: format!("{}/{}", k.0, k.1),
                    },
                    k.clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| preempt::queue_order(&a.0, &b.0));
        v.into_iter().map(|(_, k)| k).collect()
    }
}
