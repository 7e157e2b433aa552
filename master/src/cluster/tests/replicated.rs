//! What the state machine replicates and shows: roles and quotas, the
//! history of finished tasks, GPU reserves, and times taken from inputs.

use super::*;

#[test]
fn offers_of_several_agents_are_declined_in_one_call() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:1;mem:128", vec![]);
    h.register_agent(2, "a2", "cpus:1;mem:128", vec![]);
    let (fid, e) = h.subscribe(10, "", 60.0);
    let o = offers(&e);
    assert_eq!(o.len(), 2);
    let ids: Vec<String> = o.iter().map(|o| o.id.clone()).collect();
    h.c.decline(&fid, &ids, Some(2.0), h.now).unwrap();
    assert_eq!(h.c.outstanding_offers().count(), 0, "both given back");
    assert!(offers(&h.settle()).is_empty(), "both agents filtered");
    assert_eq!(h.c.counters().offers_declined, 2);
    let again = offers(&h.tick(2100));
    assert_eq!(again.len(), 2, "offered again after refuse-seconds");
    // One stale id among valid ones does not keep the valid one held.
    let ids = vec!["gone".to_string(), again[0].id.clone()];
    h.c.decline(&fid, &ids, None, h.now).unwrap();
    assert_eq!(h.c.outstanding_offers().count(), 1);
    assert!(matches!(
        h.c.decline(&fid, &["gone".to_string()], None, h.now),
        Err(CallError::NotFound(_))
    ));
}

#[test]
fn framework_roles_are_validated() {
    let mut h = Harness::new();
    for bad in ["../<script>", "eng/", "a b", "-x"] {
        let err =
            h.c.subscribe(
                1,
                mezz_proto::PROTOCOL_VERSION,
                FrameworkInfo {
                    name: "x".into(),
                    role: bad.into(),
                    ..Default::default()
                },
                h.now,
            )
            .unwrap_err();
        assert!(
            matches!(&err, CallError::Invalid(m) if m.contains("framework.role")),
            "{bad}: {err}"
        );
    }
    assert!(h.c.set_weight("../x", 2.0).is_err());
    assert!(h.c.set_quota("a//b", vec![], vec![]).is_err());
    assert!(h.take_effects_is_empty());
}

impl Harness {
    fn take_effects_is_empty(&mut self) -> bool {
        self.c.take_effects().is_empty()
    }
}

#[test]
fn finished_tasks_are_replicated_with_their_framework_times_and_history() {
    let mut h = Harness::new();
    let fid = a1_runs_t1(&mut h);
    let launched = h.c.tasks[&(FrameworkId(fid.clone()), TaskId::from("t1"))].launched_at;
    h.update(1, agent_status("a1", &fid, "t1", TaskState::Finished, "u2"));
    h.settle();
    assert_eq!(h.c.registry().finished.len(), 1);
    let rec = &h.c.registry().finished[0];
    assert_eq!(rec.framework_name, "test");
    assert_eq!(rec.launched_at, launched);
    assert!(
        rec.task
            .as_ref()
            .and_then(|t| t.command.as_ref())
            .is_some_and(|c| c.environment.is_empty()),
        "no environment in the history"
    );
    assert_eq!(h.c.completed.len(), 1, "not added twice when applied");
    // Another leader (a fresh state machine on the same registry) shows the
    // same finished task, and so does one restored from a snapshot.
    let view = |c: &Cluster| {
        let mut v = c.view(true, vec![], String::new(), 0.0).tasks;
        for t in &mut v {
            t.agent_address.clear();
            t.hostname.clear();
        }
        v
    };
    let before = view(&h.c);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].state, "FINISHED");
    let states: Vec<&str> = before[0].history.iter().map(|c| c.state.as_str()).collect();
    assert_eq!(states, ["STAGING", "RUNNING", "FINISHED"]);
    let other = Cluster::new("m2".into(), Timeouts::default(), h.c.registry().clone(), 0);
    assert_eq!(view(&other), before);
    let snap = Registry::from_snapshot(&h.c.registry().to_snapshot());
    let restored = Cluster::new("m3".into(), Timeouts::default(), snap, 0);
    assert_eq!(view(&restored), before);
    // A follower applying the command builds the same list.
    let mut follower = Cluster::new("m4".into(), Timeouts::default(), Registry::default(), 0);
    let batch = mezz_proto::v1::FinishedTasks {
        tasks: h.c.registry().finished.iter().cloned().collect(),
    };
    follower.apply(
        &ReplicatedCommand {
            command: Some(mezz_proto::v1::replicated_command::Command::TasksFinished(
                batch,
            )),
        },
        0,
    );
    assert_eq!(view(&follower), before);
}

