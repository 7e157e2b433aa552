use super::*;
use crate::spec::Overrides;
use TaskState::*;

fn job(o: Overrides) -> Job {
    let o = Overrides {
        name: Some("j".into()),
        command: vec!["t".into()],
        ..o
    };
    Job::new(JobSpec::build(None, o, |n| Ok(crate::Sizes::builtin().get(n)?)).expect("valid"))
}

fn run_all(j: &mut Job, now: Instant) {
    j.launched(now);
    for r in j.spec().replica_ids() {
        let id = j.task_id(r);
        assert!(j.update(&id, Running, "", now).is_empty());
    }
    assert!(j.all_running());
}

#[test]
fn without_a_chief_all_workers_must_finish() {
    let mut j = job(Overrides {
        workers: Some(2),
        ..Default::default()
    });
    let now = Instant::now();
    run_all(&mut j, now);
    assert!(j.update("j.worker.1.0", Finished, "", now).is_empty());
    assert_eq!(
        j.update("j.worker.0.0", Finished, "", now),
        vec![Action::Finish(Outcome::Succeeded)]
    );
    assert_eq!(j.phase(), &Phase::Done(Outcome::Succeeded));
}

#[test]
fn a_failure_without_restarts_kills_the_rest_and_fails() {
    let mut j = job(Overrides {
        workers: Some(2),
        ps: Some(1),
        ..Default::default()
    });
    let now = Instant::now();
    run_all(&mut j, now);
    let a = j.update("j.worker.0.0", Failed, "exited with 1", now);
    assert_eq!(
        a,
        vec![Action::Kill(vec!["j.worker.1.0".into(), "j.ps.0.0".into()])]
    );
    assert!(j.update("j.ps.0.0", Killed, "", now).is_empty());
    let a = j.update("j.worker.1.0", Killed, "", now);
    assert_eq!(
        a,
        vec![Action::Finish(Outcome::Failed(
            "worker/0 ended FAILED: exited with 1".into()
        ))]
    );
}

#[test]
fn on_failure_restarts_the_whole_gang_with_backoff_then_gives_up() {
    let mut j = job(Overrides {
        workers: Some(2),
        restart: Some("on-failure:1".parse().expect("valid")),
        ..Default::default()
    });
    let t0 = Instant::now();
    run_all(&mut j, t0);
    j.update("j.worker.1.0", Failed, "", t0);
    let a = j.update("j.worker.0.0", Killed, "", t0);
    let Some(Action::RestartAt { at, restart: 1, .. }) = a.first().cloned() else {
        panic!("{a:?}")
    };
    assert_eq!(at, t0 + Duration::from_secs(1));
    assert!(!j.restart_due(t0));
    // Late news of the old attempt changes nothing.
    assert!(j.update("j.worker.0.0", Failed, "", at).is_empty());
    assert!(j.restart_due(at));
    assert_eq!((j.attempt(), j.phase()), (1, &Phase::Placing));
    assert_eq!(
        j.task_id(ReplicaId {
            kind: ReplicaType::Worker,
            index: 0
        }),
        "j.worker.0.1"
    );
    run_all(&mut j, at);
    let a = j.update("j.worker.0.1", Lost, "agent gone", at);
    assert_eq!(a, vec![Action::Kill(vec!["j.worker.1.1".into()])]);
    let a = j.update("j.worker.1.1", Killed, "", at);
    assert!(matches!(&a[..], [Action::Finish(Outcome::Failed(m))] if m.contains("LOST")));
}

#[test]
fn interrupts_and_overdue_stops() {
    let mut j = job(Overrides {
        workers: Some(1),
        ..Default::default()
    });
    let t0 = Instant::now();
    assert_eq!(
        j.interrupt(t0),
        vec![Action::Finish(Outcome::Failed("interrupted".into()))]
    );
    let mut j = job(Overrides {
        workers: Some(2),
        ..Default::default()
    });
    run_all(&mut j, t0);
    assert_eq!(
        j.interrupt(t0),
        vec![Action::Kill(vec![
            "j.worker.0.0".into(),
            "j.worker.1.0".into()
        ])]
    );
    assert!(j.stop_overdue(t0, Duration::from_secs(5)).is_empty());
    let late = t0 + Duration::from_secs(5);
    assert_eq!(
        j.stop_overdue(late, Duration::from_secs(5)),
        vec![Action::Finish(Outcome::Failed("interrupted".into()))]
    );
}

#[test]
fn the_chief_decides_and_ps_finishing_early_is_fine() {
    let mut j = job(Overrides {
        chief: true,
        workers: Some(1),
        ps: Some(1),
        ..Default::default()
    });
    let now = Instant::now();
    run_all(&mut j, now);
    assert!(j.update("j.worker.0.0", Finished, "", now).is_empty());
    assert!(j.update("j.ps.0.0", Finished, "", now).is_empty());
    assert!(j.update("other.chief.0.0", Finished, "", now).is_empty());
    assert_eq!(
        j.update("j.chief.0.0", Finished, "", now),
        vec![Action::Finish(Outcome::Succeeded)]
    );
}

