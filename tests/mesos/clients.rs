//! Real Mesos clients, unmodified: pymesos and mesoshttp schedulers, and
//! the protobuf wire format.

use super::super::*;

#[test]
#[ignore = "needs the test Python (pymesos and mesoshttp are installed into it)"]
fn pymesos_scheduler_runs_unchanged() {
    let python = mesos_clients_python();
    let mut c = Cluster::start(RESOURCES, &[]);
    c.add_agent();
    let run = Script::start(
        c.dir.path(),
        &python,
        "pymesos_scheduler.py",
        &[&c.master_addr()],
    );
    let steps = run.wait_ok(Duration::from_secs(240));
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "subscribed",
            "offers",
            "launched",
            "finished",
            "reconciled",
            "filtered",
            "revived",
            "torn_down"
        ]
    );
    assert_eq!(steps[0]["version"], "1.11.0");
    // The task ran through the agent's normal launch path: its output is in
    // its sandbox, read through the master's API.
    let fid = steps[0]["framework_id"].as_str().expect("framework id");
    let tid = steps[2]["task_id"].as_str().expect("task id");
    let task = c.task(tid).expect("the task in /api/state");
    assert_eq!(task["state"], "FINISHED");
    assert_eq!(task["framework_id"], fid);
    let (code, out) = http_get(
        &c.master_addr(),
        &format!("/api/tasks/{fid}/{tid}/files/stdout"),
    )
    .expect("GET stdout");
    assert_eq!(code, 200, "{out}");
    assert!(out.contains("hello from mesos"), "stdout: {out:?}");
    // TEARDOWN removed the framework.
    wait_for("the framework to be gone", Duration::from_secs(20), || {
        c.state()["frameworks"]
            .as_array()
            .is_some_and(|f| f.iter().all(|f| f["id"] != fid))
    });
}

#[test]
fn protobuf_clients_get_protobuf_events() {
    use mezz_proto::mesos::v1::scheduler::{call, event, Call, Event};
    use mezz_proto::mesos::v1::{FrameworkId, FrameworkInfo};
    use prost::Message as _;

    let c = Cluster::start(RESOURCES, &[]);
    let addr = c.master_addr();
    let subscribe = Call {
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info: FrameworkInfo {
                user: "nobody".into(),
                name: "protobuf".into(),
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut sub =
        RawSubscription::start(&addr, "application/x-protobuf", &subscribe.encode_to_vec());
    let first = Event::decode(sub.next_bytes().as_slice()).expect("a protobuf Event");
    assert_eq!(first.r#type(), event::Type::Subscribed);
    let fid = first.subscribed.expect("subscribed").framework_id;
    let offer = loop {
        let ev = Event::decode(sub.next_bytes().as_slice()).expect("a protobuf Event");
        if let Some(o) = ev.offers.and_then(|o| o.offers.into_iter().next()) {
            break o;
        }
    };
    let cpus = offer
        .resources
        .iter()
        .find(|r| r.name == "cpus")
        .and_then(|r| r.scalar.as_ref())
        .map(|s| s.value);
    assert_eq!(cpus, Some(2.0), "{offer:?}");
    let decline = Call {
        framework_id: Some(FrameworkId {
            value: fid.value.clone(),
        }),
        r#type: Some(call::Type::Decline as i32),
        decline: Some(call::Decline {
            offer_ids: vec![offer.id.clone()],
            filters: None,
        }),
        ..Default::default()
    };
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Mesos-Stream-Id", &sub.stream_id),
        ],
        &decline.encode_to_vec(),
    );
    assert_eq!(code, 202, "{body}");
    // The declined offer is gone: a second DECLINE of it names it.
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Mesos-Stream-Id", &sub.stream_id),
        ],
        &decline.encode_to_vec(),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains(&offer.id.value), "{body}");
}

#[test]
#[ignore = "needs the test Python (pymesos and mesoshttp are installed into it)"]
fn mesoshttp_scheduler_runs_unchanged() {
    let python = mesos_clients_python();
    let c = Cluster::start(RESOURCES, &[]);
    let run = Script::start(
        c.dir.path(),
        &python,
        "mesoshttp_scheduler.py",
        &[&format!("http://{}", c.master_addr())],
    );
    let steps = run.wait_ok(Duration::from_secs(300));
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "subscribed",
            "launched",
            "finished",
            "reconciled",
            "revived",
            "torn_down"
        ]
    );
    assert_eq!(steps[3]["state"], "TASK_FINISHED");
    let fid = steps[0]["framework_id"].as_str().expect("framework id");
    let tid = steps[1]["task_id"].as_str().expect("task id");
    let (code, out) = http_get(
        &c.master_addr(),
        &format!("/api/tasks/{fid}/{tid}/files/stdout"),
    )
    .expect("GET stdout");
    assert_eq!(code, 200, "{out}");
    assert!(out.contains("hello from mesoshttp"), "stdout: {out:?}");
    wait_for("the framework to be gone", Duration::from_secs(20), || {
        c.state()["frameworks"]
            .as_array()
            .is_some_and(|f| f.iter().all(|f| f["id"] != fid))
    });
}
