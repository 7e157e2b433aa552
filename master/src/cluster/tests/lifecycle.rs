//! A task's life through the state machine: offers, launches, status
//! updates and acknowledgements, declines, agents and frameworks that go
//! away and come back, reconciliation, and failover.

use super::*;

#[test]
fn register_subscribe_offer_launch_finish_ack() {
    let mut h = Harness::new();
    let e = h.register_agent(1, "a1", "cpus:2;mem:1024", vec![]);
    assert!(matches!(
        &e[0],
        Effect::ToAgent(
            1,
            MasterMessage {
                message: Some(M::Registered(_))
            }
        )
    ));
    let (fid, e) = h.subscribe(10, "", 60.0);
    let o = offers(&e);
    assert_eq!(o.len(), 1);
    assert_eq!(
        Resources::from_proto(&o[0].resources)
            .unwrap()
            .scalar("cpus"),
        2.0
    );

    let e = launch(&mut h, &fid, &o[0], vec![task("t1", "cpus:0.5;mem:64")]);
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::ToAgent(
            1,
            MasterMessage {
                message: Some(M::Launch(_))
            }
        )
    )));
    // The rest of the offer is filtered for the default refuse time.
    assert!(offers(&e).is_empty());

    h.update(1, agent_status("a1", &fid, "t1", TaskState::Running, "u1"));
    h.update(1, agent_status("a1", &fid, "t1", TaskState::Finished, "u2"));
    let e = h.settle();
    let u = updates(&e);
    assert_eq!(
        u.iter().map(|s| s.state()).collect::<Vec<_>>(),
        vec![TaskState::Running, TaskState::Finished]
    );
    assert!(h.c.tasks.is_empty());
    assert_eq!(h.c.completed.len(), 1);
    assert!(h.c.agents[&AgentId::from("a1")].used.is_empty());

    h.c.acknowledge(&fid, "a1", "t1", "u2", h.now).unwrap();
    let e = h.settle();
    assert!(e.iter().any(|e| matches!(e, Effect::ToAgent(1, MasterMessage { message: Some(M::Ack(a)) }) if a.uuid == "u2")));
}

#[test]
fn invalid_tasks_get_error_updates_naming_the_problem() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:1;mem:128", vec![]);
    let (fid, e) = h.subscribe(10, "", 60.0);
    let o = offers(&e);
    let mut no_cmd = task("t2", "cpus:0.1");
    no_cmd.command = None;
    let mut bad_url = task("t4", "cpus:0.1");
    bad_url
        .labels
        .insert("url".into(), "data:text/html,x".into());
    let e = launch(
        &mut h,
        &fid,
        &o[0],
        vec![
            task("t1", "cpus:4"),
            no_cmd,
            task("bad/id", "cpus:0.1"),
            bad_url,
        ],
    );
    let u = updates(&e);
    assert_eq!(u.len(), 4);
    assert!(u.iter().all(|s| s.state() == TaskState::Error));
    assert!(u[0].message.contains("needs cpus:4"), "{}", u[0].message);
    assert!(u[1].message.contains("no command"), "{}", u[1].message);
    assert!(u[2].message.contains("'/'"), "{}", u[2].message);
    assert!(u[3].message.contains("label 'url'"), "{}", u[3].message);
    // A stale offer id drops the task.
    let e = launch(&mut h, &fid, &o[0], vec![task("t3", "cpus:0.1")]);
    assert_eq!(updates(&e)[0].state(), TaskState::Dropped);
}

#[test]
fn decline_filters_until_refuse_seconds_pass() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:1;mem:128", vec![]);
    let (fid, e) = h.subscribe(10, "", 60.0);
    let o = offers(&e);
    h.c.decline(&fid, &[o[0].id.clone()], Some(2.0), h.now)
        .unwrap();
    assert!(offers(&h.settle()).is_empty());
    assert!(offers(&h.tick(1000)).is_empty());
    assert_eq!(offers(&h.tick(1100)).len(), 1);
    let _ = Filters::default();
}

