//! Jobs: what SubmitJobs, UpdateJob, ControlJob and FireSchedule check
//! before proposing, and what the committed commands store.

use super::*;
use crate::job_store::{DEFAULT_JOBS_KEPT, KILLED, PENDING, RUNNING, SCHEDULED, WAITING};
use mezz_proto::v1::{FireScheduleRequest, JobAttempt, JobRecord, UpdateJobRequest};

/// The Unix time of the harness's clock 0.
const EPOCH: f64 = 1_700_000_000.0;

fn jobs_harness() -> Harness {
    let mut h = Harness::new();
    h.c.set_wall_epoch(EPOCH);
    h
}

fn spec(name: &str, after: &[&str]) -> JobRecord {
    JobRecord {
        name: name.into(),
        spec_json: format!("{{\"name\":\"{name}\",\"command\":\"true\"}}"),
        kind: "command".into(),
        role: "eng".into(),
        after: after.iter().map(|s| s.to_string()).collect(),
        gpus: 1,
        ..Default::default()
    }
}

fn scheduled(name: &str) -> JobRecord {
    JobRecord {
        schedule: "0 3 * * *".into(),
        ..spec(name, &[])
    }
}

impl Harness {
    fn submit(&mut self, jobs: &[JobRecord]) -> Result<Vec<String>, CallError> {
        let r = self.c.submit_jobs(jobs, "alice", self.now);
        self.settle();
        r
    }

    fn job(&self, name: &str) -> JobRecord {
        self.c.jobs().get(name).cloned().expect("the job is stored")
    }

    fn control(&mut self, name: &str, action: &str) -> Result<String, CallError> {
        let r = self.c.control_job(name, action, "bob", self.now);
        self.settle();
        r
    }

    /// The framework's update of `name` to `state`, read at its stored
    /// version, not settled.
    fn progress(&mut self, name: &str, state: &str, attempts: Vec<JobAttempt>) -> UpdateJobRequest {
        let stored = self.job(name);
        UpdateJobRequest {
            expected_version: stored.version,
            job: Some(JobRecord {
                state: state.into(),
                attempts,
                ..stored
            }),
        }
    }
}

fn attempt(number: u32, started_at: f64) -> JobAttempt {
    JobAttempt {
        number,
        task_id: format!("t{number}"),
        started_at,
        ..Default::default()
    }
}