#[test]
fn tasks_ending_together_are_replicated_in_one_bounded_command() {
    let mut h = Harness::new();
    h.c.set_finished_kept(3);
    h.register_agent(1, "a1", "cpus:8;mem:1024", vec![]);
    let (fid, e) = h.subscribe(10, "", 60.0);
    let o = offers(&e);
    let tasks = (0..5).map(|i| task(&format!("t{i}"), "cpus:1")).collect();
    launch(&mut h, &fid, &o[0], tasks);
    for i in 0..5 {
        h.update(
            1,
            agent_status(
                "a1",
                &fid,
                &format!("t{i}"),
                TaskState::Finished,
                &format!("u{i}"),
            ),
        );
    }
    let proposals: Vec<usize> =
        h.c.take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Propose(ReplicatedCommand {
                    command: Some(mezz_proto::v1::replicated_command::Command::TasksFinished(b)),
                }) => Some(b.tasks.len()),
                _ => None,
            })
            .collect();
    assert_eq!(proposals, [3], "one command with the newest three");
    assert_eq!(h.c.completed.len(), 3);
}

#[test]
fn a_gpu_agents_reserve_is_kept_from_cpu_only_frameworks_and_shown_in_the_view() {
    let mut h = Harness::new();
    h.c.agent_register(
        1,
        RegisterAgent {
            protocol_version: mezz_proto::PROTOCOL_VERSION,
            agent: Some(AgentInfo {
                id: "a1".into(),
                hostname: "gpu-box".into(),
                address: "127.0.0.1:1".into(),
                resources: Resources::parse("cpus:8;mem:1000;gpus:{g0,g1}")
                    .unwrap()
                    .to_proto(),
                gpu_reserve: Resources::parse("cpus:1;mem:100").unwrap().to_proto(),
                ..Default::default()
            }),
            tasks: vec![],
            frameworks: vec![],
            secret: secret_for("a1"),
        },
        h.now,
    );
    h.settle();
    let (_, effects) = h.subscribe(100, "", 60.0);
    let got = offers(&effects);
    assert_eq!(got.len(), 1, "{got:?}");
    let offered = Resources::from_proto(&got[0].resources).unwrap();
    assert_eq!(offered.to_string(), "cpus:6;mem:800");
    let view = h.c.view(false, vec![], String::new(), 0.0);
    let agent = &view.agents[0];
    assert_eq!(agent.idle_gpus, 2.0);
    assert_eq!(
        agent.held_for_gpus,
        [("cpus".to_string(), 2.0), ("mem".to_string(), 200.0)].into()
    );
}

#[test]
fn wall_clock_times_come_from_the_inputs_not_a_clock() {
    let mut h = Harness::new();
    h.c.set_wall_epoch(1_700_000_000.0);
    h.now = 2_500;
    h.register_agent(1, "a1", "cpus:2;mem:1024", vec![]);
    h.now = 4_000;
    let (fid, _) = h.subscribe(10, "", 60.0);
    let view = h.c.view(false, vec![], String::new(), 0.0);
    assert_eq!(view.agents[0].registered_at, 1_700_000_002.5);
    assert_eq!(view.agents[0].last_seen, 1_700_000_002.5);
    let fw = view.frameworks.iter().find(|f| f.id == fid).unwrap();
    assert_eq!(fw.registered_at, 1_700_000_004.0);
    // The same inputs give the same record, however late they are replayed.
    let again = h.c.view(false, vec![], String::new(), 0.0);
    assert_eq!(again.agents[0].registered_at, view.agents[0].registered_at);
}