#[test]
fn offers_time_out_and_lost_agents_lose_offers_then_tasks() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:256", vec![]);
    let (fid, e) = h.subscribe(10, "", 600.0);
    let o = offers(&e);
    launch(&mut h, &fid, &o[0], vec![task("t1", "cpus:1")]);
    h.update(1, agent_status("a1", &fid, "t1", TaskState::Running, "u1"));
    h.settle();

    let e = h.tick(5_100); // filter gone: the rest is offered again
    let o = offers(&e);
    assert_eq!(o.len(), 1);
    let e = h.tick(Timeouts::default().offer);
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::ToFramework(
            _,
            Event {
                event: Some(event::Event::Rescind(_))
            }
        )
    )));

    h.c.agent_disconnected(1, h.now);
    h.settle();
    let e = h.tick(Timeouts::default().agent_reregister);
    let u = updates(&e);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state(), TaskState::Lost);
    assert!(u[0].message.contains("a1"), "{}", u[0].message);
    assert!(h.c.registry().removed_agents.contains(&AgentId::from("a1")));
}

#[test]
fn an_agent_back_from_removal_is_offered_only_once_its_old_tasks_are_dead() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:256", vec![]);
    let (fid, e) = h.subscribe(10, "", 3600.0);
    let o = offers(&e);
    launch(&mut h, &fid, &o[0], vec![task("t1", "cpus:1")]);
    let running = agent_status("a1", &fid, "t1", TaskState::Running, "u1");
    h.update(1, running.clone());
    h.settle();
    h.c.agent_disconnected(1, h.now);
    h.settle();
    let e = h.tick(Timeouts::default().agent_reregister);
    assert_eq!(updates(&e)[0].state(), TaskState::Lost);
    let a1 = AgentId::from("a1");
    assert!(h.c.registry().removed_agents.contains(&a1));

    // It comes back, still running t1: the task is killed, and nothing of
    // the agent is offered while it is.
    let reported = on_agent_a1(&fid, task("t1", "cpus:1"), running.clone());
    let e = h.register_agent(2, "a1", "cpus:2;mem:256", vec![reported]);
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::ToAgent(2, MasterMessage { message: Some(M::Kill(k)) }) if k.task_id == "t1"
    )));
    assert!(offers(&e).is_empty(), "offered while its old task runs");
    // A resent RUNNING must not show the framework a lost task coming
    // back; the agent still gets its acknowledgement.
    h.update(2, running);
    let e = h.settle();
    assert!(updates(&e).is_empty(), "{e:?}");
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::ToAgent(2, MasterMessage { message: Some(M::Ack(a)) }) if a.uuid == "u1"
    )));
    assert_eq!(h.c.agents[&a1].used.scalar("cpus"), 1.0);
    // Once it is dead the agent is an ordinary one again, offered whole.
    h.update(2, agent_status("a1", &fid, "t1", TaskState::Killed, "u2"));
    let e = h.settle();
    assert_eq!(updates(&e)[0].state(), TaskState::Killed);
    assert!(!h.c.registry().removed_agents.contains(&a1));
    let o = offers(&e);
    assert_eq!(o.len(), 1);
    let cpus = Resources::from_proto(&o[0].resources)
        .unwrap()
        .scalar("cpus");
    assert_eq!(cpus, 2.0);
}

