//! Simulated frameworks: each subscribes (failing over to a new master
//! when its stream breaks), accepts offers within a task budget,
//! acknowledges and applies status updates, and reconciles; one goes away
//! for good to test failover timeouts. Accepts lost on the way (the call
//! or its answer) are counted and reconciled like a real framework would.

use std::collections::{BTreeMap, BTreeSet};

use mezz_proto::v1::{
    event, operation, AcceptRequest, CommandInfo, Filters, FrameworkInfo, Launch, Operation,
    ReconcileTask, TaskInfo, TaskReason, TaskState,
};
use mezz_proto::Resources;

use super::rogue::SPOOF;
use super::streams::{Client, Down, Up};
use super::{Sim, TASK, TASKS_PER_FRAMEWORK};
use crate::cluster::{CallError, ConnId};
use crate::node::Call;

/// A task as its framework knows it.
#[derive(Debug, Clone)]
pub(super) struct KnownTask {
    pub(super) agent: String,
    /// The accept's answer: `None` while unknown.
    pub(super) accepted: Option<bool>,
    pub(super) state: Option<TaskState>,
}

pub(super) struct SimFramework {
    pub(super) name: String,
    pub(super) info: FrameworkInfo,
    pub(super) conn: Option<ConnId>,
    pub(super) subscribed: bool,
    pub(super) hint: Option<u64>,
    /// The master on whose side of a partition this framework is.
    pub(super) home: u64,
    pub(super) tasks: BTreeMap<String, KnownTask>,
    /// Updates applied, by uuid.
    pub(super) applied: BTreeSet<String>,
    pub(super) duplicates: u64,
    pub(super) launched: u64,
    /// This framework goes away for good at this step (and its failover
    /// timeout is short).
    pub(super) dies_at: Option<u64>,
    pub(super) last_reconcile: u64,
    /// Ids this framework had before the master removed it.
    pub(super) retired: Vec<String>,
}

impl SimFramework {
    pub(super) fn dead(&self, step: u64) -> bool {
        self.dies_at.is_some_and(|d| step >= d)
    }
}

impl Sim {
    pub(super) fn framework_round(&mut self, f: usize, heal: bool) -> Result<(), String> {
        let step = self.step;
        if self.frameworks[f].dead(step) {
            if let Some(conn) = self.frameworks[f].conn {
                self.hang_up(conn);
            }
            return Ok(());
        }
        if self.frameworks[f].conn.is_none() {
            if !self.rng.chance(0.3) {
                return Ok(());
            }
            let hint = self.frameworks[f].hint.take();
            let target = self.pick_master(hint);
            if !self.master_up(target) || !self.reachable(Client::Framework(f), target) {
                return Ok(());
            }
            let conn = self.conns.open(target, Client::Framework(f));
            let info = self.frameworks[f].info.clone();
            self.conns.push_up(conn, step + 1, Up::Subscribe(info));
            self.frameworks[f].conn = Some(conn);
            return Ok(());
        }
        let conn = self.frameworks[f].conn.expect("checked");
        let Some(msgs) = self.client_inbox(conn) else {
            return Ok(());
        };
        let mut calls = Vec::new();
        for m in msgs {
            self.framework_message(f, m, heal, &mut calls)?;
        }
        let fw = &mut self.frameworks[f];
        if fw.subscribed && step >= fw.last_reconcile + 100 {
            calls.push((
                Call::Reconcile(fw.info.id.clone(), fw.to_reconcile()),
                vec![],
            ));
            fw.last_reconcile = step;
        }
        for (call, launching) in calls {
            if !launching.is_empty() && !heal && self.rng.chance(0.05) {
                // The accept is lost: the call never reaches the master,
                // or its answer never comes back (a transport error in an
                // election). The framework does not know whether it
                // launched anything and must find out by reconciling.
                self.accepts_lost += 1;
                if self.rng.chance(0.5) {
                    continue;
                }
                self.conns.push_up(conn, step + 1, Up::Call(call, vec![]));
                continue;
            }
            self.conns
                .push_up(conn, step + 1, Up::Call(call, launching));
        }
        Ok(())
    }

