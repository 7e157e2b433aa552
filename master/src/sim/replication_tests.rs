//! The replication-level simulation's tests: a raft group of three or five
//! masters in the seeded world of [`crate::sim`], checked by
//! [`crate::sim::replication`].
//!
//! A failure names its seed; replay one with
//! `MEZZ_SIM_SEED=N cargo test -p mezz-master sim::replication`.

use super::run;
use crate::sim::seeds;

#[test]
fn three_masters_stay_safe_under_faults() {
    for seed in seeds(1..7) {
        if let Err(e) = run(seed, 3, 600) {
            panic!("seed {seed}: {e}\nreplay: MEZZ_SIM_SEED={seed} cargo test -p mezz-master sim::replication");
        }
    }
}

#[test]
fn five_masters_stay_safe_under_faults() {
    for seed in seeds(100..103) {
        if let Err(e) = run(seed, 5, 600) {
            panic!("seed {seed}: {e}\nreplay: MEZZ_SIM_SEED={seed} cargo test -p mezz-master sim::replication");
        }
    }
}