#[test]
fn reregistering_agent_keeps_its_tasks_after_master_restart() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:256", vec![]);
    let (fid, _) = h.subscribe(10, "", 600.0);
    // A new master starts from the replicated registry only.
    let registry = h.c.registry().clone();
    let mut h2 = Harness::new();
    h2.c = Cluster::new("m2".into(), Timeouts::default(), registry, 0);
    h2.c.set_wall_epoch(1_700_000_000.0);
    let running = agent_status("a1", &fid, "t1", TaskState::Running, "u1");
    let mut reported = on_agent_a1(&fid, task("t1", "cpus:1"), running.clone());
    // Launched an hour before this master started: its age, run deadline
    // and attained GPU time count from then.
    reported.launched_at = 1_699_996_400.0;
    // An agent whose clock runs ahead is not believed.
    let mut ahead = on_agent_a1(&fid, task("t2", "cpus:0.5"), running);
    ahead.latest_status.as_mut().unwrap().task_id = "t2".into();
    ahead.launched_at = 1_700_009_000.0;
    h2.register_agent(2, "a1", "cpus:2;mem:256", vec![reported, ahead]);
    let key = (FrameworkId(fid.clone()), TaskId::from("t1"));
    assert_eq!(h2.c.tasks[&key].status.state(), TaskState::Running);
    assert_eq!(h2.c.tasks[&key].launched_at, 1_699_996_400.0);
    let t2 = &h2.c.tasks[&(FrameworkId(fid.clone()), TaskId::from("t2"))];
    assert!(t2.launched_at < 1_700_000_100.0, "{}", t2.launched_at);
    assert_eq!(h2.c.agents[&AgentId::from("a1")].used.scalar("cpus"), 1.5);
    // The framework fails over with its id and gets offers for the rest.
    let (again, e) = h2.subscribe(11, &fid, 600.0);
    assert_eq!(again, fid);
    let o = offers(&e);
    assert_eq!(
        Resources::from_proto(&o[0].resources)
            .unwrap()
            .scalar("cpus"),
        0.5
    );
}

#[test]
fn framework_failover_timeout_removes_it_and_kills_tasks() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:256", vec![]);
    let (fid, e) = h.subscribe(10, "", 1.0);
    let o = offers(&e);
    launch(&mut h, &fid, &o[0], vec![task("t1", "cpus:1")]);
    h.c.framework_disconnected(10, h.now);
    h.settle();
    let e = h.tick(1_000);
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::ToAgent(
            1,
            MasterMessage {
                message: Some(M::ShutdownFramework(_))
            }
        )
    )));
    assert!(h
        .c
        .registry()
        .removed_frameworks
        .contains(&FrameworkId(fid.clone())));
    // Until the agent confirms the kill, the task's CPU is still taken.
    let a1 = AgentId::from("a1");
    assert_eq!(h.c.agents[&a1].used.scalar("cpus"), 1.0);
    h.update(1, agent_status("a1", &fid, "t1", TaskState::Killed, "u9"));
    h.settle();
    assert!(h.c.agents[&a1].used.is_empty());
    let err =
        h.c.subscribe(
            12,
            mezz_proto::PROTOCOL_VERSION,
            FrameworkInfo {
                id: fid,
                name: "x".into(),
                ..Default::default()
            },
            h.now,
        )
        .unwrap_err();
    assert!(err.to_string().contains("was removed"), "{err}");
}

#[test]
fn bad_registrations_are_refused_with_a_reason() {
    let mut h = Harness::new();
    h.c.agent_register(
        5,
        RegisterAgent {
            protocol_version: 99,
            ..Default::default()
        },
        0,
    );
    let e = h.settle();
    assert!(
        matches!(&e[0], Effect::ToAgent(5, MasterMessage { message: Some(M::Refused(r)) }) if r.message.contains("99"))
    );
    let err =
        h.c.subscribe(
            6,
            mezz_proto::PROTOCOL_VERSION,
            FrameworkInfo {
                name: " ".into(),
                ..Default::default()
            },
            0,
        )
        .unwrap_err();
    assert!(err.to_string().contains("name"), "{err}");
    let err =
        h.c.subscribe(
            7,
            mezz_proto::PROTOCOL_VERSION,
            FrameworkInfo {
                name: "ui".into(),
                webui_url: "javascript:alert(1)".into(),
                ..Default::default()
            },
            0,
        )
        .unwrap_err();
    assert!(err.to_string().contains("webui_url"), "{err}");
}

#[test]
fn reconcile_answers_every_task() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:256", vec![]);
    let (fid, e) = h.subscribe(10, "", 60.0);
    let o = offers(&e);
    launch(&mut h, &fid, &o[0], vec![task("t1", "cpus:1")]);
    h.c.reconcile(&fid, vec![], h.now).unwrap();
    let u = updates(&h.settle());
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state(), TaskState::Staging);
    h.c.reconcile(
        &fid,
        vec![ReconcileTask {
            task_id: "nope".into(),
            agent_id: String::new(),
        }],
        h.now,
    )
    .unwrap();
    let u = updates(&h.settle());
    assert_eq!(u[0].state(), TaskState::Unknown);
}

