//! Gang placement: a group of tasks launched together or not at all. Offers
//! are held until the whole group fits, but only for a bounded time; then
//! every held offer goes back with a refuse filter, so two gangs that each
//! hold half of what they need never wait on each other for ever (the
//! deadlock Mesos documents for frameworks that hoard offers). The core is
//! pure (`offers`/`expire` take the time); `on_offers`/`on_wakeup` are the
//! thin shell that talks to a [`Driver`]. Ports are picked by [`place`], so
//! no two tasks of a gang share a host:port, even across agents of one
//! host.

use std::time::{Duration, Instant};

use crate::placement::{place, Placement, Plan, Strategy, TaskRequest};
use crate::proto;
use crate::{Driver, OfferId, TaskBuilder};

/// What the gang wants done with offers.
#[derive(Clone, Debug, PartialEq)]
pub enum GangStep {
    /// The whole gang fits: launch every task of `plan` now, and decline
    /// `decline`, the held offers it does not use.
    Launch {
        /// Where each task goes; complete.
        plan: Plan,
        /// Held offers the plan leaves unused.
        decline: Vec<OfferId>,
    },
    /// Not yet: the offers are held; call [`Gang::expire`] at `until`.
    Hold {
        /// When the held offers must go back.
        until: Instant,
    },
    /// Give these offers back, asking not to see them for `refuse_seconds`.
    Decline {
        /// The offers to decline.
        offers: Vec<OfferId>,
        /// The refuse filter.
        refuse_seconds: f64,
    },
    /// Nothing to do.
    Idle,
}

/// Places a group of tasks atomically over the offers it collects.
///
/// ```
/// use std::time::{Duration, Instant};
/// use mezz_sdk::{proto, Gang, GangStep, Resources, TaskRequest};
///
/// let one_cpu = Resources::parse("cpus:1;mem:128").unwrap();
/// let mut gang = Gang::new((0..2).map(|i| TaskRequest::new(format!("worker-{i}"), one_cpu.clone())))
///     .hold(Duration::from_secs(2))
///     .seed(7);
/// let offer = |id: &str| proto::Offer {
///     id: id.into(),
///     agent_id: format!("agent-{id}"),
///     resources: Resources::parse("cpus:1;mem:1024").unwrap().to_proto(),
///     ..Default::default()
/// };
/// let t0 = Instant::now();
/// // Half of what it needs: held, never launched in part.
/// assert!(matches!(gang.offers(vec![offer("a")], t0), GangStep::Hold { .. }));
/// // Not enough in time: everything goes back with a filter.
/// let later = t0 + Duration::from_secs(10);
/// assert!(matches!(gang.expire(later), GangStep::Decline { ref offers, .. } if offers.len() == 1));
/// // Both at once: the whole gang launches.
/// match gang.offers(vec![offer("b"), offer("c")], later) {
///     GangStep::Launch { plan, .. } => assert_eq!(plan.placed.len(), 2),
///     other => panic!("{other:?}"),
/// }
/// assert!(gang.is_launched());
/// ```
#[derive(Clone, Debug)]
pub struct Gang {
    requests: Vec<TaskRequest>,
    strategy: Strategy,
    hold: Duration,
    refuse: Duration,
    /// Held offers, each with the time it arrived.
    held: Vec<(proto::Offer, Instant)>,
    /// The hold of the current round, jittered so that competing gangs
    /// give offers back at different moments.
    round_hold: Duration,
    launched: bool,
    rng: u64,
}

impl Gang {
    /// A gang of `requests`, first-fit, holding offers for 5 s and refusing
    /// declined ones for 2 s, with a seed from the process id and the clock.
    pub fn new(requests: impl IntoIterator<Item = TaskRequest>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut gang = Gang {
            requests: requests.into_iter().collect(),
            strategy: Strategy::FirstFit,
            hold: Duration::from_secs(5),
            refuse: Duration::from_secs(2),
            held: Vec::new(),
            round_hold: Duration::ZERO,
            launched: false,
            rng: 0,
        };
        gang = gang.seed(nanos ^ u64::from(std::process::id()).rotate_left(32));
        gang
    }

