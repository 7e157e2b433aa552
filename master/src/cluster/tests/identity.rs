//! Agent identity: pinned secrets, registrations that race for an id, and
//! reports about tasks an agent does not run.

use super::*;

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