/// A leader change mid-flight: the new leader starts from the replicated
/// registry alone. Every launched task is accounted for once the agent
/// re-registers, an update the old leader never got acknowledged is
/// forwarded again and acknowledged once, and the new leader makes no
/// offer for resources its predecessor's tasks still hold.
#[test]
fn failover_accounts_for_every_task_and_update() {
    let mut old = Harness::new();
    old.register_agent(1, "a1", "cpus:4;mem:1024", vec![]);
    let (fid, e) = old.subscribe(10, "", 600.0);
    let o = offers(&e);
    launch(
        &mut old,
        &fid,
        &o[0],
        vec![
            task("t1", "cpus:1"),
            task("t2", "cpus:1"),
            task("t3", "cpus:1"),
        ],
    );
    for t in ["t1", "t2", "t3"] {
        old.update(
            1,
            agent_status("a1", &fid, t, TaskState::Running, &format!("r-{t}")),
        );
    }
    // t3 finishes; the old leader forwards it but dies before the ack.
    old.update(
        1,
        agent_status("a1", &fid, "t3", TaskState::Finished, "f-t3"),
    );
    old.settle();

    let mut new = Harness::new();
    new.c = Cluster::new(
        "m2".into(),
        Timeouts::default(),
        old.c.registry().clone(),
        0,
    );
    let reported: Vec<AgentTask> = ["t1", "t2"]
        .iter()
        .map(|t| AgentTask {
            framework_id: fid.clone(),
            task: Some(TaskInfo {
                agent_id: "a1".into(),
                ..task(t, "cpus:1")
            }),
            latest_status: Some(agent_status(
                "a1",
                &fid,
                t,
                TaskState::Running,
                &format!("r-{t}"),
            )),
            ..Default::default()
        })
        .chain(std::iter::once(AgentTask {
            framework_id: fid.clone(),
            task: Some(TaskInfo {
                agent_id: "a1".into(),
                ..task("t3", "cpus:1")
            }),
            latest_status: Some(agent_status("a1", &fid, "t3", TaskState::Finished, "f-t3")),
            ..Default::default()
        }))
        .collect();
    new.register_agent(2, "a1", "cpus:4;mem:1024", reported);
    for t in ["t1", "t2"] {
        let key = (FrameworkId(fid.clone()), TaskId::from(t));
        assert_eq!(
            new.c.tasks[&key].status.state(),
            TaskState::Running,
            "{t} accounted for"
        );
    }
    // The framework comes back; only the free cpu is offered.
    let (again, e) = new.subscribe(11, &fid, 600.0);
    assert_eq!(again, fid);
    let o = offers(&e);
    assert_eq!(o.len(), 1);
    assert_eq!(
        Resources::from_proto(&o[0].resources)
            .unwrap()
            .scalar("cpus"),
        2.0
    );

    // The agent resends the unacknowledged terminal update (twice, as a
    // retry would); the framework sees it and acknowledges it once.
    new.update(
        2,
        agent_status("a1", &fid, "t3", TaskState::Finished, "f-t3"),
    );
    new.update(
        2,
        agent_status("a1", &fid, "t3", TaskState::Finished, "f-t3"),
    );
    let e = new.settle();
    let finished: Vec<_> = updates(&e)
        .into_iter()
        .filter(|s| s.task_id == "t3")
        .collect();
    assert!(
        !finished.is_empty(),
        "the resent update reached the framework"
    );
    assert!(finished
        .iter()
        .all(|s| s.uuid == "f-t3" && s.state() == TaskState::Finished));
    new.c
        .acknowledge(&fid, "a1", "t3", "f-t3", new.now)
        .unwrap();
    let e = new.settle();
    let acks = e
        .iter()
        .filter(|e| matches!(e, Effect::ToAgent(2, MasterMessage { message: Some(M::Ack(a)) }) if a.uuid == "f-t3"))
        .count();
    assert_eq!(acks, 1, "one acknowledgement reaches the agent");

    // Reconciliation answers for every task the framework launched.
    new.c
        .reconcile(
            &fid,
            ["t1", "t2", "t3"]
                .iter()
                .map(|t| ReconcileTask {
                    task_id: t.to_string(),
                    agent_id: "a1".into(),
                })
                .collect(),
            new.now,
        )
        .unwrap();
    let answers = updates(&new.settle());
    let states: Vec<(String, TaskState)> = answers
        .iter()
        .map(|s| (s.task_id.clone(), s.state()))
        .collect();
    assert!(
        states.contains(&("t1".into(), TaskState::Running)),
        "{states:?}"
    );
    assert!(
        states.contains(&("t2".into(), TaskState::Running)),
        "{states:?}"
    );
    assert!(
        states.contains(&("t3".into(), TaskState::Finished)),
        "{states:?}"
    );
}

