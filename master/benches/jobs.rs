//! `ListJobs` at 100,000 stored jobs (the masters' replicated job store,
//! no processes): 90,000 ended, 5,000 pending or waiting, 4,000 running,
//! 1,000 runs of 10 schedules, each job with three attempts. Times the
//! listings the jobs framework and `mezz job list` ask for, one with an
//! ACL-style role filter, the `/jobs` page over the default listing, and
//! one update applied (the cost of keeping the indexes), and fails if a
//! default listing takes 50 ms or more.
//!
//! `cargo bench -p mezz-master --bench jobs`; figures in BENCHMARKS.md.

use std::time::{Duration, Instant};

use mezz_master::api::page::{self, Ctx, JobFilter};
use mezz_master::job_store::JobStore;
use mezz_proto::v1::replicated_command::Command;
use mezz_proto::v1::{JobAttempt, JobRecord, JobUpdate, ListJobsRequest};

const JOBS: usize = 100_000;
const SCHEDULES: usize = 10;

fn seed() -> Vec<JobRecord> {
    (0..JOBS)
        .map(|i| {
            let submitted_at = 1_700_000_000.0 + i as f64;
            let (state, parent) = match i % 100 {
                0..=89 => (["SUCCEEDED", "FAILED", "KILLED"][i % 3], String::new()),
                90..=94 => (["PENDING", "WAITING"][i % 2], String::new()),
                95..=98 => ("RUNNING", String::new()),
                _ => ("PENDING", format!("sched-{}", i / 100 % SCHEDULES)),
            };
            let ended = !matches!(state, "PENDING" | "WAITING" | "RUNNING");
            JobRecord {
                name: format!("job-{i:06}"),
                spec_json: format!("{{\"name\":\"job-{i:06}\",\"command\":\"python train.py\"}}"),
                state: state.into(),
                submitted_at,
                finished_at: if ended { submitted_at + 60.0 } else { 0.0 },
                attempts: (1..=3)
                    .map(|n| JobAttempt {
                        number: n,
                        task_id: format!("job-{i:06}-{n}"),
                        agent_id: format!("agent-{:04}", i % 1000),
                        started_at: submitted_at + f64::from(n),
                        ended_at: submitted_at + f64::from(n) + 10.0,
                        ..Default::default()
                    })
                    .collect(),
                runs: 1,
                version: 4,
                kind: "command".into(),
                role: format!("team-{}", i % 4),
                parent,
                gpus: (i % 3) as u32,
                ..Default::default()
            }
        })
        .collect()
}

fn time(name: &str, runs: usize, mut f: impl FnMut() -> u64) -> Duration {
    let mut samples = Vec::with_capacity(runs);
    let mut out = 0;
    for _ in 0..runs {
        let t = Instant::now();
        out = std::hint::black_box(f());
        samples.push(t.elapsed());
    }
    samples.sort();
    let median = samples[runs / 2];
    println!(
        "{name:<44} median {:>8.3} ms  max {:>8.3} ms  ({out})",
        median.as_secs_f64() * 1e3,
        samples[runs - 1].as_secs_f64() * 1e3,
    );
    median
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs one quick pass.
    let runs = if std::env::args().any(|a| a == "--bench") {
        21
    } else {
        1
    };
    let jobs = seed();
    let t = Instant::now();
    let mut store = JobStore::from_snapshot(&jobs, JOBS);
    println!(
        "job store, {JOBS} jobs, {runs} run(s); restored from a snapshot in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let list = |q: ListJobsRequest| {
        let store = &store;
        move || {
            let l = store.list(&q, None).expect("a valid query");
            l.jobs.len() as u64 * 1_000_000 + l.matched
        }
    };
    let default = time(
        "ListJobs {} (newest 1000)",
        runs,
        list(ListJobsRequest::default()),
    );
    time(
        "ListJobs active (all 10000)",
        runs,
        list(ListJobsRequest {
            active: true,
            limit: 100_000,
            ..Default::default()
        }),
    );
    time(
        "ListJobs active, summary",
        runs,
        list(ListJobsRequest {
            active: true,
            limit: 100_000,
            summary: true,
            ..Default::default()
        }),
    );
    time(
        "ListJobs states=FAILED,KILLED",
        runs,
        list(ListJobsRequest {
            states: vec!["FAILED".into(), "KILLED".into()],
            ..Default::default()
        }),
    );
    time(
        "ListJobs since (last 5000 s)",
        runs,
        list(ListJobsRequest {
            since: 1_700_000_000.0 + (JOBS - 5000) as f64,
            ..Default::default()
        }),
    );
    time(
        "ListJobs parent=sched-3",
        runs,
        list(ListJobsRequest {
            parent: "sched-3".into(),
            ..Default::default()
        }),
    );
    time(
        "ListJobs limit=100000 (everything)",
        runs,
        list(ListJobsRequest {
            limit: 100_000,
            ..Default::default()
        }),
    );
    time("ListJobs {} viewing one role of four", runs, || {
        let may = |j: &JobRecord| j.role == "team-1";
        let l = store
            .list(&ListJobsRequest::default(), Some(&may))
            .expect("a valid query");
        l.jobs.len() as u64 * 1_000_000 + l.matched
    });
    let ctx = Ctx {
        leads: true,
        leader: None,
        now: 1_700_000_000.0 + JOBS as f64,
    };
    time("/jobs page (newest 1000)", runs, || {
        let l = store
            .list(&ListJobsRequest::default(), None)
            .expect("a valid query");
        page::jobs(&l, &ctx, &JobFilter::default()).len() as u64
    });
    let mut version = 4;
    time("apply one UpdateJob (indexes kept)", runs, || {
        let running = "job-000095";
        store.apply(&Command::JobUpdated(JobUpdate {
            job: Some(JobRecord {
                name: running.into(),
                state: "RUNNING".into(),
                ..Default::default()
            }),
            expected_version: version,
            at: 1.0,
        }));
        version += 1;
        store.get(running).map_or(0, |j| j.version)
    });
    assert!(
        default < Duration::from_millis(50),
        "the default listing took {default:?} at {JOBS} jobs; the target is under 50 ms"
    );
}
