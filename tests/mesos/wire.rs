//! The HTTP status codes Mesos gives for bad calls, checked call by call.

use super::super::*;

#[test]
fn bad_calls_get_mesos_status_codes() {
    let c = Cluster::start(RESOURCES, &[]);
    let addr = c.master_addr();
    let json = [("Content-Type", "application/json")];

    let (code, _, body) = request(&addr, "GET", "/version", &[], b"");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("version JSON");
    for part in v["version"].as_str().expect("version").split('.') {
        part.parse::<u32>().expect("dotted integers");
    }

    let (code, _, body) = request(&addr, "POST", "/api/v1/scheduler", &json, b"{not json");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not valid JSON"), "{body}");

    let decline = |fid: &str| {
        format!(
            r#"{{"type":"DECLINE","framework_id":{{"value":"{fid}"}},"decline":{{"offer_ids":[]}}}}"#
        )
    };
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &json,
        decline("nobody-subscribed").as_bytes(),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("SUBSCRIBE first"), "{body}");

    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[("Content-Type", "text/plain")],
        b"SUBSCRIBE",
    );
    assert_eq!(code, 415, "{body}");
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[("Content-Type", "application/x-protobuf")],
        b"\xff\xff\xff",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a protobuf"), "{body}");

    let big = vec![b' '; 5 * 1024 * 1024];
    let (code, _, body) = request(&addr, "POST", "/api/v1/scheduler", &json, &big);
    assert_eq!(code, 413, "{body}");

    let mut sub = RawSubscription::open(&addr);
    let fid = sub.framework_id.clone();
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &json,
        decline(&fid).as_bytes(),
    );
    assert_eq!(code, 400, "no stream id: {body}");
    assert!(body.contains("Mesos-Stream-Id"), "{body}");
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[json[0], ("Mesos-Stream-Id", "not-the-stream")],
        decline(&fid).as_bytes(),
    );
    assert_eq!(code, 400, "wrong stream id: {body}");
    assert!(body.contains("not-the-stream"), "{body}");

    let stream_id = sub.stream_id.clone();
    let with_id = [json[0], ("Mesos-Stream-Id", stream_id.as_str())];
    let post = |body: &str| {
        request(
            &addr,
            "POST",
            "/api/v1/scheduler",
            &with_id,
            body.as_bytes(),
        )
    };
    let accept = format!(
        r#"{{"type":"ACCEPT","framework_id":{{"value":"{fid}"}},"accept":{{"offer_ids":[{{"value":"no-such-offer"}}],"operations":[]}}}}"#
    );
    let (code, _, body) = post(&accept);
    assert_eq!(code, 400, "unknown offer: {body}");
    assert!(body.contains("no-such-offer"), "{body}");

    // A launch bigger than its offer: accepted as a call and answered, as
    // Mesos does, with TASK_ERROR naming the shortfall; nothing runs.
    let next_offer = |sub: &mut RawSubscription| loop {
        let ev = sub.next_record();
        if ev["type"] == "OFFERS" {
            break ev["offers"]["offers"][0].clone();
        }
    };
    let launch = |offer: &serde_json::Value, task: &str, cpus: f64| {
        serde_json::json!({"type": "ACCEPT", "framework_id": {"value": fid},
            "accept": {"offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH",
            "launch": {"task_infos": [{"name": "t", "task_id": {"value": task},
            "agent_id": offer["agent_id"],
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}}],
            "command": {"value": "sleep 30"}}]}}]}})
        .to_string()
    };
    let offer = next_offer(&mut sub);
    let (code, _, body) = post(&launch(&offer, "too-big", 64.0));
    assert_eq!(code, 202, "launch over the offer: {body}");
    let update = loop {
        let ev = sub.next_record();
        if ev["type"] == "UPDATE" {
            break ev;
        }
    };
    let st = &update["update"]["status"];
    assert_eq!(st["task_id"]["value"], "too-big", "{update}");
    assert_eq!(st["state"], "TASK_ERROR", "{update}");
    assert!(
        st["message"].as_str().is_some_and(|m| m.contains("cpus")),
        "{update}"
    );
    assert!(c.active_tasks().is_empty(), "nothing was launched");

    let offer = next_offer(&mut sub);
    let (code, _, body) = post(&launch(&offer, "t1", 0.5));
    assert_eq!(code, 202, "launch within the offer: {body}");
    assert!(body.is_empty());
    // The same offer again: as in Mesos, the call is taken and the task
    // dropped with a message that names the offer.
    let (code, _, body) = post(&launch(&offer, "t2", 0.5));
    assert_eq!(code, 202, "the same offer accepted twice: {body}");

    // UPDATEs carry agent_id and task_id with their uuid; KILL ends the task.
    let kill = format!(
        r#"{{"type":"KILL","framework_id":{{"value":"{fid}"}},"kill":{{"task_id":{{"value":"t1"}}}}}}"#
    );
    let mut states = vec![];
    let mut t2_dropped = false;
    while !states.contains(&"TASK_KILLED".to_string()) || !t2_dropped {
        let ev = sub.next_record();
        if ev["type"] != "UPDATE" {
            continue;
        }
        let st = &ev["update"]["status"];
        if st["task_id"]["value"] == "t2" {
            assert!(
                ["TASK_DROPPED", "TASK_LOST", "TASK_ERROR"]
                    .contains(&st["state"].as_str().unwrap_or("")),
                "{ev}"
            );
            let m = st["message"].as_str().unwrap_or("");
            assert!(
                m.contains("no longer valid")
                    && m.contains(offer["id"]["value"].as_str().unwrap_or("?")),
                "{ev}"
            );
            t2_dropped = true;
            continue;
        }
        assert_eq!(st["task_id"]["value"], "t1", "{ev}");
        if st.get("uuid").is_some() {
            assert!(st["agent_id"]["value"].is_string(), "{ev}");
            let ack = serde_json::json!({"type": "ACKNOWLEDGE", "framework_id": {"value": fid},
                "acknowledge": {"agent_id": st["agent_id"], "task_id": st["task_id"],
                "uuid": st["uuid"]}});
            let (code, _, body) = post(&ack.to_string());
            assert_eq!(code, 202, "{body}");
        }
        let state = st["state"].as_str().expect("state").to_string();
        if state == "TASK_RUNNING" {
            let (code, _, body) = post(&kill);
            assert_eq!(code, 202, "{body}");
        }
        states.push(state);
    }
    assert!(states.contains(&"TASK_RUNNING".to_string()), "{states:?}");
    assert!(
        c.task("t2").is_none_or(|t| t["state"] != "RUNNING"),
        "t2 never ran"
    );

    // What operator tools read, in Mesos' shape, while the framework is
    // still subscribed.
    for path in ["/master/state", "/state.json", "/master/state.json"] {
        let (code, _, body) = request(&addr, "GET", path, &[], b"");
        assert_eq!(code, 200, "{path}: {body}");
        let s: serde_json::Value = serde_json::from_str(&body).expect("state JSON");
        assert_eq!(s["leader"], format!("master@{addr}"), "{path}");
        assert_eq!(s["activated_slaves"], 1, "{path}");
        assert_eq!(s["slaves"][0]["resources"]["cpus"], 2.0, "{path}");
        assert_eq!(
            s["slaves"][0]["resources"]["ports"], "[31000-31099]",
            "{path}"
        );
        let fw = s["frameworks"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["id"] == fid.as_str()))
            .unwrap_or_else(|| panic!("{path}: framework {fid} missing: {s}"));
        assert_eq!(fw["name"], "raw");
        assert_eq!(fw["active"], true);
        let done = fw["completed_tasks"].as_array().expect("completed_tasks");
        assert!(
            done.iter()
                .any(|t| t["id"] == "t1" && t["state"] == "TASK_KILLED"),
            "{path}: {fw}"
        );
    }
    let (code, headers, _) = request(&addr, "GET", "/master/redirect", &[], b"");
    assert_eq!(code, 307);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("//{addr}").as_str())
    );
}
