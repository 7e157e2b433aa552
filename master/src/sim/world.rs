//! The seeded world both simulations run in: the random source, the raft
//! network between masters (delay, loss, duplication), partitions that cut
//! the masters in two, and the masters' drifting clocks.
//!
//! Nothing here knows what a master decides; the simulations in
//! [`super::replication`] and [`super::node`] put their actors in this
//! world and check them. Every draw comes from the seed, so a run replays
//! exactly.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::Message as RaftMessage;

use crate::replication::transport::Transport;

/// SplitMix64: small, seedable, good enough for fault schedules.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

/// A two-sided partition between masters, drawn from the seed.
#[derive(Default)]
pub(crate) struct Partition(Option<(BTreeSet<u64>, u64)>);

impl Partition {
    /// Heals a partition once it has lasted its time; otherwise, with
    /// chance `p`, cuts masters `1..=n` in two for 20 to 80 steps.
    pub(crate) fn evolve(&mut self, rng: &mut Rng, n: u64, step: u64, p: f64) {
        if let Some((_, until)) = &self.0 {
            if step >= *until {
                self.0 = None;
            }
        } else if rng.chance(p) {
            let mut side = BTreeSet::new();
            let size = 1 + rng.below(n - 1);
            while (side.len() as u64) < size {
                side.insert(1 + rng.below(n));
            }
            self.0 = Some((side, step + 20 + rng.below(60)));
        }
    }

    /// Whether masters `a` and `b` are on different sides.
    pub(crate) fn cut(&self, a: u64, b: u64) -> bool {
        self.0
            .as_ref()
            .is_some_and(|(side, _)| side.contains(&a) != side.contains(&b))
    }

    /// Ends the partition now.
    pub(crate) fn heal(&mut self) {
        self.0 = None;
    }
}

/// Bounded clock drift, from the seed: each replica's clock now and then
/// misses a tick, at most one in [`Clocks::EVERY`]. The replicas' election
/// timers are fixed (see
/// [`Replica::open_fixed_timer`](crate::replication::Replica::open_fixed_timer)); this drift is what
/// breaks ties between candidates, and it stays well inside the leader
/// lease's margin (half an election timeout), as real clock drift does.
pub(crate) struct Clocks {
    last_skip: BTreeMap<u64, u64>,
}

impl Clocks {
    pub(crate) const EVERY: u64 = 10;

    pub(crate) fn new() -> Self {
        Clocks {
            last_skip: BTreeMap::new(),
        }
    }

    /// Whether replica `id` ticks at `step`.
    pub(crate) fn ticks(&mut self, rng: &mut Rng, id: u64, step: u64) -> bool {
        let last = self.last_skip.get(&id).copied();
        if last.is_none_or(|l| step >= l + Self::EVERY) && rng.chance(0.3) {
            self.last_skip.insert(id, step);
            return false;
        }
        true
    }
}

/// The in-memory transport: messages wait in flight for a random delay,
/// and may be dropped or duplicated on the way.
pub(crate) struct SimNet {
    pub(crate) rng: Rng,
    pub(crate) now: u64,
    pub(crate) drop: f64,
    pub(crate) duplicate: f64,
    pub(crate) max_delay: u64,
    /// (deliver at step, message)
    pub(crate) in_flight: Vec<(u64, RaftMessage)>,
}

impl SimNet {
    /// A network that delivers everything at once until told otherwise.
    pub(crate) fn new(seed: u64) -> Self {
        SimNet {
            rng: Rng(seed ^ 0x005e_ed0f_7e57),
            now: 0,
            drop: 0.0,
            duplicate: 0.0,
            max_delay: 0,
            in_flight: Vec::new(),
        }
    }

    /// Takes the messages due at `step`.
    pub(crate) fn due(&mut self, step: u64) -> Vec<RaftMessage> {
        let (due, later): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|(at, _)| *at <= step);
        self.in_flight = later;
        due.into_iter().map(|(_, m)| m).collect()
    }
}

impl Transport for SimNet {
    fn send(&mut self, msgs: Vec<RaftMessage>) {
        for m in msgs {
            if self.rng.chance(self.drop) {
                continue;
            }
            let at = self.now + self.rng.below(self.max_delay + 1);
            if self.rng.chance(self.duplicate) {
                self.in_flight.push((at + 1, m.clone()));
            }
            self.in_flight.push((at, m));
        }
    }
}
