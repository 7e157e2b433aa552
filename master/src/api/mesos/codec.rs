//! Mesos v1 scheduler JSON ↔ our `mezzanine.v1` messages: calls in, events
//! out. Pure functions over `serde_json::Value` (no I/O, no state), so the
//! whole mapping is one place and unit tested without a master.
//!
//! Mesos JSON is the proto3 JSON mapping of `mesos.v1` with the proto field
//! names as written (snake_case), enums as their names and bytes as base64;
//! ids are messages (`{"value": "…"}`). Unknown fields are ignored, `null`
//! means unset, as Mesos does.

use base64::Engine as _;
use mezz_proto::v1::{
    event, operation, resource, AcceptRequest, Capability, CommandInfo, Event, FrameworkInfo,
    Launch, Offer, Operation, Range, Ranges, ReconcileTask, Resource, Set, StatusSource, TaskInfo,
    TaskReason, TaskState, TaskStatus,
};
use serde_json::{json, Map, Value};

use crate::node::Call;

/// The version `/version` reports and `SUBSCRIBED.master_info` carries:
/// dotted integers (clients parse each part with `int()`), at least 1.0 so
/// that they claim `GPU_RESOURCES`.
pub const MESOS_VERSION: &str = "1.11.0";

/// A Mesos call, parsed: SUBSCRIBE carries our framework registration;
/// every other call names its framework and maps to one of our calls, or to
/// nothing (calls Mesos accepts and ignores here).
#[derive(Debug)]
pub enum MesosCall {
    /// SUBSCRIBE.
    Subscribe(FrameworkInfo),
    /// Any other call, for this framework.
    Call {
        /// `framework_id.value`.
        framework_id: String,
        /// `type`, for logs and messages.
        kind: String,
        /// What to ask the master; `None`: accepted and ignored (REQUEST,
        /// MESSAGE, SHUTDOWN: there are no executors to deliver to).
        call: Option<Call>,
    },
}

/// Why a call was refused before it reached the master: the message names
/// the field and what to send instead.
pub type BadCall = String;

