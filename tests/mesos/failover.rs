//! A leader failover under a subscribed framework, resent updates, and a
//! subscription that waits for an election.

use super::super::*;

#[test]
#[ignore = "needs the test Python (pymesos and mesoshttp are installed into it)"]
fn pymesos_framework_survives_leader_failover() {
    let python = mesos_clients_python();
    let mut g = Group::start();
    let leader = g.wait_leader();
    wait_for("the agent to register", Duration::from_secs(30), || {
        g.connected_agents(leader) == 1
    });
    let follower = (0..3).find(|&i| i != leader).expect("a follower");

    // A follower sends SUBSCRIBE to the leader.
    let body =
        r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"nobody","name":"x"}}}"#;
    let (code, headers, _) = request(
        &g.addr(follower),
        "POST",
        "/api/v1/scheduler",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(code, 307);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("//{}/api/v1/scheduler", g.addr(leader)).as_str())
    );

    // pymesos is pointed at the follower and follows the redirect.
    let run = Script::start(
        g.dir.path(),
        &python,
        "pymesos_failover.py",
        &[&g.addr(follower)],
    );
    wait_for("the task to run", Duration::from_secs(60), || {
        run.steps()
            .iter()
            .any(|s| s["step"] == "state" && s["state"] == "TASK_RUNNING")
    });
    let subscribed = run.step("subscribed").expect("subscribed");
    assert_eq!(subscribed["master"], g.addr(leader), "{subscribed}");

    // Kill the leader; a supervisor would restart it, and so does this
    // test once a new leader is elected: pymesos reconnects to the address
    // it last used (there is no ZooKeeper to tell it otherwise) and is
    // redirected from there.
    if let Some(p) = g.masters[leader].as_mut() {
        p.kill9();
    }
    g.masters[leader] = None;
    let new_leader = g.wait_leader();
    assert_ne!(new_leader, leader);
    g.start_master(leader);

    let steps = run.wait_ok(Duration::from_secs(180));
    let last = steps.last().expect("steps");
    assert_eq!(last["step"], "finished", "{steps:?}");
    assert_eq!(last["reregistered"], true, "{steps:?}");
    assert_eq!(last["master"], g.addr(new_leader), "{steps:?}");
    assert!(
        last["states"]
            .as_array()
            .is_some_and(|s| s.last() == Some(&serde_json::json!("TASK_FINISHED"))),
        "{steps:?}"
    );
}

#[test]
fn unacknowledged_updates_are_sent_again() {
    let c = Cluster::start(RESOURCES, &[]);
    let addr = c.master_addr();
    let mut sub = RawSubscription::open(&addr);
    let offer = loop {
        let ev = sub.next_record();
        if ev["type"] == "OFFERS" {
            break ev["offers"]["offers"][0].clone();
        }
    };
    let launch = serde_json::json!({"type": "ACCEPT",
        "framework_id": {"value": sub.framework_id},
        "accept": {"offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH",
        "launch": {"task_infos": [{"name": "s", "task_id": {"value": "s1"},
        "agent_id": offer["agent_id"],
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
        "command": {"value": "sleep 60"}}]}}]}});
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[
            ("Content-Type", "application/json"),
            ("Mesos-Stream-Id", &sub.stream_id),
        ],
        launch.to_string().as_bytes(),
    );
    assert_eq!(code, 202, "{body}");
    // The first update that needs an acknowledgement, never acknowledged:
    // it comes again, with the same uuid, as in Mesos.
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the update was not sent again");
        let ev = sub.next_record();
        if ev["type"] != "UPDATE" {
            continue;
        }
        let st = ev["update"]["status"].clone();
        let Some(uuid) = st["uuid"].as_str().map(str::to_string) else {
            continue;
        };
        match &first {
            None => first = Some((uuid, st["state"].clone())),
            Some((u, state)) if *u == uuid => {
                assert_eq!(st["state"], *state);
                break;
            }
            Some(_) => {}
        }
    }
}

#[test]
fn subscribe_waits_for_an_election_then_answers_503() {
    let mut g = Group::start();
    let leader = g.wait_leader();
    // Leave one master: it can never win an election alone.
    let survivor = (0..3).find(|&i| i != leader).expect("a follower");
    for i in (0..3).filter(|&i| i != survivor) {
        if let Some(p) = g.masters[i].as_mut() {
            p.kill9();
        }
        g.masters[i] = None;
    }
    let addr = g.addr(survivor);
    wait_for(
        "the survivor to know no leader",
        Duration::from_secs(30),
        || try_request(&addr, "/master/redirect").is_some_and(|(code, _, _)| code == 503),
    );
    let body =
        r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"nobody","name":"x"}}}"#;
    let asked = Instant::now();
    let (code, _, text) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let held = asked.elapsed();
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("no leading master"), "{text}");
    // Held for the election rather than answered at once (the wait is 5 s;
    // a lower bound only, so a slow machine cannot fail it).
    assert!(held >= Duration::from_secs(4), "answered after {held:?}");
}