#[test]
fn updates_are_resent_to_a_returning_framework_in_the_order_they_came() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:256", vec![]);
    let (fid, e) = h.subscribe(10, "", 600.0);
    let o = offers(&e);
    launch(&mut h, &fid, &o[0], vec![task("t1", "cpus:1")]);
    h.c.framework_disconnected(10, h.now);
    h.settle();
    // uuids are random: the later update may well sort first.
    for (state, uuid) in [(TaskState::Running, "ff"), (TaskState::Finished, "00")] {
        h.update(1, agent_status("a1", &fid, "t1", state, uuid));
    }
    h.settle();
    let (_, e) = h.subscribe(11, &fid, 600.0);
    let states: Vec<TaskState> = updates(&e).iter().map(|s| s.state()).collect();
    assert_eq!(states, vec![TaskState::Running, TaskState::Finished]);
}

#[test]
fn an_agent_back_before_its_removal_commits_keeps_its_tasks() {
    use mezz_proto::v1::replicated_command::Command;
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:256", vec![]);
    let (fid, e) = h.subscribe(10, "", 600.0);
    let o = offers(&e);
    launch(&mut h, &fid, &o[0], vec![task("t1", "cpus:1")]);
    let running = agent_status("a1", &fid, "t1", TaskState::Running, "u1");
    h.update(1, running.clone());
    h.settle();
    h.c.agent_disconnected(1, h.now);
    h.settle();
    h.now += Timeouts::default().agent_reregister;
    h.c.tick(h.now);
    // The removal is only proposed: nobody is told anything yet.
    let proposed = h.c.take_effects();
    assert!(updates(&proposed).is_empty(), "{proposed:?}");
    let removal = proposed
        .iter()
        .find_map(|e| match e {
            Effect::Propose(c) if matches!(c.command, Some(Command::RemoveAgent(_))) => {
                Some(c.clone())
            }
            _ => None,
        })
        .expect("the removal is proposed");
    // The agent comes back before the removal commits.
    let reported = on_agent_a1(&fid, task("t1", "cpus:1"), running);
    h.register_agent(2, "a1", "cpus:2;mem:256", vec![reported]);
    h.c.apply(&removal, h.now);
    let e = h.settle();
    assert!(updates(&e).is_empty(), "a task that runs was declared lost");
    assert!(!h.c.registry().removed_agents.contains(&AgentId::from("a1")));
    let key = (FrameworkId(fid), TaskId::from("t1"));
    assert_eq!(h.c.tasks[&key].status.state(), TaskState::Running);
}

/// With no framework to offer to, the periodic sweep (which re-syncs every
/// agent into the allocator) does not run; a subscription gets one at once.
#[test]
fn no_periodic_sweep_without_a_framework_to_offer_to() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:256", vec![]);
    h.tick(100);
    let runs = h.c.counters().allocation_runs;
    for _ in 0..30 {
        h.c.tick(h.now + 100);
        h.now += 100;
        assert!(!h.c.allocation_due(), "no sweep is due without frameworks");
    }
    assert_eq!(h.c.counters().allocation_runs, runs);
    let (fid, e) = h.subscribe(10, "", 600.0);
    assert_eq!(
        offers(&e).len(),
        1,
        "the new framework is offered a1 at once"
    );
    // While it may take offers, the periodic sweep runs again.
    let ids: Vec<String> = offers(&e).iter().map(|o| o.id.clone()).collect();
    h.c.decline(&fid, &ids, Some(0.5), h.now).unwrap();
    h.settle();
    let before = h.c.counters().allocation_runs;
    h.tick(1_100);
    assert!(
        h.c.counters().allocation_runs > before,
        "the sweep runs with a framework"
    );
}