/// Parses one call body (`application/json`).
pub fn parse_call(body: &[u8]) -> Result<MesosCall, BadCall> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!("the body is not valid JSON ({e}); send one mesos.v1.scheduler.Call as JSON")
    })?;
    if !v.is_object() {
        return Err("the body must be a JSON object (a mesos.v1.scheduler.Call)".into());
    }
    let kind = str_field(&v, "type")
        .ok_or("Call.type is missing; set it to SUBSCRIBE, ACCEPT, DECLINE, …")?
        .to_string();
    if kind == "SUBSCRIBE" {
        let info = v
            .get("subscribe")
            .and_then(|s| s.get("framework_info"))
            .filter(|i| !i.is_null())
            .ok_or("SUBSCRIBE needs subscribe.framework_info")?;
        let mut info = framework_info(info)?;
        if let Some(id) = id_value(v.get("framework_id")) {
            if !info.id.is_empty() && info.id != id {
                return Err(format!(
                    "framework_id {id} differs from subscribe.framework_info.id {}; send one id",
                    info.id
                ));
            }
            info.id = id;
        }
        return Ok(MesosCall::Subscribe(info));
    }
    let framework_id = id_value(v.get("framework_id"))
        .ok_or_else(|| format!("{kind} needs framework_id.value (from SUBSCRIBED)"))?;
    let body = |key: &str| v.get(key).filter(|b| !b.is_null());
    let fid = framework_id.clone();
    let call = match kind.as_str() {
        "TEARDOWN" => Some(Call::Teardown(fid)),
        "ACCEPT" => {
            let a = body("accept").ok_or("ACCEPT needs the field accept")?;
            Some(Call::Accept(accept(fid, a)?))
        }
        "DECLINE" => {
            let d = body("decline").ok_or("DECLINE needs the field decline")?;
            Some(Call::Decline {
                framework_id: fid,
                offer_ids: ids(d.get("offer_ids"), "decline.offer_ids")?,
                refuse_seconds: refuse_seconds(d.get("filters"))?,
            })
        }
        // Our frameworks have one role, so a per-role REVIVE or SUPPRESS is
        // the framework's own.
        "REVIVE" => Some(Call::Revive(fid)),
        "SUPPRESS" => Some(Call::Suppress(fid)),
        "KILL" => {
            let k = body("kill").ok_or("KILL needs the field kill")?;
            let task_id = id_value(k.get("task_id")).ok_or("KILL needs kill.task_id.value")?;
            Some(Call::Kill {
                framework_id: fid,
                task_id,
                grace: grace_period(k.get("kill_policy"))?,
            })
        }
        "ACKNOWLEDGE" => {
            let a = body("acknowledge").ok_or("ACKNOWLEDGE needs the field acknowledge")?;
            let uuid = str_field(a, "uuid").ok_or("ACKNOWLEDGE needs acknowledge.uuid")?;
            Some(Call::Acknowledge {
                framework_id: fid,
                agent_id: id_value(a.get("agent_id"))
                    .ok_or("ACKNOWLEDGE needs acknowledge.agent_id.value")?,
                task_id: id_value(a.get("task_id"))
                    .ok_or("ACKNOWLEDGE needs acknowledge.task_id.value")?,
                uuid: decode_uuid(uuid)?,
            })
        }
        "RECONCILE" => {
            let tasks = match body("reconcile").and_then(|r| r.get("tasks")) {
                None | Some(Value::Null) => vec![],
                Some(Value::Array(ts)) => ts
                    .iter()
                    .map(|t| {
                        Ok(ReconcileTask {
                            task_id: id_value(t.get("task_id"))
                                .ok_or("each reconcile.tasks entry needs task_id.value")?,
                            agent_id: id_value(t.get("agent_id")).unwrap_or_default(),
                        })
                    })
                    .collect::<Result<_, BadCall>>()?,
                Some(_) => return Err("reconcile.tasks must be a list".into()),
            };
            Some(Call::Reconcile(fid, tasks))
        }
        // There are no executors: nothing to shut down or to message.
        // REQUEST is accepted and ignored, as in Mesos.
        "SHUTDOWN" | "MESSAGE" | "REQUEST" => None,
        other => {
            return Err(format!(
                "call type {other} is not supported by this master; supported: SUBSCRIBE, \
                 TEARDOWN, ACCEPT, DECLINE, REVIVE, SUPPRESS, KILL, SHUTDOWN, ACKNOWLEDGE, \
                 RECONCILE, MESSAGE, REQUEST"
            ))
        }
    };
    Ok(MesosCall::Call {
        framework_id,
        kind,
        call,
    })
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `{"value": "…"}` → the string.
fn id_value(v: Option<&Value>) -> Option<String> {
    v.and_then(|v| v.get("value"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn ids(v: Option<&Value>, what: &str) -> Result<Vec<String>, BadCall> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|i| id_value(Some(i)).ok_or_else(|| format!("each of {what} needs a value")))
            .collect(),
        Some(_) => Err(format!("{what} must be a list of {{\"value\": …}}")),
    }
}

fn number(v: Option<&Value>, what: &str) -> Result<Option<f64>, BadCall> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| format!("{what} must be a number")),
    }
}

fn refuse_seconds(filters: Option<&Value>) -> Result<Option<f64>, BadCall> {
    let Some(f) = filters.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let s = number(f.get("refuse_seconds"), "filters.refuse_seconds")?;
    if s.is_some_and(|s| s < 0.0) {
        return Err("filters.refuse_seconds must not be negative".into());
    }
    Ok(s)
}

/// `kill_policy.grace_period.nanoseconds` in seconds.
fn grace_period(policy: Option<&Value>) -> Result<Option<f64>, BadCall> {
    let ns = number(
        policy
            .and_then(|p| p.get("grace_period"))
            .and_then(|g| g.get("nanoseconds")),
        "kill_policy.grace_period.nanoseconds",
    )?;
    if ns.is_some_and(|n| n < 0.0) {
        return Err("kill_policy.grace_period.nanoseconds must not be negative".into());
    }
    Ok(ns.map(|n| n / 1e9))
}

/// The longest failover timeout our registry keeps; Mesos frameworks ask
/// for up to a week (and some for more, meaning "forever").
const MAX_FAILOVER_SECS: f64 = crate::cluster::MAX_FAILOVER_SECS;

