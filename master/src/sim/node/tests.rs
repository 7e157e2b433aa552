//! The whole-master simulation's tests: three or five [`Node`]s with
//! agents, frameworks and a rogue client in the seeded world of
//! [`crate::sim`], checked by [`crate::sim::node`].
//!
//! A failure names its seed; replay one with
//! `MEZZ_SIM_SEED=N cargo test -p mezz-master sim::node`.
//!
//! [`Node`]: crate::node::Node

use super::run;
use crate::sim::seeds;

/// Runs each seed for 800 hostile steps and fails naming the first seed
/// that breaks an invariant.
fn check(seeds: Vec<u64>, masters: u64) {
    for seed in seeds {
        match run(seed, masters, 800) {
            Ok(summary) => eprintln!("seed {seed}: {summary}"),
            Err(e) => panic!(
                "seed {seed}: {e}\nreplay: MEZZ_SIM_SEED={seed} cargo test -p mezz-master sim::node"
            ),
        }
    }
}

#[test]
fn three_masters_with_agents_and_frameworks_stay_correct_under_faults() {
    check(seeds(1..9), 3);
}

#[test]
fn five_masters_with_agents_and_frameworks_stay_correct_under_faults() {
    check(seeds(100..104), 5);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = run(7, 3, 300);
    let b = run(7, 3, 300);
    assert_eq!(a, b);
}