#[test]
fn the_metrics_gauges_count_what_the_view_lists() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:4;mem:1024", vec![]);
    h.register_agent(2, "a2", "cpus:2;mem:512", vec![]);
    h.register_agent(3, "a3", "cpus:1;mem:256;gpus:{g0,g1}", vec![]);
    let (fid, e) = h.subscribe(10, "", 60.0);
    let o = offers(&e);
    let on_a1 = o.iter().find(|o| o.agent_id == "a1").unwrap();
    launch(
        &mut h,
        &fid,
        on_a1,
        vec![task("t1", "cpus:1;mem:64"), task("t2", "cpus:0.5;mem:32")],
    );
    h.update(1, agent_status("a1", &fid, "t1", TaskState::Running, "u1"));
    h.settle();
    h.c.agent_disconnected(2, h.now);
    h.settle();

    let g = h.c.gauges();
    let v = h.c.view(false, vec![], String::new(), 0.0);
    assert_eq!(g.tasks_active, v.tasks.len());
    assert_eq!(g.tasks_active, 2);
    let mut by_state = std::collections::BTreeMap::new();
    for t in &v.tasks {
        *by_state.entry(t.state.as_str()).or_insert(0u64) += 1;
    }
    assert_eq!(g.tasks_by_state, by_state);
    assert_eq!((g.agents, g.agents_connected), (3, 2));
    assert_eq!(
        g.agents_connected,
        v.agents.iter().filter(|a| a.status == "connected").count()
    );
    assert_eq!((g.frameworks, g.frameworks_connected), (1, 1));
    for res in mezz_proto::resources::SHARE_NAMES {
        let total: f64 = v.agents.iter().filter_map(|a| a.total.get(res)).sum();
        let used: f64 = v.agents.iter().filter_map(|a| a.used.get(res)).sum();
        assert_eq!(g.total.get(res).copied().unwrap_or(0.0), total, "{res}");
        assert_eq!(g.used.get(res).copied().unwrap_or(0.0), used, "{res}");
    }
    assert_eq!(g.total["cpus"], 7.0);
    assert_eq!(g.used["cpus"], 1.5);
    assert_eq!(g.total["gpus"], 2.0);
}

#[test]
fn updates_kept_for_a_returning_framework_go_out_a_window_at_a_time() {
    let mut u = super::super::Unacked::default();
    let status = |i: usize| TaskStatus {
        task_id: format!("t{i}"),
        uuid: format!("u{i}"),
        ..Default::default()
    };
    for i in 0..2500 {
        u.insert(status(i));
    }
    u.begin_resend();
    let first = u.take_resend(super::super::RESEND_WINDOW);
    assert_eq!(first.len(), 1024);
    assert_eq!(
        (first[0].uuid.as_str(), first[1023].uuid.as_str()),
        ("u0", "u1023")
    );
    // Acknowledged on the way: skipped. One more per acknowledgement.
    u.remove("u1024");
    u.remove("u0");
    assert_eq!(u.take_resend(1)[0].uuid, "u1025");
    // Updates that came after the subscription were sent live: not again.
    u.insert(status(9999));
    let rest = u.take_resend(5000);
    assert_eq!(rest.len(), 2500 - 1026);
    assert_eq!(rest.last().unwrap().uuid, "u2499");
    assert!(u.take_resend(1).is_empty());
    // A new subscription sends everything still kept, in order.
    u.begin_resend();
    let again = u.take_resend(5000);
    assert_eq!(again.len(), 2499);
    assert_eq!(again.last().unwrap().uuid, "u9999");
}