fn framework_info(v: &Value) -> Result<FrameworkInfo, BadCall> {
    let name = str_field(v, "name").unwrap_or_default().to_string();
    let mut roles: Vec<String> = match v.get("roles") {
        Some(Value::Array(r)) => r
            .iter()
            .map(|r| {
                r.as_str()
                    .map(str::to_string)
                    .ok_or("framework_info.roles must be a list of strings")
            })
            .collect::<Result<_, _>>()?,
        _ => vec![],
    };
    if let Some(r) = str_field(v, "role") {
        if roles.is_empty() {
            roles.push(r.to_string());
        }
    }
    if roles.len() > 1 {
        return Err(format!(
            "framework_info.roles {roles:?}: a framework here has one role; subscribe with one"
        ));
    }
    let mut capabilities = vec![];
    if let Some(Value::Array(caps)) = v.get("capabilities") {
        for c in caps {
            match str_field(c, "type") {
                Some("GPU_RESOURCES") => capabilities.push(Capability::GpuResources as i32),
                Some("PARTITION_AWARE") => capabilities.push(Capability::PartitionAware as i32),
                // MULTI_ROLE, TASK_KILLING_STATE, … change nothing here.
                _ => {}
            }
        }
    }
    let failover = number(v.get("failover_timeout"), "framework_info.failover_timeout")?
        .unwrap_or(0.0)
        .clamp(0.0, MAX_FAILOVER_SECS);
    Ok(FrameworkInfo {
        id: id_value(v.get("id")).unwrap_or_default(),
        name,
        user: str_field(v, "user").unwrap_or_default().to_string(),
        role: roles.pop().unwrap_or_default(),
        failover_timeout_secs: failover,
        capabilities,
        hostname: str_field(v, "hostname").unwrap_or_default().to_string(),
        webui_url: str_field(v, "webui_url").unwrap_or_default().to_string(),
        // Who registered it is the master's to say, from the token, never
        // the client's (Mesos' `principal` field is ignored).
        principal: String::new(),
        priority: String::new(),
    })
}

fn accept(framework_id: String, a: &Value) -> Result<AcceptRequest, BadCall> {
    let offer_ids = ids(a.get("offer_ids"), "accept.offer_ids")?;
    let mut operations = vec![];
    let ops = match a.get("operations") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(ops)) => ops.clone(),
        Some(_) => return Err("accept.operations must be a list".into()),
    };
    for op in &ops {
        let kind = str_field(op, "type").unwrap_or("UNKNOWN");
        let tasks = match kind {
            "LAUNCH" => op.get("launch").and_then(|l| l.get("task_infos")),
            "LAUNCH_GROUP" => op
                .get("launch_group")
                .and_then(|l| l.get("task_group"))
                .and_then(|g| g.get("tasks")),
            "RESERVE" | "UNRESERVE" | "CREATE" | "DESTROY" | "GROW_VOLUME" | "SHRINK_VOLUME"
            | "CREATE_DISK" | "DESTROY_DISK" => {
                return Err(format!(
                    "operation {kind} is not supported: this master has no dynamic \
                     reservations or volumes; reserve with the agent's --resources instead"
                ))
            }
            other => return Err(format!("unknown operation type {other}")),
        };
        let tasks = match tasks {
            Some(Value::Array(ts)) => ts
                .iter()
                .map(task_info)
                .collect::<Result<Vec<_>, BadCall>>()?,
            _ => return Err(format!("operation {kind} carries no task list")),
        };
        operations.push(Operation {
            operation: Some(operation::Operation::Launch(Launch { tasks })),
        });
    }
    Ok(AcceptRequest {
        framework_id,
        offer_ids,
        operations,
        filters: Some(mezz_proto::v1::Filters {
            refuse_seconds: refuse_seconds(a.get("filters"))?,
        }),
    })
}