    pub(super) fn framework_message(
        &mut self,
        f: usize,
        m: Down,
        heal: bool,
        calls: &mut Vec<(Call, Vec<String>)>,
    ) -> Result<(), String> {
        let step = self.step;
        let ev = match m {
            Down::Refused(e, hint) => {
                if matches!(e, CallError::FailedPrecondition(_)) {
                    // Away longer than its failover timeout: the framework
                    // was removed with its tasks. Start over as a new one.
                    let fw = &mut self.frameworks[f];
                    fw.retired.push(std::mem::take(&mut fw.info.id));
                    fw.tasks.clear();
                    return Ok(());
                }
                if !matches!(e, CallError::NotLeader(_)) {
                    return Err(format!("{} refused: {e}", self.frameworks[f].name));
                }
                self.frameworks[f].hint = hint;
                return Ok(());
            }
            Down::Accepted(tasks, result) => {
                let fw = &mut self.frameworks[f];
                for t in tasks {
                    if let Some(k) = fw.tasks.get_mut(&t) {
                        k.accepted = Some(result.is_ok());
                    }
                }
                return Ok(());
            }
            Down::Agent(_) => return Err(format!("framework {f} got an agent's message")),
            Down::Event(ev) => ev,
        };
        let fw = &mut self.frameworks[f];
        let fid = fw.info.id.clone();
        match ev.event {
            Some(event::Event::Subscribed(s)) => {
                fw.info.id = s.framework_id.clone();
                fw.subscribed = true;
                // As a scheduler should after (re-)subscribing: ask about
                // everything, and about each task not known to be over.
                calls.push((Call::Reconcile(s.framework_id.clone(), vec![]), vec![]));
                let unsettled = fw.to_reconcile();
                if !unsettled.is_empty() {
                    calls.push((Call::Reconcile(s.framework_id, unsettled), vec![]));
                }
                fw.last_reconcile = step;
            }
            Some(event::Event::Offers(o)) => {
                for offer in o.offers {
                    let res = Resources::from_proto(&offer.resources).unwrap_or_default();
                    let want = Resources::parse(TASK).map_err(|e| e.to_string())?;
                    let fw = &mut self.frameworks[f];
                    if !heal
                        && fw.launched < TASKS_PER_FRAMEWORK
                        && res.contains(&want)
                        && self.rng.chance(0.6)
                    {
                        let task_id = format!("{}-t{}", fw.name, fw.launched);
                        fw.launched += 1;
                        fw.tasks.insert(
                            task_id.clone(),
                            KnownTask {
                                agent: offer.agent_id.clone(),
                                accepted: None,
                                state: None,
                            },
                        );
                        let task = TaskInfo {
                            task_id: task_id.clone(),
                            name: task_id.clone(),
                            agent_id: offer.agent_id.clone(),
                            resources: want.to_proto(),
                            command: Some(CommandInfo {
                                value: "true".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        };
                        let accept = AcceptRequest {
                            framework_id: fw.info.id.clone(),
                            offer_ids: vec![offer.id],
                            operations: vec![Operation {
                                operation: Some(operation::Operation::Launch(Launch {
                                    tasks: vec![task],
                                })),
                            }],
                            filters: Some(Filters {
                                refuse_seconds: Some(0.2),
                            }),
                        };
                        calls.push((Call::Accept(accept), vec![task_id]));
                    } else {
                        calls.push((
                            Call::Decline {
                                framework_id: fw.info.id.clone(),
                                offer_ids: vec![offer.id],
                                refuse_seconds: Some(0.2),
                            },
                            vec![],
                        ));
                    }
                }
            }
            Some(event::Event::Update(u)) => {
                let Some(st) = u.status else {
                    return Err("an update without a status".into());
                };
                if st.uuid.starts_with(SPOOF) {
                    return Err(format!(
                        "{}: a spoofed {:?} of {} from a rogue agent got through",
                        self.frameworks[f].name,
                        st.state(),
                        st.task_id
                    ));
                }
                let fw = &mut self.frameworks[f];
                if !st.uuid.is_empty() && !fw.applied.insert(st.uuid.clone()) {
                    // Delivered again (at least once): acknowledge, do not
                    // apply twice.
                    fw.duplicates += 1;
                } else {
                    let known = fw.tasks.entry(st.task_id.clone()).or_insert(KnownTask {
                        agent: st.agent_id.clone(),
                        accepted: None,
                        state: None,
                    });
                    let ended = known.state.is_some_and(|s| s.is_terminal());
                    let no_news = st.reason() == TaskReason::Reconciliation
                        && matches!(st.state(), TaskState::Unknown | TaskState::Unreachable);
                    if ended && no_news {
                        // An answer to an older question from a master
                        // that does not know the task (or cannot reach its
                        // agent yet): no news about a task known to be over.
                    } else if ended && !st.state().is_terminal() {
                        return Err(format!(
                            "{}: task {} went back from {:?} to {:?} ({})",
                            fw.name,
                            st.task_id,
                            known.state.expect("checked"),
                            st.state(),
                            st.message
                        ));
                    } else {
                        known.state = Some(st.state());
                    }
                }
                if !st.uuid.is_empty() {
                    calls.push((
                        Call::Acknowledge {
                            framework_id: fid,
                            agent_id: st.agent_id,
                            task_id: st.task_id,
                            uuid: st.uuid,
                        },
                        vec![],
                    ));
                }
            }
            // A framework removed or replaced hears an error and its
            // stream ends; it subscribes again.
            Some(event::Event::Rescind(_))
            | Some(event::Event::Heartbeat(_))
            | Some(event::Event::Failure(_))
            | Some(event::Event::Error(_))
            | None => {}
        }
        Ok(())
    }
}

impl SimFramework {
    /// Tasks whose end this framework has not heard of, for explicit
    /// reconciliation.
    pub(super) fn to_reconcile(&self) -> Vec<ReconcileTask> {
        self.tasks
            .iter()
            .filter(|(_, t)| {
                t.accepted != Some(false)
                    && !t
                        .state
                        .is_some_and(|s| s.is_terminal() || s == TaskState::Unknown)
            })
            .map(|(id, t)| ReconcileTask {
                task_id: id.clone(),
                agent_id: t.agent.clone(),
            })
            .collect()
    }
}
