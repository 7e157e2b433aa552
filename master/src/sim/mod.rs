//! Seeded, deterministic simulations of masters, split the way raft-rs's
//! test harness is:
//!
//! - [`world`]: what the masters live in and cannot control: the random
//!   source, the raft network, partitions and drifting clocks;
//! - [`replication`]: a raft group of bare replicas in that world, the
//!   check that replication alone is safe;
//! - [`node`]: whole masters ([`crate::node::Node`]) in the same world,
//!   with simulated agents, frameworks and a rogue client as actors, and
//!   the invariants they must keep.
//!
//! The tests that drive them live here too (`replication_tests.rs`,
//! `node/tests.rs`), so the modules they simulate never import the
//! simulation, and a seed replays with the module path printed on failure. Everything random comes from the seed:
//! `MEZZ_SIM_SEED=N` replays one seed instead of the default range.

pub(crate) mod node;
pub(crate) mod replication;
pub(crate) mod world;

/// The seeds to run: `MEZZ_SIM_SEED` if set, else `default`.
pub(crate) fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("MEZZ_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => default.collect(),
    }
}