fn task_info(t: &Value) -> Result<TaskInfo, BadCall> {
    let task_id = id_value(t.get("task_id")).ok_or("each task needs task_id.value")?;
    let what = |f: &str| format!("task {task_id}: {f}");
    if t.get("executor").is_some_and(|e| !e.is_null()) {
        return Err(what(
            "custom executors are not supported; give the task a command instead",
        ));
    }
    if t.get("health_check").is_some_and(|e| !e.is_null()) {
        return Err(what(
            "health_check is not supported through the Mesos API; leave it out",
        ));
    }
    if let Some(c) = t.get("container").filter(|c| !c.is_null()) {
        let kind = str_field(c, "type").unwrap_or("MESOS");
        let image = c.get("mesos").and_then(|m| m.get("image")).is_some();
        if kind != "MESOS" || image {
            return Err(what(
                "container images (DOCKER, MESOS with an image) are not supported; tasks run \
                 as processes on the agent's host system; leave container out",
            ));
        }
    }
    let c = t
        .get("command")
        .filter(|c| !c.is_null())
        .ok_or_else(|| what("command is missing; give a CommandInfo"))?;
    if c.get("uris")
        .and_then(Value::as_array)
        .is_some_and(|u| !u.is_empty())
    {
        return Err(what(
            "command.uris is not supported: agents fetch nothing; put the files where the \
             command can read them",
        ));
    }
    let mut environment = std::collections::BTreeMap::new();
    if let Some(Value::Array(vars)) = c.get("environment").and_then(|e| e.get("variables")) {
        for var in vars {
            let name = str_field(var, "name")
                .ok_or_else(|| what("each command.environment variable needs a name"))?;
            if str_field(var, "type").is_some_and(|t| t == "SECRET") {
                return Err(what("SECRET environment variables are not supported"));
            }
            environment.insert(
                name.to_string(),
                str_field(var, "value").unwrap_or_default().to_string(),
            );
        }
    }
    let arguments = match c.get("arguments") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| what("command.arguments must be strings"))?,
        _ => vec![],
    };
    let mut labels = std::collections::BTreeMap::new();
    if let Some(Value::Array(ls)) = t.get("labels").and_then(|l| l.get("labels")) {
        for l in ls {
            if let Some(k) = str_field(l, "key") {
                labels.insert(
                    k.to_string(),
                    str_field(l, "value").unwrap_or_default().to_string(),
                );
            }
        }
    }
    let resources = match t.get("resources") {
        Some(Value::Array(rs)) => rs
            .iter()
            .map(|r| resource_in(r).map_err(|e| what(&e)))
            .collect::<Result<_, _>>()?,
        _ => vec![],
    };
    Ok(TaskInfo {
        name: str_field(t, "name").unwrap_or(&task_id).to_string(),
        // Pre-1.0 clients (mesoshttp) name the agent `slave_id`.
        agent_id: id_value(t.get("agent_id"))
            .or_else(|| id_value(t.get("slave_id")))
            .unwrap_or_default(),
        resources,
        command: Some(CommandInfo {
            value: str_field(c, "value").unwrap_or_default().to_string(),
            arguments,
            // Mesos' CommandInfo.shell defaults to true.
            shell: c.get("shell").and_then(Value::as_bool).unwrap_or(true),
            environment,
            user: str_field(c, "user").unwrap_or_default().to_string(),
            secret_keys: vec![],
        }),
        kill_grace_period_secs: grace_period(t.get("kill_policy"))?.unwrap_or(0.0),
        labels,
        health_check: None,
        priority: String::new(),
        max_run_secs: 0.0,
        task_id,
    })
}

/// A Mesos `Resource` → ours. The reservation is the last of
/// `reservations` (Mesos' refinement stack) or the pre-1.4 `role`; `*` is
/// unreserved.
fn resource_in(r: &Value) -> Result<Resource, BadCall> {
    let name = str_field(r, "name").ok_or("each resource needs a name")?;
    let value = if let Some(s) = r.get("scalar").filter(|s| !s.is_null()) {
        let v = number(s.get("value"), "scalar.value")?
            .ok_or_else(|| format!("resource {name}: scalar.value is missing"))?;
        resource::Value::Scalar(v)
    } else if let Some(rs) = r.get("ranges").filter(|s| !s.is_null()) {
        let mut range = vec![];
        if let Some(Value::Array(a)) = rs.get("range") {
            for x in a {
                let b = x.get("begin").and_then(Value::as_u64);
                let e = x.get("end").and_then(Value::as_u64);
                match (b, e) {
                    (Some(begin), Some(end)) => range.push(Range { begin, end }),
                    _ => return Err(format!("resource {name}: each range needs begin and end")),
                }
            }
        }
        resource::Value::Ranges(Ranges { range })
    } else if let Some(s) = r.get("set").filter(|s| !s.is_null()) {
        let item = match s.get("item") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        };
        resource::Value::Set(Set { item })
    } else {
        return Err(format!(
            "resource {name} has no scalar, ranges or set value"
        ));
    };
    let mut role = str_field(r, "role").unwrap_or_default().to_string();
    if let Some(Value::Array(res)) = r.get("reservations") {
        if let Some(last) = res.iter().rev().find_map(|x| str_field(x, "role")) {
            role = last.to_string();
        }
    }
    if role == "*" {
        role.clear();
    }
    Ok(Resource {
        name: name.to_string(),
        value: Some(value),
        role,
    })
}

