//! Unit tests of the Mesos JSON codec.

use super::*;

fn call(v: Value) -> Result<MesosCall, BadCall> {
    parse_call(v.to_string().as_bytes())
}

#[test]
fn subscribe_maps_framework_info() {
    let c = call(json!({
        "type": "SUBSCRIBE",
        "subscribe": {"framework_info": {
            "user": "alice", "name": "fw", "failover_timeout": 1e9,
            "roles": ["analytics"], "capabilities": [{"type": "GPU_RESOURCES"},
            {"type": "MULTI_ROLE"}], "checkpoint": true, "unknown_field": 1}},
        "framework_id": {"value": "f-1"},
    }))
    .expect("valid");
    let MesosCall::Subscribe(info) = c else {
        panic!("not a subscribe: {c:?}")
    };
    assert_eq!(info.id, "f-1");
    assert_eq!(info.role, "analytics");
    assert_eq!(info.user, "alice");
    assert_eq!(info.failover_timeout_secs, MAX_FAILOVER_SECS);
    assert_eq!(info.capabilities, vec![Capability::GpuResources as i32]);
}

#[test]
fn two_roles_are_refused_by_name() {
    let e = call(
        json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
        "user": "u", "name": "n", "roles": ["a", "b"]}}}),
    )
    .expect_err("two roles");
    assert!(e.contains("one role"), "{e}");
}

#[test]
fn accept_maps_a_shell_launch() {
    let c = call(json!({
        "type": "ACCEPT", "framework_id": {"value": "f-1"},
        "accept": {"offer_ids": [{"value": "o-1"}], "filters": {"refuse_seconds": 3.0},
          "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
            "name": "t", "task_id": {"value": "t1"}, "agent_id": {"value": "a1"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
              {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]},
               "role": "*"}],
            "command": {"value": "echo hi", "environment": {"variables": [{"name": "A", "value": "1"}]}},
            "kill_policy": {"grace_period": {"nanoseconds": 2000000000}}
          }]}}]}
    }))
    .expect("valid");
    let MesosCall::Call {
        call: Some(Call::Accept(a)),
        ..
    } = c
    else {
        panic!("not an accept: {c:?}")
    };
    assert_eq!(a.offer_ids, vec!["o-1"]);
    assert_eq!(a.filters.and_then(|f| f.refuse_seconds), Some(3.0));
    let Some(operation::Operation::Launch(l)) = &a.operations[0].operation else {
        panic!("no launch")
    };
    let t = &l.tasks[0];
    let cmd = t.command.as_ref().expect("command");
    assert!(cmd.shell, "Mesos commands default to the shell");
    assert_eq!(cmd.value, "echo hi");
    assert_eq!(cmd.environment.get("A").map(String::as_str), Some("1"));
    assert_eq!(t.kill_grace_period_secs, 2.0);
    assert_eq!(t.resources[1].role, "", "`*` is unreserved");
}

#[test]
fn unsupported_pieces_are_named() {
    for (task, needle) in [
        (json!({"executor": {}}), "executor"),
        (
            json!({"command": {"value": "x", "uris": [{"value": "http://x"}]}}),
            "uris",
        ),
        (
            json!({"command": {"value": "x"}, "container": {"type": "DOCKER"}}),
            "DOCKER",
        ),
    ] {
        let mut task = task;
        task["task_id"] = json!({"value": "t"});
        let e = call(json!({"type": "ACCEPT", "framework_id": {"value": "f"},
            "accept": {"offer_ids": [], "operations": [{"type": "LAUNCH",
            "launch": {"task_infos": [task]}}]}}))
        .expect_err("refused");
        assert!(e.contains(needle), "{e}");
    }
    let e = call(json!({"type": "ACCEPT", "framework_id": {"value": "f"},
        "accept": {"operations": [{"type": "RESERVE"}]}}))
    .expect_err("refused");
    assert!(e.contains("RESERVE"), "{e}");
}

#[test]
fn malformed_bodies_name_the_problem() {
    assert!(parse_call(b"{not json")
        .unwrap_err()
        .contains("not valid JSON"));
    assert!(call(json!({"type": "DECLINE"}))
        .unwrap_err()
        .contains("framework_id"));
    assert!(call(json!({"framework_id": {"value": "f"}}))
        .unwrap_err()
        .contains("Call.type"));
}

#[test]
fn update_uuid_round_trips_through_acknowledge() {
    let ev = Event {
        event: Some(event::Event::Update(mezz_proto::v1::Update {
            status: Some(TaskStatus {
                task_id: "t1".into(),
                agent_id: "a1".into(),
                state: TaskState::Finished as i32,
                uuid: "u-42".into(),
                ..Default::default()
            }),
        })),
    };
    let master = MasterInfo {
        id: "1".into(),
        address: "127.0.0.1:5050".into(),
    };
    let j = event_json(&ev, &master).expect("event");
    assert_eq!(j["update"]["status"]["state"], "TASK_FINISHED");
    let ack = call(
        json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "f"},
        "acknowledge": {"agent_id": j["update"]["status"]["agent_id"],
          "task_id": j["update"]["status"]["task_id"],
          "uuid": j["update"]["status"]["uuid"]}}),
    )
    .expect("ack");
    let MesosCall::Call {
        call: Some(Call::Acknowledge { uuid, .. }),
        ..
    } = ack
    else {
        panic!("not an ack")
    };
    assert_eq!(uuid, "u-42");
}

#[test]
fn every_task_state_has_its_mesos_name() {
    for s in 1..=13 {
        let ours = TaskState::try_from(s).expect("state").as_str_name();
        assert_eq!(
            task_state_name(s),
            ours.replace("TASK_STATE_", "TASK_"),
            "state {ours}"
        );
    }
}

#[test]
fn records_are_length_prefixed() {
    let r = record(json!({"type": "HEARTBEAT"}).to_string().as_bytes());
    assert_eq!(r, b"20\n{\"type\":\"HEARTBEAT\"}".to_vec());
}
