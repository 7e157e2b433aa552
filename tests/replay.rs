//! `mezz sim replay` end to end: a Pollux workload replayed through a real
//! `mezz master` and simulated agents with FIFO first-fit must come within
//! 5% of the reference simulator's average JCT for the same file
//! (`results/baseline.jsonl` of the traces, read here rather than copied),
//! which shows the replay is faithful; and a bad CSV is refused with its
//! line and column named.
//!
//! The traces live beside the repository (`../shared/traces`); where they
//! are missing the replay test reports itself skipped, and fails under
//! `CI=true`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// A light file whose queueing still matters (average queueing 2,233 s of
/// an average JCT of 4,031 s under FIFO first-fit).
const WORKLOAD: &str = "workloads-0.5/workload-2.csv";
/// About 17 s of real time for its 32,890 trace seconds.
const SPEEDUP: &str = "2000";

fn traces() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces");
    if dir.join("results/baseline.jsonl").is_file() {
        return Some(dir);
    }
    eprintln!("skipped: no traces at {}", dir.display());
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the traces (../shared/traces from the repository root) are required under CI"
    );
    None
}

/// The reference simulator's result for `workload` and `policy`
/// (reference mechanics: no tick, no restart cost; spread placement).
fn reference(traces: &std::path::Path, workload: &str, policy: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(traces.join("results/baseline.jsonl")).expect("baseline.jsonl");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["workload"] == workload
                && v["policy"] == policy
                && v["placement"] == "spread"
                && v["nodes"] == 16
                && v["gpus_per_node"] == 4
                && v["interval_s"].as_f64() == Some(0.0)
                && v["restart_overhead_s"].as_f64() == Some(0.0)
        })
        .unwrap_or_else(|| panic!("no reference result for {workload} {policy}"))
}

#[test]
fn fifo_replay_matches_the_reference_simulator() {
    let Some(traces) = traces() else { return };
    let csv = traces.join("resolved").join(WORKLOAD);
    let started = Instant::now();
    let out = mezz(
        &[
            "sim",
            "replay",
            csv.to_str().expect("utf-8 path"),
            "--nodes",
            "16",
            "--gpus-per-node",
            "4",
            "--speedup",
            SPEEDUP,
            "--policy",
            "fifo",
            "--json",
        ],
        Duration::from_secs(180),
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "mezz sim replay failed\nstdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let want = reference(&traces, WORKLOAD, "fifo-firstfit");
    eprintln!(
        "replay {WORKLOAD} fifo at {SPEEDUP}x in {:.1}s: {got}",
        started.elapsed().as_secs_f64()
    );
    for key in [
        "avg_jct_s",
        "p99_jct_s",
        "makespan_s",
        "gpu_util",
        "preemptions",
        "jobs",
    ] {
        assert!(got.get(key).is_some(), "no '{key}' in {got}");
    }
    assert_eq!(got["jobs"], want["jobs"]);
    assert_eq!(got["finished"], want["jobs"]);
    assert_eq!(got["preemptions"], 0, "FIFO never preempts");
    let (g, w) = (
        got["avg_jct_s"].as_f64().expect("avg_jct_s"),
        want["avg_jct_s"].as_f64().expect("reference avg_jct_s"),
    );
    assert!(
        (g - w).abs() <= 0.05 * w,
        "average JCT {g:.0} s is not within 5% of the reference simulator's {w:.0} s"
    );
}

#[test]
fn a_bad_csv_is_refused_with_its_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "name,time,gpus,duration\na,0,1,60\nb,10,two,60\n").expect("write");
    let out = mezz(
        &["sim", "replay", csv.to_str().expect("utf-8 path")],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("line 3, column 'gpus'"), "{err}");
}