/// Ours → a Mesos `Resource`.
fn resource_out(r: &Resource) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(r.name));
    match &r.value {
        Some(resource::Value::Scalar(v)) => {
            m.insert("type".into(), json!("SCALAR"));
            m.insert("scalar".into(), json!({ "value": v }));
        }
        Some(resource::Value::Ranges(rs)) => {
            m.insert("type".into(), json!("RANGES"));
            let range: Vec<Value> = rs
                .range
                .iter()
                .map(|x| json!({"begin": x.begin, "end": x.end}))
                .collect();
            m.insert("ranges".into(), json!({ "range": range }));
        }
        Some(resource::Value::Set(s)) => {
            m.insert("type".into(), json!("SET"));
            m.insert("set".into(), json!({ "item": s.item }));
        }
        None => {}
    }
    if r.role.is_empty() {
        m.insert("role".into(), json!("*"));
    } else {
        m.insert("role".into(), json!(r.role));
        m.insert(
            "reservations".into(),
            json!([{ "type": "STATIC", "role": r.role }]),
        );
    }
    Value::Object(m)
}

/// What `SUBSCRIBED.master_info` says about the master that answers.
#[derive(Debug, Clone)]
pub struct MasterInfo {
    /// Our master id.
    pub id: String,
    /// `host:port` of its HTTP port.
    pub address: String,
}

impl MasterInfo {
    /// Mesos' `MasterInfo`: `ip` is the IPv4 address as Mesos stores it
    /// (network byte order read as a little-endian integer).
    pub fn to_json(&self) -> Value {
        let (host, port) = self
            .address
            .rsplit_once(':')
            .map(|(h, p)| (h.to_string(), p.parse::<u32>().unwrap_or(5050)))
            .unwrap_or((self.address.clone(), 5050));
        let ip = host
            .parse::<std::net::Ipv4Addr>()
            .map(|a| u32::from_le_bytes(a.octets()))
            .unwrap_or(0);
        json!({
            "id": self.id,
            "ip": ip,
            "port": port,
            "hostname": host,
            "version": MESOS_VERSION,
            "address": {"hostname": host, "ip": host, "port": port},
        })
    }
}

/// `mesos.v1.TaskState` name of ours: one to one (TASK_STATE_X → TASK_X).
pub fn task_state_name(state: i32) -> &'static str {
    match TaskState::try_from(state).unwrap_or(TaskState::Unknown) {
        TaskState::Staging => "TASK_STAGING",
        TaskState::Starting => "TASK_STARTING",
        TaskState::Running => "TASK_RUNNING",
        TaskState::Finished => "TASK_FINISHED",
        TaskState::Failed => "TASK_FAILED",
        TaskState::Killing => "TASK_KILLING",
        TaskState::Killed => "TASK_KILLED",
        TaskState::Lost => "TASK_LOST",
        TaskState::Error => "TASK_ERROR",
        TaskState::Dropped => "TASK_DROPPED",
        TaskState::Unreachable => "TASK_UNREACHABLE",
        TaskState::Gone => "TASK_GONE",
        TaskState::Unknown | TaskState::Unspecified => "TASK_UNKNOWN",
    }
}