#[test]
fn a_refused_placement_fails_the_job_before_launch_only() {
    let mut j = job(Overrides {
        workers: Some(2),
        ..Default::default()
    });
    let why = "replicas worker/0 and worker/1 would both listen on h:1".to_string();
    assert_eq!(
        j.refuse(why.clone()),
        vec![Action::Finish(Outcome::Failed(why.clone()))]
    );
    assert_eq!(j.phase(), &Phase::Done(Outcome::Failed(why.clone())));

    let mut running = job(Overrides::default());
    run_all(&mut running, Instant::now());
    assert!(running.refuse(why).is_empty());
    assert_eq!(running.phase(), &Phase::Running);
}

fn failed_with(actions: &[Action]) -> String {
    match actions {
        [.., Action::Finish(Outcome::Failed(why))] => why.clone(),
        other => panic!("the job should fail: {other:?}"),
    }
}

#[test]
fn a_start_deadline_fails_a_gang_not_placed_in_time_naming_what_it_lacked() {
    let mut j = job(Overrides {
        workers: Some(4),
        start_deadline: Some(Duration::from_secs(10)),
        ..Default::default()
    });
    let t0 = Instant::now();
    j.waiting_since(t0);
    assert_eq!(j.next_deadline(), Some(t0 + Duration::from_secs(10)));
    assert!(j
        .check_deadlines(t0 + Duration::from_secs(9), "x")
        .is_empty());
    let a = j.check_deadlines(t0 + Duration::from_secs(10), "1 × worker");
    let why = failed_with(&a);
    assert!(why.starts_with("DEADLINE_NOT_MET"), "{why}");
    assert!(
        why.contains("10s") && why.ends_with("waited for 1 × worker"),
        "{why}"
    );
    assert!(matches!(j.phase(), Phase::Done(_)));
    assert_eq!(j.next_deadline(), None);
}

#[test]
fn a_start_deadline_counts_again_for_each_attempt_and_not_once_placed() {
    let mut j = job(Overrides {
        workers: Some(1),
        restart: Some("on-failure:1".parse().expect("valid")),
        start_deadline: Some(Duration::from_secs(10)),
        ..Default::default()
    });
    let t0 = Instant::now();
    j.waiting_since(t0);
    run_all(&mut j, t0 + Duration::from_secs(5));
    // Running long past the start deadline is fine.
    assert!(j
        .check_deadlines(t0 + Duration::from_secs(60), "")
        .is_empty());
    let a = j.update("j.worker.0.0", Failed, "", t0 + Duration::from_secs(60));
    let Some(Action::RestartAt { at, .. }) = a.last().cloned() else {
        panic!("a restart: {a:?}")
    };
    assert!(j.restart_due(at));
    assert_eq!(j.next_deadline(), Some(at + Duration::from_secs(10)));
    assert!(j
        .check_deadlines(at + Duration::from_secs(9), "")
        .is_empty());
    let why = failed_with(&j.check_deadlines(at + Duration::from_secs(10), ""));
    assert!(why.contains("attempt 1 was not placed"), "{why}");
}

#[test]
fn a_run_deadline_kills_the_gang_and_fails_the_job_without_a_restart() {
    let mut j = job(Overrides {
        workers: Some(2),
        restart: Some("on-failure:3".parse().expect("valid")),
        run_deadline: Some(Duration::from_secs(30)),
        ..Default::default()
    });
    let t0 = Instant::now();
    j.waiting_since(t0);
    // Waiting to be placed does not count against the run deadline.
    assert_eq!(
        j.run_time_left(t0 + Duration::from_secs(100)),
        Some(Duration::from_secs(30))
    );
    let start = t0 + Duration::from_secs(100);
    run_all(&mut j, start);
    assert_eq!(j.next_deadline(), Some(start + Duration::from_secs(30)));
    assert_eq!(
        j.run_time_left(start + Duration::from_secs(10)),
        Some(Duration::from_secs(20))
    );
    assert!(j
        .check_deadlines(start + Duration::from_secs(29), "")
        .is_empty());
    let end = start + Duration::from_secs(30);
    assert_eq!(
        j.check_deadlines(end, ""),
        vec![Action::Kill(vec![
            "j.worker.0.0".into(),
            "j.worker.1.0".into()
        ])]
    );
    // The kills' KILLED updates end the job; they start no restart.
    assert!(j.update("j.worker.0.0", Killed, "", end).is_empty());
    let why = failed_with(&j.update("j.worker.1.0", Killed, "", end));
    assert!(
        why.starts_with("DEADLINE_EXCEEDED") && why.contains("30s"),
        "{why}"
    );
}

#[test]
fn a_run_deadline_spans_restarts() {
    let mut j = job(Overrides {
        workers: Some(1),
        restart: Some("on-failure:3".parse().expect("valid")),
        run_deadline: Some(Duration::from_secs(30)),
        ..Default::default()
    });
    let t0 = Instant::now();
    run_all(&mut j, t0);
    let a = j.update("j.worker.0.0", Failed, "", t0 + Duration::from_secs(29));
    assert!(matches!(a.last(), Some(Action::RestartAt { .. })), "{a:?}");
    // Backing off when the deadline passes: over at once, nothing to kill.
    let a = j.check_deadlines(t0 + Duration::from_secs(30), "");
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(failed_with(&a).starts_with("DEADLINE_EXCEEDED"));
}
