//! The whole-master simulation's tests: three or five [`Node`]s with
//! agents, frameworks and a rogue client in the seeded world of
//! [`crate::sim`], checked by [`crate::sim::node`].
//!
//! A failure names its seed; replay one with
//! `MEZZ_SIM_SEED=N cargo test -p mezz-master sim::node`.
//!
//! [`Node`]: crate::node::Node

use super::{run, Summary};
use crate::sim::seeds;

/// Runs each seed for 800 hostile steps and fails naming the first seed
/// that breaks an invariant; then checks that the seeds together did test
/// something: the rogue was refused and spoofed updates, and accepts were
/// lost. (Per seed, which faults happen is chance: a change anywhere in the
/// master shifts every run, so requiring each kind in every seed fails for
/// no fault of the code.)
fn check(seeds: Vec<u64>, masters: u64) {
    let mut total = Summary::default();
    for seed in &seeds {
        match run(*seed, masters, 800) {
            Ok(summary) => {
                eprintln!("seed {seed}: {summary}");
                total.add(&summary);
            }
            Err(e) => panic!(
                "seed {seed}: {e}\nreplay: MEZZ_SIM_SEED={seed} cargo test -p mezz-master sim::node"
            ),
        }
    }
    assert!(
        total.refused > 0 && total.spoofed > 0 && total.accepts_lost > 0,
        "seeds {seeds:?} together: {total}: too few faults to test anything"
    );
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