fn invalid(r: Result<Vec<String>, CallError>) -> String {
    match r {
        Err(CallError::Invalid(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn a_submit_is_checked_whole_and_a_refused_one_stores_nothing() {
    let mut h = jobs_harness();
    let m = invalid(h.submit(&[spec("Bad_Name", &[])]));
    assert!(m.contains("'Bad_Name' cannot name a job"), "{m}");
    let m = invalid(h.submit(&[spec(&"a".repeat(64), &[])]));
    assert!(m.contains("cannot name a job"), "{m}");
    let long = JobRecord {
        name: "x".repeat(53),
        ..scheduled("x")
    };
    let m = invalid(h.submit(&[long]));
    assert!(m.contains("at most 52"), "{m}");
    let big = JobRecord {
        spec_json: format!("{{\"x\":\"{}\"}}", "y".repeat(64 * 1024)),
        ..spec("big", &[])
    };
    let m = invalid(h.submit(&[spec("ok", &[]), big]));
    assert!(m.contains("job 'big'") && m.contains("64 KiB"), "{m}");
    let array = JobRecord {
        spec_json: "[1]".into(),
        ..spec("arr", &[])
    };
    assert!(invalid(h.submit(&[array])).contains("must be a JSON object"));
    let no_kind = JobRecord {
        kind: String::new(),
        ..spec("k", &[])
    };
    assert!(invalid(h.submit(&[no_kind])).contains("kind is empty"));
    let odd = JobRecord {
        concurrency: "sometimes".into(),
        ..scheduled("c")
    };
    assert!(invalid(h.submit(&[odd])).contains("forbid, allow, replace"));
    let neg = JobRecord {
        cpus: -1.0,
        ..spec("n", &[])
    };
    assert!(invalid(h.submit(&[neg])).contains("cpus"));
    let m = invalid(h.submit(&[spec("d", &[]), spec("d", &[])]));
    assert!(m.contains("'d' appears twice"), "{m}");
    let many: Vec<JobRecord> = (0..101).map(|i| spec(&format!("j{i}"), &[])).collect();
    assert!(invalid(h.submit(&many)).contains("1 to 100 jobs"));
    assert!(invalid(h.submit(&[])).contains("1 to 100 jobs"));
    assert!(invalid(h.submit(&[spec("me", &["me"])])).contains("cannot wait for itself"));
    match h.submit(&[spec("a", &["nowhere"])]) {
        Err(CallError::NotFound(m)) => assert!(m.contains("'nowhere'"), "{m}"),
        other => panic!("{other:?}"),
    }
    let m = invalid(h.submit(&[spec("a", &["c"]), spec("b", &["a"]), spec("c", &["b"])]));
    assert!(m.contains("cycle"), "{m}");
    assert!(h.c.jobs().is_empty(), "nothing refused was stored");
    assert!(
        h.c.take_effects().is_empty(),
        "nothing refused was proposed"
    );
}

#[test]
fn a_submit_stores_what_the_master_sets() {
    let mut h = jobs_harness();
    h.now = 5_000;
    let names = h
        .submit(&[
            spec("prep", &[]),
            spec("train", &["prep"]),
            scheduled("nightly"),
        ])
        .unwrap();
    assert_eq!(names, ["prep", "train", "nightly"]);
    let prep = h.job("prep");
    assert_eq!(
        (prep.state.as_str(), prep.version, prep.runs, prep.run_start),
        (PENDING, 1, 1, 0)
    );
    assert_eq!(prep.submitted_at, EPOCH + 5.0);
    assert_eq!(prep.principal, "alice");
    assert_eq!(h.job("train").state, WAITING);
    let nightly = h.job("nightly");
    assert_eq!(nightly.state, SCHEDULED);
    assert_eq!(nightly.schedule_from, EPOCH + 5.0);
    assert_eq!(
        (
            nightly.concurrency.as_str(),
            nightly.missed.as_str(),
            nightly.timezone.as_str()
        ),
        ("forbid", "run_once", "UTC")
    );
    // A job that has not ended keeps its name.
    match h.submit(&[spec("train", &[])]) {
        Err(CallError::FailedPrecondition(m)) => assert_eq!(
            m,
            "job 'train' is WAITING: kill it first (`mezz job kill train`) or use another name"
        ),
        other => panic!("{other:?}"),
    }
    // A stored job that has not ended may be named in `after`; a resubmit
    // replaces the stored edges when looking for a cycle.
    h.control("prep", "kill").unwrap();
    let m = invalid(h.submit(&[spec("prep", &["train"])]));
    assert!(m.contains("'prep' → 'train' → 'prep'"), "{m}");
}

#[test]
fn an_ended_job_resubmitted_or_rerun_starts_a_new_run() {
    let mut h = jobs_harness();
    h.submit(&[spec("a", &[])]).unwrap();
    let up = h.progress("a", RUNNING, vec![attempt(1, EPOCH)]);
    h.c.update_job(&up, h.now).unwrap();
    h.settle();
    let up = h.progress("a", "FAILED", vec![attempt(1, EPOCH)]);
    h.c.update_job(&up, h.now).unwrap();
    h.settle();
    let failed = h.job("a");
    assert_eq!((failed.state.as_str(), failed.version), ("FAILED", 3));
    assert!(failed.finished_at > 0.0, "stamped when it ended");
    h.now = 10_000;
    assert_eq!(h.control("a", "rerun").unwrap(), "a");
    let rerun = h.job("a");
    assert_eq!(
        (
            rerun.state.as_str(),
            rerun.runs,
            rerun.run_start,
            rerun.version
        ),
        (PENDING, 2, 1, 4)
    );
    assert_eq!((rerun.finished_at, rerun.submitted_at), (0.0, EPOCH + 10.0));
    assert_eq!(rerun.attempts.len(), 1, "attempts are kept");
    match h.control("a", "rerun") {
        Err(CallError::FailedPrecondition(m)) => {
            assert_eq!(m, "job 'a' is PENDING; only an ended job can be rerun")
        }
        other => panic!("{other:?}"),
    }
    // The current run's attempts change; the earlier ones may not.
    let up = h.progress(
        "a",
        RUNNING,
        vec![attempt(9, EPOCH), attempt(2, EPOCH + 10.0)],
    );
    assert!(
        matches!(h.c.update_job(&up, h.now), Err(CallError::Invalid(m)) if m.contains("earlier runs"))
    );
    h.control("a", "kill").unwrap();
    // A resubmit takes the new spec and keeps the attempts.
    let new = JobRecord {
        cpus: 4.0,
        ..spec("a", &[])
    };
    h.submit(&[new]).unwrap();
    let again = h.job("a");
    assert_eq!((again.runs, again.run_start, again.cpus), (3, 1, 4.0));
    assert_eq!(again.state, PENDING);
}

#[test]
fn a_kill_ends_a_job_at_once_unless_it_runs() {
    let mut h = jobs_harness();
    h.submit(&[
        spec("p", &[]),
        spec("w", &["p"]),
        scheduled("s"),
        spec("r", &[]),
    ])
    .unwrap();
    let up = h.progress("r", RUNNING, vec![attempt(1, EPOCH)]);
    h.c.update_job(&up, h.now).unwrap();
    h.settle();
    h.now = 3_000;
    for name in ["p", "w", "s"] {
        h.control(name, "kill").unwrap();
        let j = h.job(name);
        assert_eq!(j.state, KILLED, "{name}");
        assert_eq!(j.finished_at, EPOCH + 3.0);
        assert_eq!(j.reason, "killed by bob");
        assert_eq!(j.version, 2);
    }
    h.control("r", "kill").unwrap();
    let r = h.job("r");
    assert_eq!(
        (r.state.as_str(), r.kill_requested, r.version),
        (RUNNING, true, 3)
    );
    match h.control("p", "kill") {
        Err(CallError::FailedPrecondition(m)) => {
            assert_eq!(m, "job 'p' has already ended (KILLED)")
        }
        other => panic!("{other:?}"),
    }
    match h.control("p", "stop") {
        Err(CallError::Invalid(m)) => assert!(m.contains("kill, rerun, pause or resume"), "{m}"),
        other => panic!("{other:?}"),
    }
    match h.control("ghost", "kill") {
        Err(CallError::NotFound(m)) => {
            assert_eq!(m, "no job 'ghost'; `mezz job list` shows the jobs")
        }
        other => panic!("{other:?}"),
    }
    // The framework records the end of a kill it was asked for.
    let up = h.progress("r", KILLED, vec![attempt(1, EPOCH)]);
    h.c.update_job(&up, h.now).unwrap();
    h.settle();
    assert_eq!(h.job("r").finished_at, EPOCH + 3.0);
    match h.c.update_job(&up, h.now) {
        Err(CallError::FailedPrecondition(m)) => assert_eq!(m, "job 'r' has ended (KILLED)"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_update_is_a_compare_and_set_that_waits_for_changes_in_flight() {
    let mut h = jobs_harness();
    h.submit(&[spec("a", &[]), scheduled("s")]).unwrap();
    let first = h.progress("a", RUNNING, vec![attempt(1, EPOCH)]);
    let second = h.progress("a", RUNNING, vec![attempt(1, EPOCH), attempt(2, EPOCH)]);
    h.c.update_job(&first, h.now).unwrap();
    // Read at the same version, while the first is not applied yet.
    match h.c.update_job(&second, h.now) {
        Err(CallError::Aborted(m)) => assert_eq!(
            m,
            "job 'a' changed since it was read (now version 1); read it again"
        ),
        other => panic!("{other:?}"),
    }
    h.settle();
    assert_eq!(h.job("a").version, 2);
    // Applied: the marker is gone, and the stale version is what refuses.
    match h.c.update_job(&second, h.now) {
        Err(CallError::Aborted(m)) => assert!(m.contains("now version 2"), "{m}"),
        other => panic!("{other:?}"),
    }
    let bad = h.progress("a", SCHEDULED, vec![]);
    assert!(matches!(
        h.c.update_job(&bad, h.now),
        Err(CallError::Invalid(_))
    ));
    let bad = h.progress("a", "DONE", vec![]);
    assert!(
        matches!(h.c.update_job(&bad, h.now), Err(CallError::Invalid(m)) if m.contains("'DONE'"))
    );
    let sched = h.progress("s", RUNNING, vec![]);
    assert!(matches!(
        h.c.update_job(&sched, h.now),
        Err(CallError::FailedPrecondition(_))
    ));
    let too_many = h.progress(
        "a",
        RUNNING,
        (0..10_001).map(|n| attempt(n, EPOCH)).collect(),
    );
    assert!(
        matches!(h.c.update_job(&too_many, h.now), Err(CallError::Invalid(m)) if m.contains("10000"))
    );
    // A kill in flight also makes an update wait.
    h.c.control_job("a", "kill", "bob", h.now).unwrap();
    let late = h.progress("a", "SUCCEEDED", vec![attempt(1, EPOCH)]);
    assert!(matches!(
        h.c.update_job(&late, h.now),
        Err(CallError::Aborted(_))
    ));
    h.settle();
    assert!(h.job("a").kill_requested);
    // A new leader (a new state machine over the registry) has nothing in
    // flight.
    h.c.control_job("a", "kill", "bob", h.now).unwrap();
    let registry = h.c.registry().clone();
    let mut next = Cluster::new("m2".into(), Timeouts::default(), registry, h.now);
    let late = UpdateJobRequest {
        expected_version: h.job("a").version,
        ..late
    };
    assert_eq!(next.update_job(&late, h.now), Ok("a".to_string()));
}

#[test]
fn a_fire_is_made_once_and_replaces_the_runs_it_names() {
    let mut h = jobs_harness();
    h.submit(&[scheduled("s")]).unwrap();
    let t1 = EPOCH + 3600.0;
    let fire = |at: f64, replace: &[&str]| FireScheduleRequest {
        name: "s".into(),
        fire_at: at,
        run: Some(JobRecord {
            name: format!("s.{}", at as u64),
            ..spec("x", &[])
        }),
        replace: replace.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(h.c.fire_schedule(&fire(t1, &[]), h.now), Ok("s".into()));
    h.settle();
    let run = h.job(&format!("s.{}", t1 as u64));
    assert_eq!(
        (
            run.state.as_str(),
            run.parent.as_str(),
            run.version,
            run.runs
        ),
        (PENDING, "s", 1, 1)
    );
    assert_eq!(
        run.principal, "alice",
        "a run is its schedule's submitter's"
    );
    let s = h.job("s");
    assert_eq!((s.last_fired_at, s.version), (t1, 2));
    // Told again (a retry across a failover): nothing is proposed.
    assert_eq!(h.c.fire_schedule(&fire(t1, &[]), h.now), Ok("s".into()));
    assert!(h.c.take_effects().is_empty());
    assert_eq!(h.job("s").version, 2);
    // A later fire replaces the earlier run.
    let t2 = t1 + 3600.0;
    let old = format!("s.{}", t1 as u64);
    h.c.fire_schedule(&fire(t2, &[old.as_str()]), h.now)
        .unwrap();
    h.settle();
    let replaced = h.job(&old);
    assert_eq!(replaced.state, KILLED);
    assert!(
        replaced.reason.contains("replaced by"),
        "{}",
        replaced.reason
    );
    assert_eq!(h.job(&format!("s.{}", t2 as u64)).state, PENDING);
    // A skipped fire moves the schedule on all the same.
    let skip = FireScheduleRequest {
        run: None,
        ..fire(t2 + 60.0, &[])
    };
    h.c.fire_schedule(&skip, h.now).unwrap();
    h.settle();
    assert_eq!(h.job("s").last_fired_at, t2 + 60.0);
    // The run's name is the schedule's and the fire time's.
    let mut wrong = fire(t2 + 120.0, &[]);
    wrong.run.as_mut().unwrap().name = "s.1".into();
    assert!(
        matches!(h.c.fire_schedule(&wrong, h.now), Err(CallError::Invalid(m)) if m.contains("must be named"))
    );
    assert!(matches!(
        h.c.fire_schedule(&fire(t2 + 120.0, &["s"]), h.now),
        Err(CallError::Invalid(m)) if m.contains("not a run of 's'")
    ));
    h.control("s", "pause").unwrap();
    assert!(h.job("s").paused);
    match h.c.fire_schedule(&fire(t2 + 120.0, &[]), h.now) {
        Err(CallError::FailedPrecondition(m)) => {
            assert_eq!(m, "job 's' is paused; `mezz job resume s`")
        }
        other => panic!("{other:?}"),
    }
    h.control("s", "resume").unwrap();
    assert!(!h.job("s").paused);
    match h.control(&old, "pause") {
        Err(CallError::FailedPrecondition(m)) => assert!(m.contains("has no schedule"), "{m}"),
        other => panic!("{other:?}"),
    }
    h.control("s", "kill").unwrap();
    assert!(matches!(
        h.c.fire_schedule(&fire(t2 + 180.0, &[]), h.now),
        Err(CallError::FailedPrecondition(m)) if m.contains("not SCHEDULED")
    ));
}

#[test]
fn ended_jobs_beyond_the_bound_are_dropped_oldest_first() {
    let mut h = jobs_harness();
    assert_eq!(h.c.jobs().kept(), DEFAULT_JOBS_KEPT);
    h.c.set_jobs_kept(2);
    h.submit(&[
        spec("a", &[]),
        spec("b", &[]),
        spec("c", &[]),
        spec("live", &[]),
    ])
    .unwrap();
    for (i, name) in ["b", "a", "c"].into_iter().enumerate() {
        h.now = 1000 * (i as u64 + 1);
        h.control(name, "kill").unwrap();
    }
    let kept: Vec<String> = h.c.jobs().iter().map(|j| j.name.clone()).collect();
    assert_eq!(kept, ["a", "c", "live"], "b ended first and went");
    // A restore keeps this master's bound, not the snapshot's.
    let snap = h.c.registry().to_snapshot();
    h.c.restore(Registry::from_snapshot(&snap));
    assert_eq!(h.c.jobs().kept(), 2);
}

#[test]
fn a_job_no_agent_could_ever_hold_is_refused_naming_the_largest() {
    let mut h = jobs_harness();
    // No agent yet: agents may still join, so nothing is refused.
    assert!(h.submit(&[spec("early", &[])]).is_ok());
    h.register_agent(7, "a1", "cpus:4;mem:1024", vec![]);
    h.settle();
    let err = h.submit(&[spec("needs-gpu", &[])]).unwrap_err();
    let CallError::Invalid(msg) = err else {
        panic!("not an invalid-argument refusal: {err:?}")
    };
    assert!(
        msg.contains("job 'needs-gpu' can never run")
            && msg.contains("1 GPU(s)")
            && msg.contains("the only agent, host-a1 (127.0.0.1:1), has cpus:4;mem:1024"),
        "{msg}"
    );
    assert!(h.c.jobs().get("needs-gpu").is_none(), "nothing stored");
    let cpu_only = JobRecord {
        gpus: 0,
        cpus: 2.0,
        mem: 512.0,
        role: "*".into(),
        ..spec("fits", &[])
    };
    assert!(h.submit(&[cpu_only]).is_ok());
}
