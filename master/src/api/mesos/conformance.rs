//! Conformance of the Mesos JSON with Mesos' own protobuf definitions
//! (`proto/mesos/`, Mesos 1.11.0): every kind of event we send decodes as a
//! `mesos.v1.scheduler.Event` by field name, with unknown fields refused,
//! enums by name and every proto2 `required` field present, and then as
//! prost's generated type; every call shape the codec reads is a valid
//! `mesos.v1.scheduler.Call`. A renamed or misspelt field fails here.

use mezz_proto::mesos::v1::scheduler as mesos;
use mezz_proto::v1::{
    event, resource, Error, Event, Failure, Heartbeat, Offer, Offers, Range, Ranges, Rescind,
    Resource, Set, StatusSource, Subscribed, TaskReason, TaskState, TaskStatus, Update,
};
use prost::Message as _;
use prost_reflect::{
    Cardinality, DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor,
    ReflectMessage, Value,
};
use serde_json::json;

use super::codec::{self, MasterInfo, MesosCall};

fn pool() -> DescriptorPool {
    DescriptorPool::decode(mezz_proto::mesos::FILE_DESCRIPTOR_SET).expect("Mesos descriptors")
}

/// `json` as Mesos' message `name`; panics naming the field Mesos does
/// not know or the required field that is missing.
fn decode(name: &str, json: &serde_json::Value) -> DynamicMessage {
    let desc = pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("no message {name}"));
    let msg = DynamicMessage::deserialize_with_options(
        desc,
        json.clone(),
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .unwrap_or_else(|e| panic!("{json} is not a valid {name}: {e}"));
    check_required(&msg, name);
    msg
}

/// Every proto2 `required` field is set, recursively.
fn check_required(msg: &DynamicMessage, path: &str) {
    let desc: MessageDescriptor = msg.descriptor();
    for field in desc.fields() {
        let here = format!("{path}.{}", field.name());
        if field.cardinality() == Cardinality::Required {
            assert!(msg.has_field(&field), "required field {here} is missing");
        }
        if !msg.has_field(&field) {
            continue;
        }
        match &*msg.get_field(&field) {
            Value::Message(m) => check_required(m, &here),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(m) = item {
                        check_required(m, &format!("{here}[{i}]"));
                    }
                }
            }
            _ => {}
        }
    }
}

fn scalar(name: &str, v: f64, role: &str) -> Resource {
    Resource {
        name: name.into(),
        value: Some(resource::Value::Scalar(v)),
        role: role.into(),
    }
}

/// One of each event we send, every optional part filled in.
fn every_event() -> Vec<Event> {
    let ev = |e| Event { event: Some(e) };
    vec![
        ev(event::Event::Subscribed(Subscribed {
            protocol_version: 1,
            framework_id: "f-1".into(),
            heartbeat_interval_secs: 15.0,
            master_id: "m".into(),
        })),
        ev(event::Event::Offers(Offers {
            offers: vec![Offer {
                id: "o-1".into(),
                framework_id: "f-1".into(),
                agent_id: "a-1".into(),
                hostname: "host".into(),
                agent_address: "127.0.0.1:5051".into(),
                resources: vec![
                    scalar("cpus", 2.0, ""),
                    scalar("gpus", 1.0, "ml"),
                    Resource {
                        name: "ports".into(),
                        value: Some(resource::Value::Ranges(Ranges {
                            range: vec![Range {
                                begin: 31000,
                                end: 31009,
                            }],
                        })),
                        role: String::new(),
                    },
                    Resource {
                        name: "zones".into(),
                        value: Some(resource::Value::Set(Set {
                            item: vec!["a".into()],
                        })),
                        role: String::new(),
                    },
                ],
                attributes: [("rack".to_string(), "r1".to_string())].into(),
            }],
        })),
        ev(event::Event::Rescind(Rescind {
            offer_id: "o-1".into(),
        })),
        ev(event::Event::Update(Update {
            status: Some(TaskStatus {
                task_id: "t-1".into(),
                framework_id: "f-1".into(),
                agent_id: "a-1".into(),
                state: TaskState::Failed as i32,
                reason: TaskReason::MemoryLimit as i32,
                message: "out of memory".into(),
                timestamp: 1.5e9,
                uuid: "u-1".into(),
                exit_code: Some(137),
                signal: Some(9),
                source: StatusSource::Agent as i32,
                healthy: Some(false),
                cpu_seconds: None,
                peak_memory_bytes: None,
                gpu_utilization_pct: None,
                gpu_peak_memory_mb: None,
            }),
        })),
        ev(event::Event::Failure(Failure {
            agent_id: "a-1".into(),
            message: "gone".into(),
        })),
        ev(event::Event::Error(Error {
            message: "removed".into(),
        })),
        ev(event::Event::Heartbeat(Heartbeat {})),
    ]
}