    /// How the tasks are spread over the offers.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The longest an offer is held while the gang does not fit (each round
    /// adds up to half again, at random, to break ties between gangs).
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self.round_hold = self.jittered();
        self
    }

    /// How long declined offers are refused. Keep it shorter than the hold,
    /// so offers given back by a gang come back while the other half of
    /// what it needs is still held.
    pub fn refuse(mut self, refuse: Duration) -> Self {
        self.refuse = refuse;
        self
    }

    /// The seed of the hold jitter, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = seed | 1;
        self.round_hold = self.jittered();
        self
    }

    /// The tasks of the gang.
    pub fn requests(&self) -> &[TaskRequest] {
        &self.requests
    }

    /// True once the gang was launched.
    pub fn is_launched(&self) -> bool {
        self.launched
    }

    /// The offers held now.
    pub fn held(&self) -> Vec<OfferId> {
        self.held
            .iter()
            .map(|(o, _)| OfferId(o.id.clone()))
            .collect()
    }

    /// Forgets the launch so the whole gang is placed again (after a member
    /// failed, say). Kill the survivors first: a gang runs whole.
    pub fn reset(&mut self) {
        self.launched = false;
    }

    fn jittered(&mut self) -> Duration {
        // xorshift64: deterministic for a seed, good enough for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = (self.rng % 1000) as f64 / 2000.0;
        self.hold.mul_f64(1.0 + fraction)
    }

    /// New offers arrived at `now`.
    pub fn offers(&mut self, offers: Vec<proto::Offer>, now: Instant) -> GangStep {
        if self.launched {
            return GangStep::Decline {
                offers: offers.into_iter().map(|o| OfferId(o.id)).collect(),
                refuse_seconds: self.refuse.as_secs_f64(),
            };
        }
        self.held.extend(offers.into_iter().map(|o| (o, now)));
        let pool: Vec<proto::Offer> = self.held.iter().map(|(o, _)| o.clone()).collect();
        let plan = place(self.strategy, &pool, &self.requests);
        if plan.is_complete() {
            self.launched = true;
            self.held.clear();
            let decline = plan.unused_offers();
            return GangStep::Launch { plan, decline };
        }
        self.expire(now)
    }

    /// Time passed: gives everything back once the oldest held offer was
    /// held longer than this round's hold.
    pub fn expire(&mut self, now: Instant) -> GangStep {
        let Some(oldest) = self.held.iter().map(|(_, at)| *at).min() else {
            return GangStep::Idle;
        };
        let until = oldest + self.round_hold;
        if now < until {
            return GangStep::Hold { until };
        }
        self.round_hold = self.jittered();
        GangStep::Decline {
            offers: self.held.drain(..).map(|(o, _)| OfferId(o.id)).collect(),
            refuse_seconds: self.refuse.as_secs_f64(),
        }
    }

    /// An offer was rescinded: it is no longer held.
    pub fn rescinded(&mut self, offer_id: &OfferId) {
        self.held.retain(|(o, _)| o.id != offer_id.0);
    }

    /// The connection was lost: held offers are void.
    pub fn disconnected(&mut self) {
        self.held.clear();
    }

    /// [`Gang::offers`] acted on: launches the whole gang (each task built
    /// by `build`), declines, or holds and asks the driver for a wake-up
    /// (pass [`Scheduler::wakeup`](crate::Scheduler::wakeup) on to
    /// [`Gang::on_wakeup`]). Returns true when it launched.
    pub fn on_offers(
        &mut self,
        driver: &Driver,
        offers: Vec<proto::Offer>,
        build: impl FnMut(&Placement) -> TaskBuilder,
    ) -> bool {
        match self.offers(offers, Instant::now()) {
            GangStep::Launch { plan, decline } => {
                plan.launch(driver, build);
                if !decline.is_empty() {
                    driver.decline(decline, None);
                }
                true
            }
            other => {
                Self::act(driver, other);
                false
            }
        }
    }

    /// [`Gang::expire`] acted on: declines what was held too long.
    pub fn on_wakeup(&mut self, driver: &Driver) {
        let step = self.expire(Instant::now());
        Self::act(driver, step);
    }

    /// Carries out a step that launches nothing.
    fn act(driver: &Driver, step: GangStep) {
        match step {
            GangStep::Hold { until } => {
                driver.wake_after(until.saturating_duration_since(Instant::now()));
            }
            GangStep::Decline {
                offers,
                refuse_seconds,
            } => {
                tracing::debug!(
                    offers = offers.len(),
                    "gang does not fit; giving offers back"
                );
                driver.decline(offers, Some(refuse_seconds));
            }
            GangStep::Launch { .. } | GangStep::Idle => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resources;

    fn offer(id: &str, cpus: f64) -> proto::Offer {
        proto::Offer {
            id: id.into(),
            agent_id: format!("agent-{id}"),
            resources: Resources::new().with_scalar("cpus", cpus).to_proto(),
            ..Default::default()
        }
    }

    fn gang(n: usize) -> Gang {
        let one = Resources::new().with_scalar("cpus", 1.0);
        Gang::new((0..n).map(|i| TaskRequest::new(format!("t{i}"), one.clone())))
            .hold(Duration::from_secs(1))
            .seed(1)
    }

    #[test]
    fn holds_within_the_bound_then_declines_everything() {
        let mut g = gang(3);
        let t0 = Instant::now();
        let until = match g.offers(vec![offer("a", 1.0)], t0) {
            GangStep::Hold { until } => until,
            other => panic!("{other:?}"),
        };
        assert!(until >= t0 + Duration::from_secs(1) && until <= t0 + Duration::from_millis(1500));
        assert!(matches!(
            g.offers(vec![offer("b", 1.0)], t0),
            GangStep::Hold { .. }
        ));
        assert!(matches!(
            g.expire(until - Duration::from_millis(1)),
            GangStep::Hold { .. }
        ));
        match g.expire(until) {
            GangStep::Decline { offers, .. } => assert_eq!(offers.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(g.held().is_empty());
        assert_eq!(g.expire(until), GangStep::Idle);
    }

    #[test]
    fn rescinded_and_disconnected_offers_are_not_used() {
        let mut g = gang(2);
        let t0 = Instant::now();
        g.offers(vec![offer("a", 1.0)], t0);
        g.rescinded(&OfferId::from("a"));
        assert!(matches!(
            g.offers(vec![offer("b", 1.0)], t0),
            GangStep::Hold { .. }
        ));
        g.disconnected();
        assert!(matches!(
            g.offers(vec![offer("c", 1.0)], t0),
            GangStep::Hold { .. }
        ));
        match g.offers(vec![offer("d", 1.0)], t0) {
            GangStep::Launch { plan, decline } => {
                assert!(plan.is_complete());
                assert!(decline.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Launched: later offers go back.
        assert!(matches!(
            g.offers(vec![offer("e", 1.0)], t0),
            GangStep::Decline { .. }
        ));
    }

    #[test]
    fn a_gang_over_agents_of_one_host_gets_distinct_addresses() {
        let on_localhost = |id: &str, port: u16| proto::Offer {
            id: id.into(),
            agent_id: format!("agent-{id}"),
            hostname: format!("dev-agent-{id}"),
            agent_address: format!("127.0.0.1:{port}"),
            resources: Resources::parse("cpus:1;ports:[31000-31001]")
                .expect("valid")
                .to_proto(),
            ..Default::default()
        };
        let one = Resources::new().with_scalar("cpus", 1.0);
        let mut g =
            Gang::new((0..2).map(|i| TaskRequest::new(format!("w{i}"), one.clone()).ports(1)))
                .strategy(Strategy::Spread)
                .seed(3);
        let step = g.offers(
            vec![on_localhost("a", 5051), on_localhost("b", 5052)],
            Instant::now(),
        );
        let GangStep::Launch { plan, .. } = step else {
            panic!("the gang fits: {step:?}")
        };
        let ports: std::collections::BTreeSet<u64> =
            plan.placed.iter().flat_map(|p| p.ports.clone()).collect();
        assert_eq!(ports.len(), 2, "{plan:?}");
    }

    #[test]
    fn seeds_give_different_holds() {
        let holds: std::collections::BTreeSet<_> =
            (1..20u64).map(|s| gang(1).seed(s).round_hold).collect();
        assert!(holds.len() > 1);
    }
}