/// `mesos.v1.TaskStatus.Reason` closest to ours; `None` where Mesos sets
/// no reason (a plain exit, a kill on request).
fn reason_name(reason: i32) -> Option<&'static str> {
    Some(match TaskReason::try_from(reason).ok()? {
        TaskReason::Unspecified | TaskReason::KilledByRequest => return None,
        TaskReason::CommandExited | TaskReason::CommandSignaled => "REASON_COMMAND_EXECUTOR_FAILED",
        TaskReason::LaunchFailed => "REASON_CONTAINER_LAUNCH_FAILED",
        TaskReason::InvalidTask => "REASON_TASK_INVALID",
        TaskReason::ResourcesUnavailable => "REASON_INVALID_OFFERS",
        TaskReason::AgentRemoved => "REASON_AGENT_REMOVED",
        TaskReason::AgentDisconnected => "REASON_AGENT_DISCONNECTED",
        TaskReason::AgentRestarted => "REASON_AGENT_RESTARTED",
        TaskReason::FrameworkRemoved => "REASON_FRAMEWORK_REMOVED",
        TaskReason::Reconciliation => "REASON_RECONCILIATION",
        TaskReason::MemoryLimit => "REASON_CONTAINER_LIMITATION_MEMORY",
        TaskReason::HealthCheckFailed => "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
        TaskReason::Preempted => "REASON_CONTAINER_PREEMPTED",
        TaskReason::DeadlineNotMet => "REASON_INVALID_OFFERS",
        TaskReason::DeadlineExceeded => "REASON_MAX_COMPLETION_TIME_REACHED",
    })
}

/// Our update id as Mesos `bytes` (base64 of its text), so that the
/// ACKNOWLEDGE a client sends back decodes to it again.
pub fn encode_uuid(uuid: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(uuid.as_bytes())
}

fn decode_uuid(b64: &str) -> Result<String, BadCall> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            "acknowledge.uuid is not the base64 uuid of an UPDATE; send back status.uuid \
             as received"
                .to_string()
        })
}

fn task_status(s: &TaskStatus) -> Value {
    let mut m = Map::new();
    m.insert("task_id".into(), json!({ "value": s.task_id }));
    m.insert("state".into(), json!(task_state_name(s.state)));
    m.insert(
        "source".into(),
        json!(match StatusSource::try_from(s.source) {
            Ok(StatusSource::Master) => "SOURCE_MASTER",
            // Our agent runs the command itself, as Mesos' command
            // executor would.
            _ => "SOURCE_EXECUTOR",
        }),
    );
    if let Some(r) = reason_name(s.reason) {
        m.insert("reason".into(), json!(r));
    }
    if !s.message.is_empty() {
        m.insert("message".into(), json!(s.message));
    }
    if !s.agent_id.is_empty() {
        m.insert("agent_id".into(), json!({ "value": s.agent_id }));
    }
    if s.timestamp > 0.0 {
        m.insert("timestamp".into(), json!(s.timestamp));
    }
    if !s.uuid.is_empty() {
        m.insert("uuid".into(), json!(encode_uuid(&s.uuid)));
    }
    if let Some(h) = s.healthy {
        m.insert("healthy".into(), json!(h));
    }
    Value::Object(m)
}

fn offer(o: &Offer) -> Value {
    let attributes: Vec<Value> = o
        .attributes
        .iter()
        .map(|(k, v)| json!({"name": k, "type": "TEXT", "text": {"value": v}}))
        .collect();
    json!({
        "id": {"value": o.id},
        "framework_id": {"value": o.framework_id},
        "agent_id": {"value": o.agent_id},
        "hostname": o.hostname,
        "resources": o.resources.iter().map(resource_out).collect::<Vec<_>>(),
        "attributes": attributes,
    })
}

/// One of our events as a Mesos `Event`; `None` for an empty event.
pub fn event_json(ev: &Event, master: &MasterInfo) -> Option<Value> {
    Some(match ev.event.as_ref()? {
        event::Event::Subscribed(s) => json!({
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": {"value": s.framework_id},
                "heartbeat_interval_seconds": s.heartbeat_interval_secs,
                "master_info": master.to_json(),
            }
        }),
        event::Event::Offers(o) => json!({
            "type": "OFFERS",
            "offers": {"offers": o.offers.iter().map(offer).collect::<Vec<_>>()},
        }),
        event::Event::Rescind(r) => json!({
            "type": "RESCIND",
            "rescind": {"offer_id": {"value": r.offer_id}},
        }),
        event::Event::Update(u) => json!({
            "type": "UPDATE",
            "update": {"status": u.status.as_ref().map(task_status)?},
        }),
        event::Event::Failure(f) => json!({
            "type": "FAILURE",
            "failure": {"agent_id": {"value": f.agent_id}},
        }),
        event::Event::Error(e) => json!({
            "type": "ERROR",
            "error": {"message": e.message},
        }),
        event::Event::Heartbeat(_) => json!({"type": "HEARTBEAT"}),
    })
}

/// One RecordIO record: the decimal length of `data`, a newline, `data`.
pub fn record(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