#[test]
fn every_event_is_a_mesos_event() {
    let master = MasterInfo {
        id: "m".into(),
        address: "127.0.0.1:5050".into(),
    };
    let mut kinds = vec![];
    for ev in every_event() {
        let j = codec::event_json(&ev, &master).expect("an event");
        let dynamic = decode("mesos.v1.scheduler.Event", &j);
        // And through prost's generated code, by Mesos' field numbers.
        let bytes = dynamic.encode_to_vec();
        let decoded = mesos::Event::decode(bytes.as_slice()).expect("prost decodes it");
        kinds.push(decoded.r#type().as_str_name().to_string());
        if let Some(u) = &decoded.update {
            assert_eq!(u.status.uuid.as_deref(), Some(b"u-1".as_slice()));
            assert_eq!(u.status.task_id.value, "t-1");
            assert_eq!(
                u.status.agent_id.as_ref().map(|a| a.value.as_str()),
                Some("a-1")
            );
        }
        if let Some(s) = &decoded.subscribed {
            let m = s.master_info.as_ref().expect("master_info");
            assert_eq!((m.port, m.version.as_deref()), (5050, Some("1.11.0")));
        }
    }
    assert_eq!(
        kinds,
        [
            "SUBSCRIBED",
            "OFFERS",
            "RESCIND",
            "UPDATE",
            "FAILURE",
            "ERROR",
            "HEARTBEAT"
        ]
    );
}

#[test]
fn every_task_state_is_a_mesos_task_state() {
    let pool = pool();
    let states = pool.get_enum_by_name("mesos.v1.TaskState").expect("enum");
    for s in 1..=13 {
        let name = codec::task_state_name(s);
        assert!(
            states.get_value_by_name(name).is_some(),
            "{name} is no Mesos task state"
        );
    }
}

/// The call shapes the codec reads, as clients send them.
fn calls() -> Vec<serde_json::Value> {
    let fid = json!({"value": "f-1"});
    vec![
        json!({"type": "SUBSCRIBE", "framework_id": fid, "subscribe": {"framework_info": {
            "user": "u", "name": "n", "id": fid, "failover_timeout": 10.0, "checkpoint": true,
            "role": "*", "roles": ["ml"], "hostname": "h", "webui_url": "http://h",
            "capabilities": [{"type": "GPU_RESOURCES"}, {"type": "PARTITION_AWARE"}]}}}),
        json!({"type": "TEARDOWN", "framework_id": fid}),
        json!({"type": "ACCEPT", "framework_id": fid, "accept": {
            "offer_ids": [{"value": "o-1"}], "filters": {"refuse_seconds": 5.0},
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                "name": "t", "task_id": {"value": "t-1"}, "agent_id": {"value": "a-1"},
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}, "role": "*"},
                    {"name": "ports", "type": "RANGES",
                     "ranges": {"range": [{"begin": 31000, "end": 31000}]},
                     "reservations": [{"type": "STATIC", "role": "ml"}]},
                    {"name": "zones", "type": "SET", "set": {"item": ["a"]}}],
                "command": {"value": "echo", "shell": false, "arguments": ["echo", "hi"],
                  "user": "nobody",
                  "environment": {"variables": [{"name": "A", "value": "1"}]}},
                "kill_policy": {"grace_period": {"nanoseconds": 1000000000}},
                "labels": {"labels": [{"key": "k", "value": "v"}]}}]}},
              {"type": "LAUNCH_GROUP", "launch_group": {
                "executor": {"executor_id": {"value": "e"}, "type": "DEFAULT"},
                "task_group": {"tasks": [{"name": "g", "task_id": {"value": "t-2"},
                  "agent_id": {"value": "a-1"}, "resources": [],
                  "command": {"value": "true"}}]}}}]}}),
        json!({"type": "DECLINE", "framework_id": fid, "decline": {
            "offer_ids": [{"value": "o-1"}], "filters": {"refuse_seconds": 3600.0}}}),
        json!({"type": "REVIVE", "framework_id": fid, "revive": {"roles": ["ml"]}}),
        json!({"type": "SUPPRESS", "framework_id": fid, "suppress": {"roles": ["ml"]}}),
        json!({"type": "KILL", "framework_id": fid, "kill": {"task_id": {"value": "t-1"},
            "agent_id": {"value": "a-1"},
            "kill_policy": {"grace_period": {"nanoseconds": 5}}}}),
        json!({"type": "SHUTDOWN", "framework_id": fid, "shutdown": {
            "executor_id": {"value": "e"}, "agent_id": {"value": "a-1"}}}),
        json!({"type": "ACKNOWLEDGE", "framework_id": fid, "acknowledge": {
            "agent_id": {"value": "a-1"}, "task_id": {"value": "t-1"},
            "uuid": codec::encode_uuid("u-1")}}),
        json!({"type": "RECONCILE", "framework_id": fid, "reconcile": {"tasks": [
            {"task_id": {"value": "t-1"}, "agent_id": {"value": "a-1"}}]}}),
        json!({"type": "RECONCILE", "framework_id": fid, "reconcile": {"tasks": []}}),
        json!({"type": "MESSAGE", "framework_id": fid, "message": {
            "agent_id": {"value": "a-1"}, "executor_id": {"value": "e"}, "data": "aGk="}}),
        json!({"type": "REQUEST", "framework_id": fid, "request": {"requests": []}}),
    ]
}

#[test]
fn every_call_the_codec_reads_is_a_mesos_call() {
    for c in calls() {
        decode("mesos.v1.scheduler.Call", &c);
        let parsed =
            codec::parse_call(c.to_string().as_bytes()).unwrap_or_else(|e| panic!("{c}: {e}"));
        if c["type"] == "SUBSCRIBE" {
            assert!(matches!(parsed, MesosCall::Subscribe(_)), "{c}");
        }
    }
}
