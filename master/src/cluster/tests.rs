//! State-machine tests driven like the shell drives it: inputs in, effects
//! out, proposals applied as if raft committed them at once.

use super::*;
use mezz_proto::v1::{
    master_message::Message as M, operation, AcceptRequest, AgentTask, CommandInfo, Filters,
    Launch, Offer, Operation, ReconcileTask,
};

struct Harness {
    c: Cluster,
    now: Millis,
    out: Vec<Effect>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            c: Cluster::new("m1".into(), Timeouts::default(), Registry::default(), 0),
            now: 0,
            out: vec![],
        }
    }

    /// Applies proposals as if committed, allocates if due, and keeps the
    /// other effects for inspection.
    fn settle(&mut self) -> Vec<Effect> {
        let mut seen = Vec::new();
        loop {
            if self.c.allocation_due() {
                self.c.allocate(self.now);
            }
            let effects = self.c.take_effects();
            if effects.is_empty() {
                break;
            }
            for e in effects {
                match e {
                    Effect::Propose(cmd) => self.c.apply(&cmd, self.now),
                    other => seen.push(other),
                }
            }
        }
        self.out.extend(seen.clone());
        seen
    }

    fn register_agent(
        &mut self,
        conn: ConnId,
        id: &str,
        res: &str,
        tasks: Vec<AgentTask>,
    ) -> Vec<Effect> {
        self.c.agent_register(
            conn,
            RegisterAgent {
                protocol_version: mezz_proto::PROTOCOL_VERSION,
                agent: Some(AgentInfo {
                    id: id.into(),
                    hostname: format!("host-{id}"),
                    address: "127.0.0.1:1".into(),
                    resources: Resources::parse(res).unwrap().to_proto(),
                    ..Default::default()
                }),
                tasks,
                frameworks: vec![],
                secret: secret_for(id),
            },
            self.now,
        );
        self.settle()
    }

    fn subscribe(&mut self, conn: ConnId, id: &str, failover: f64) -> (String, Vec<Effect>) {
        self.c
            .subscribe(
                conn,
                mezz_proto::PROTOCOL_VERSION,
                FrameworkInfo {
                    id: id.into(),
                    name: "test".into(),
                    failover_timeout_secs: failover,
                    ..Default::default()
                },
                self.now,
            )
            .unwrap();
        let effects = self.settle();
        let fid = effects
            .iter()
            .find_map(|e| match e {
                Effect::ToFramework(
                    _,
                    Event {
                        event: Some(event::Event::Subscribed(s)),
                    },
                ) => Some(s.framework_id.clone()),
                _ => None,
            })
            .expect("subscribed");
        (fid, effects)
    }

    /// A status update from the agent on stream `conn`.
    fn update(&mut self, conn: ConnId, status: TaskStatus) {
        self.c.agent_status_update(conn, status, self.now);
    }

    fn tick(&mut self, ms: Millis) -> Vec<Effect> {
        self.now += ms;
        self.c.tick(self.now);
        self.settle()
    }
}

/// The secret the agent `id` of these tests registers with.
fn secret_for(id: &str) -> String {
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0<64.64}")
}

fn offers(effects: &[Effect]) -> Vec<Offer> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToFramework(
                _,
                Event {
                    event: Some(event::Event::Offers(o)),
                },
            ) => Some(o.offers.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn updates(effects: &[Effect]) -> Vec<TaskStatus> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToFramework(
                _,
                Event {
                    event: Some(event::Event::Update(u)),
                },
            ) => u.status.clone(),
            _ => None,
        })
        .collect()
}

