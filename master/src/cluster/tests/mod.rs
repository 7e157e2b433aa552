//! State-machine tests driven like the shell drives it: inputs in, effects
//! out, proposals applied as if raft committed them at once.

mod identity;
mod jobs;
mod lifecycle;
mod queue;
mod replicated;

use super::*;
use mezz_proto::v1::{
    master_message::Message as M, operation, AcceptRequest, AgentTask, CommandInfo, Filters,
    Launch, Offer, Operation, ReconcileTask, StatusSource, TaskReason, TaskState,
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
        launched_at: 0.0,
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