fn task(id: &str, res: &str) -> TaskInfo {
    TaskInfo {
        task_id: id.into(),
        name: id.into(),
        resources: Resources::parse(res).unwrap().to_proto(),
        command: Some(CommandInfo {
            value: "true".into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A task as agent `a1` reports it when it (re-)registers.
fn on_agent_a1(fid: &str, task: TaskInfo, latest: TaskStatus) -> AgentTask {
    AgentTask {
        framework_id: fid.into(),
        task: Some(TaskInfo {
            agent_id: "a1".into(),
            ..task
        }),
        latest_status: Some(latest),
    }
}

fn launch(h: &mut Harness, fid: &str, offer: &Offer, tasks: Vec<TaskInfo>) -> Vec<Effect> {
    h.c.accept(
        AcceptRequest {
            framework_id: fid.into(),
            offer_ids: vec![offer.id.clone()],
            operations: vec![Operation {
                operation: Some(operation::Operation::Launch(Launch { tasks })),
            }],
            filters: None,
        },
        h.now,
    )
    .unwrap();
    h.settle()
}

fn agent_status(agent: &str, fid: &str, tid: &str, state: TaskState, uuid: &str) -> TaskStatus {
    TaskStatus {
        task_id: tid.into(),
        framework_id: fid.into(),
        agent_id: agent.into(),
        state: state as i32,
        uuid: uuid.into(),
        source: StatusSource::Agent as i32,
        ..Default::default()
    }
}

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
    let running = agent_status("a1", &fid, "t1", TaskState::Running, "u1");
    let reported = on_agent_a1(&fid, task("t1", "cpus:1"), running);
    h2.register_agent(2, "a1", "cpus:2;mem:256", vec![reported]);
    let key = (FrameworkId(fid.clone()), TaskId::from("t1"));
    assert_eq!(h2.c.tasks[&key].status.state(), TaskState::Running);
    assert_eq!(h2.c.agents[&AgentId::from("a1")].used.scalar("cpus"), 1.0);
    // The framework fails over with its id and gets offers for the rest.
    let (again, e) = h2.subscribe(11, &fid, 600.0);
    assert_eq!(again, fid);
    let o = offers(&e);
    assert_eq!(
        Resources::from_proto(&o[0].resources)
            .unwrap()
            .scalar("cpus"),
        1.0
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
        })
        .chain(std::iter::once(AgentTask {
            framework_id: fid.clone(),
            task: Some(TaskInfo {
                agent_id: "a1".into(),
                ..task("t3", "cpus:1")
            }),
            latest_status: Some(agent_status("a1", &fid, "t3", TaskState::Finished, "f-t3")),
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

/// A registration of agent `id` with `secret`, on `conn`.
fn register_with_secret(h: &mut Harness, conn: ConnId, id: &str, secret: &str) -> Vec<Effect> {
    h.c.agent_register(
        conn,
        RegisterAgent {
            protocol_version: mezz_proto::PROTOCOL_VERSION,
            agent: Some(AgentInfo {
                id: id.into(),
                hostname: "rogue".into(),
                address: "127.0.0.1:9".into(),
                resources: Resources::parse("cpus:64;mem:65536").unwrap().to_proto(),
                ..Default::default()
            }),
            tasks: vec![],
            frameworks: vec![],
            secret: secret.into(),
        },
        h.now,
    );
    h.settle()
}

fn refusal(effects: &[Effect], conn: ConnId) -> Option<String> {
    effects.iter().find_map(|e| match e {
        Effect::ToAgent(
            c,
            MasterMessage {
                message: Some(M::Refused(r)),
            },
        ) if *c == conn => Some(r.message.clone()),
        _ => None,
    })
}

/// Agent a1 runs t1 of a framework; returns the framework id.
fn a1_runs_t1(h: &mut Harness) -> String {
    h.register_agent(1, "a1", "cpus:2;mem:1024", vec![]);
    let (fid, e) = h.subscribe(10, "", 60.0);
    let o = offers(&e);
    launch(h, &fid, &o[0], vec![task("t1", "cpus:1;mem:64")]);
    h.update(1, agent_status("a1", &fid, "t1", TaskState::Running, "u1"));
    h.settle();
    fid
}

#[test]
fn a_registration_with_a_known_id_and_no_or_a_wrong_secret_changes_nothing() {
    let mut h = Harness::new();
    let fid = a1_runs_t1(&mut h);
    let key = (FrameworkId(fid.clone()), TaskId::from("t1"));
    let agent_before = h.c.agents[&AgentId::from("a1")].clone();
    let registry_before = h.c.registry().clone();
    let wrong = "f".repeat(64);
    for (conn, secret) in [(66, ""), (67, wrong.as_str()), (68, "short")] {
        let e = register_with_secret(&mut h, conn, "a1", secret);
        let why = refusal(&e, conn).expect("refused");
        assert!(why.contains("a1"), "{why}");
        assert!(
            e.iter().all(|e| match e {
                Effect::ToAgent(c, _) | Effect::CloseAgent(c) => *c == conn,
                Effect::Propose(_) => false,
                _ => true,
            }),
            "the rogue's registration touched something else: {e:?}"
        );
        assert!(e
            .iter()
            .any(|e| matches!(e, Effect::CloseAgent(c) if *c == conn)));
    }
    let a = &h.c.agents[&AgentId::from("a1")];
    assert_eq!(a.conn, Some(1), "the real agent keeps its stream");
    assert_eq!(a.info, agent_before.info);
    assert_eq!(a.used, agent_before.used);
    assert_eq!(h.c.tasks[&key].status.state(), TaskState::Running);
    assert_eq!(h.c.registry(), &registry_before);
    assert_eq!(h.c.counters().agent_registrations_refused, 3);
    // The real agent, with its secret, still re-registers.
    let e = h.register_agent(2, "a1", "cpus:2;mem:1024", vec![]);
    assert!(refusal(&e, 2).is_none(), "{e:?}");
    assert_eq!(h.c.agents[&AgentId::from("a1")].conn, Some(2));
}

#[test]
fn the_first_secret_of_an_id_is_pinned_and_outlives_a_removal() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:1;mem:128", vec![]);
    let cred = h.c.registry().agent_credentials[&AgentId::from("a1")].clone();
    assert!(!cred.hash.is_empty());
    let secret = secret_for("a1");
    assert!(!format!("{:?}", h.c.registry()).contains(&secret));
    // Away past the re-register timeout: removed, yet the pin stays.
    h.c.agent_disconnected(1, h.now);
    h.tick(Timeouts::default().agent_reregister + 100);
    assert!(h.c.registry().removed_agents.contains(&AgentId::from("a1")));
    let e = register_with_secret(&mut h, 5, "a1", &"0".repeat(64));
    assert!(refusal(&e, 5).is_some(), "a removed agent's id was taken");
    let e = h.register_agent(6, "a1", "cpus:1;mem:128", vec![]);
    assert!(refusal(&e, 6).is_none(), "{e:?}");
}

#[test]
fn two_new_registrations_racing_for_an_id_leave_the_first_pin() {
    let mut h = Harness::new();
    let (s1, s2) = ("1".repeat(64), "2".repeat(64));
    // Both propose a pin before either is applied.
    for (conn, s) in [(1, &s1), (2, &s2)] {
        h.c.agent_register(
            conn,
            RegisterAgent {
                protocol_version: mezz_proto::PROTOCOL_VERSION,
                agent: Some(AgentInfo {
                    id: "a1".into(),
                    resources: Resources::parse("cpus:1").unwrap().to_proto(),
                    ..Default::default()
                }),
                secret: s.clone(),
                ..Default::default()
            },
            h.now,
        );
    }
    let e = h.settle();
    // The second registration replaced the first one's pending stream, but
    // the first pin applied is the one kept: the second is refused.
    assert!(refusal(&e, 2).is_some(), "{e:?}");
    assert!(h.c.agents[&AgentId::from("a1")].conn.is_none());
    let e = register_with_secret(&mut h, 3, "a1", &s1);
    assert!(refusal(&e, 3).is_none());
}

#[test]
fn a_spoofed_end_of_another_agents_task_is_ignored() {
    let mut h = Harness::new();
    let fid = a1_runs_t1(&mut h);
    // A second, legitimately registered agent speaks for a1's task.
    h.register_agent(2, "a2", "cpus:1;mem:128", vec![]);
    let used_before = h.c.agents[&AgentId::from("a1")].used.clone();
    for status in [
        agent_status("a2", &fid, "t1", TaskState::Finished, "spoof1"),
        // The agent id in the update is the sender's own, or it is refused
        // outright: both are ignored.
        agent_status("a1", &fid, "t1", TaskState::Finished, "spoof2"),
        agent_status("a2", &fid, "never-launched", TaskState::Failed, "spoof3"),
    ] {
        h.update(2, status);
    }
    let e = h.settle();
    assert!(updates(&e).is_empty(), "forwarded: {e:?}");
    let key = (FrameworkId(fid.clone()), TaskId::from("t1"));
    assert_eq!(h.c.tasks[&key].status.state(), TaskState::Running);
    assert!(h.c.completed.is_empty(), "{:?}", h.c.completed);
    assert_eq!(h.c.agents[&AgentId::from("a1")].used, used_before);
    // Its resources are not offered again: only a1's free cpu is.
    let e = h.tick(6000);
    let on_a1: Vec<Offer> = offers(&e)
        .into_iter()
        .filter(|o| o.agent_id == "a1")
        .collect();
    assert_eq!(on_a1.len(), 1);
    assert_eq!(
        Resources::from_proto(&on_a1[0].resources)
            .unwrap()
            .scalar("cpus"),
        1.0,
        "t1's cpu was offered again"
    );
    assert_eq!(h.c.counters().status_updates_refused, 2);
    // A re-registration of a2 claiming t1 adopts nothing.
    let claimed = on_agent_a1(
        &fid,
        task("t1", "cpus:1;mem:64"),
        agent_status("a2", &fid, "t1", TaskState::Running, "x"),
    );
    h.register_agent(3, "a2", "cpus:1;mem:128", vec![claimed]);
    assert_eq!(h.c.tasks[&key].agent_id, AgentId::from("a1"));
    assert!(h.c.agents[&AgentId::from("a2")].used.is_empty());
}

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
