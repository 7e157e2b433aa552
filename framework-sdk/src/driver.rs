//! `Driver`: the handle a scheduler uses to talk to the master. It only
//! queues [`Call`]s; the sender task (`sender.rs`) puts them on the wire.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::proto;
use crate::{AgentId, FrameworkId, OfferId, TaskId};

/// One call to the master, as queued by the [`Driver`]. The framework id is
/// filled in when it is sent, so calls made before a (re-)subscription carry
/// the right one.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Call {
    Accept {
        offer_ids: Vec<OfferId>,
        operations: Vec<proto::Operation>,
        filters: Option<proto::Filters>,
    },
    Decline {
        offer_ids: Vec<OfferId>,
        filters: Option<proto::Filters>,
    },
    Revive,
    Suppress,
    Kill {
        task_id: TaskId,
        grace: Option<Duration>,
    },
    Acknowledge {
        agent_id: AgentId,
        task_id: TaskId,
        uuid: String,
    },
    Reconcile {
        tasks: Vec<proto::ReconcileTask>,
    },
    Teardown,
    SetDemand {
        demands: Vec<proto::Demand>,
    },
    /// Not a request: ends the driver once every earlier call was sent.
    Stop,
}

impl Call {
    /// The call's name, as used in error messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Call::Accept { .. } => "accept",
            Call::Decline { .. } => "decline",
            Call::Revive => "revive",
            Call::Suppress => "suppress",
            Call::Kill { .. } => "kill",
            Call::Acknowledge { .. } => "acknowledge",
            Call::Reconcile { .. } => "reconcile",
            Call::Teardown => "teardown",
            Call::SetDemand { .. } => "set demand",
            Call::Stop => "stop",
        }
    }

    /// Can the call be sent a second time without changing its meaning?
    /// Accepts and declines refer to offers that a new master no longer
    /// knows, and a teardown is final, so those are reported instead.
    pub(crate) fn retry_safe(&self) -> bool {
        matches!(
            self,
            Call::Kill { .. }
                | Call::Reconcile { .. }
                | Call::Acknowledge { .. }
                | Call::Revive
                | Call::Suppress
                | Call::SetDemand { .. }
        )
    }

    /// A short description of the call's subject for error messages.
    pub(crate) fn describe(&self) -> String {
        let ids = |ids: &[OfferId]| {
            ids.iter()
                .map(OfferId::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Call::Accept { offer_ids, .. } => format!("accept of offers [{}]", ids(offer_ids)),
            Call::Decline { offer_ids, .. } => format!("decline of offers [{}]", ids(offer_ids)),
            Call::Kill { task_id, .. } => format!("kill of task {task_id}"),
            Call::Acknowledge { task_id, uuid, .. } => {
                format!("acknowledge of update {uuid} for task {task_id}")
            }
            other => other.name().to_string(),
        }
    }
}

/// State the driver's handles share with its tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    calls: mpsc::UnboundedSender<Call>,
    framework_id: Mutex<Option<FrameworkId>>,
    stopping: watch::Sender<bool>,
    /// Set by [`Driver::teardown`]: the master's "removed" event that may
    /// overtake the teardown's answer is then the expected end.
    tearing_down: std::sync::atomic::AtomicBool,
    wakeups: mpsc::UnboundedSender<tokio::time::Instant>,
    /// The receiving end of `wakeups`, until the runtime takes it.
    wakeup_rx: Mutex<Option<mpsc::UnboundedReceiver<tokio::time::Instant>>>,
}

/// A cheap, cloneable handle for calls to the master.
///
/// Every method returns at once: the call is queued, and one sender task
/// sends the queue in order (an accept made before a kill reaches the master
/// first). Acknowledgements are the exception: they depend on nothing, so
/// they are sent beside the ordered calls, those queued together in one
/// call (a stop still waits for them). Calls that fail are retried once after a reconnection when that
/// is safe (kill, reconcile, acknowledge, revive, suppress); otherwise the
/// failure goes to [`Scheduler::error`](crate::Scheduler::error). Calls made
/// after the driver ended are dropped.
#[derive(Clone, Debug)]
pub struct Driver {
    shared: Arc<Shared>,
}

impl Driver {
    /// A driver and the receiving end of its call queue.
    pub(crate) fn new(framework_id: Option<FrameworkId>) -> (Self, mpsc::UnboundedReceiver<Call>) {
        let (calls, rx) = mpsc::unbounded_channel();
        let (wakeups, wakeup_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            calls,
            framework_id: Mutex::new(framework_id),
            stopping: watch::Sender::new(false),
            tearing_down: std::sync::atomic::AtomicBool::new(false),
            wakeups,
            wakeup_rx: Mutex::new(Some(wakeup_rx)),
        };
        (
            Driver {
                shared: Arc::new(shared),
            },
            rx,
        )
    }

    fn push(&self, call: Call) {
        let name = call.name();
        if self.shared.calls.send(call).is_err() {
            tracing::debug!(call = name, "driver has ended; call dropped");
        }
    }

    /// The framework's id, once the master assigned one.
    pub fn framework_id(&self) -> Option<FrameworkId> {
        self.shared
            .framework_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn set_framework_id(&self, id: FrameworkId) {
        *self
            .shared
            .framework_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(id);
    }

    /// The wake-up requests of [`Driver::wake_after`]; the runtime takes
    /// them once.
    pub(crate) fn take_wakeups(&self) -> Option<mpsc::UnboundedReceiver<tokio::time::Instant>> {
        self.shared
            .wakeup_rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Asks for a call of [`Scheduler::wakeup`](crate::Scheduler::wakeup)
    /// once `delay` has passed, for schedulers that act on time rather than
    /// on events: giving back offers held too long (see
    /// [`Gang`](crate::Gang)), restarting a task after its backoff (see
    /// [`TaskTracker`](crate::TaskTracker)). Wake-ups come while the driver
    /// is subscribed; one that falls due while it reconnects comes right
    /// after the new subscription. Several due at once make one call.
    pub fn wake_after(&self, delay: Duration) {
        let at = tokio::time::Instant::now() + delay;
        if self.shared.wakeups.send(at).is_err() {
            tracing::debug!("driver has ended; wake-up dropped");
        }
    }

    /// Whether [`Driver::teardown`] was called.
    pub(crate) fn tearing_down(&self) -> bool {
        self.shared
            .tearing_down
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once [`Driver::stop`] or [`Driver::teardown`] was called.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.shared.stopping.subscribe()
    }

    /// Uses offers: runs `operations` on the resources of `offer_ids` (all
    /// from one agent). What the operations leave is declined with
    /// `filters`.
    pub fn accept<I, O>(
        &self,
        offer_ids: I,
        operations: Vec<proto::Operation>,
        filters: Option<proto::Filters>,
    ) where
        I: IntoIterator<Item = O>,
        O: Into<OfferId>,
    {
        self.push(Call::Accept {
            offer_ids: offer_ids.into_iter().map(Into::into).collect(),
            operations,
            filters,
        });
    }

    /// Launches `tasks` on offers of one agent: an [`accept`](Self::accept)
    /// with one launch operation.
    ///
    /// ```no_run
    /// # fn f(driver: &mezz_sdk::Driver, offer: &mezz_sdk::proto::Offer) {
    /// use mezz_sdk::{Resources, TaskBuilder};
    /// let task = TaskBuilder::shell("t1", "echo hi")
    ///     .resources(&Resources::new().with_scalar("cpus", 0.1).with_scalar("mem", 32.0))
    ///     .build(offer);
    /// driver.launch([offer.id.clone()], vec![task]);
    /// # }
    /// ```
    pub fn launch<I, O>(&self, offer_ids: I, tasks: Vec<proto::TaskInfo>)
    where
        I: IntoIterator<Item = O>,
        O: Into<OfferId>,
    {
        let launch = proto::Operation {
            operation: Some(proto::operation::Operation::Launch(proto::Launch { tasks })),
        };
        self.accept(offer_ids, vec![launch], None);
    }

    /// Gives offers back. `refuse_seconds`: do not offer these resources
    /// again for that long (the master's default, 5 s, when `None`).
    pub fn decline<I, O>(&self, offer_ids: I, refuse_seconds: Option<f64>)
    where
        I: IntoIterator<Item = O>,
        O: Into<OfferId>,
    {
        self.push(Call::Decline {
            offer_ids: offer_ids.into_iter().map(Into::into).collect(),
            filters: refuse_seconds.map(|s| proto::Filters {
                refuse_seconds: Some(s),
            }),
        });
    }

    /// Clears refusal filters and resumes offers after [`suppress`](Self::suppress).
    pub fn revive(&self) {
        self.push(Call::Revive);
    }

    /// Asks for no more offers until [`revive`](Self::revive).
    pub fn suppress(&self) {
        self.push(Call::Suppress);
    }

    /// Kills a task. `grace` overrides the task's time between SIGTERM and
    /// SIGKILL. The outcome arrives as a status update.
    pub fn kill(&self, task_id: impl Into<TaskId>, grace: Option<Duration>) {
        self.push(Call::Kill {
            task_id: task_id.into(),
            grace,
        });
    }

    /// Acknowledges a status update so the master stops resending it. The
    /// driver does this by itself unless
    /// [`manual_acknowledgements`](crate::DriverBuilder::manual_acknowledgements)
    /// is on; updates without a `uuid` need none and are ignored here.
    pub fn acknowledge(&self, status: &proto::TaskStatus) {
        if status.uuid.is_empty() {
            return;
        }
        self.push(Call::Acknowledge {
            agent_id: AgentId(status.agent_id.clone()),
            task_id: TaskId(status.task_id.clone()),
            uuid: status.uuid.clone(),
        });
    }

    /// Asks for the latest state of `tasks` (explicit reconciliation; the
    /// master answers `TASK_UNKNOWN` for those it does not know) or, with an
    /// empty list, of every task of the framework (implicit). Answers arrive
    /// as status updates.
    pub fn reconcile(&self, tasks: Vec<proto::ReconcileTask>) {
        self.push(Call::Reconcile { tasks });
    }

    /// Tells the master what the framework waits to place, replacing what
    /// it said before (an empty list: nothing). The master queues it
    /// cluster-wide (`mezz queue ls`), offers it resources in queue order,
    /// preempts lower-class work for it when its class allows, and ends a
    /// demand past its start deadline with a TASK_DROPPED update for the
    /// demand's id (reason DEADLINE_NOT_MET). Send it again after a
    /// re-subscription; clear it once the tasks are launched.
    ///
    /// ```
    /// use mezz_sdk::{proto, Driver, Resources};
    /// fn wait_for_gpus(driver: &Driver) {
    ///     let per_task = Resources::parse("cpus:4;mem:8192;gpus:2").unwrap();
    ///     driver.set_demand(vec![proto::Demand {
    ///         id: "train-1".into(),
    ///         resources: per_task.to_proto(),
    ///         tasks: 1,
    ///         priority: "production".into(),
    ///         start_deadline_secs: 600.0,
    ///     }]);
    /// }
    /// ```
    pub fn set_demand(&self, demands: Vec<proto::Demand>) {
        self.push(Call::SetDemand { demands });
    }

    /// Removes the framework from the cluster, killing its tasks, and ends
    /// the driver once the master confirmed it.
    pub fn teardown(&self) {
        self.shared
            .tearing_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.push(Call::Teardown);
    }

    /// Ends the driver once every earlier call was sent. The framework stays
    /// registered for its failover timeout, so a new scheduler can take it
    /// over by subscribing with its id.
    pub fn stop(&self) {
        self.shared.stopping.send_replace(true);
        self.push(Call::Stop);
    }
}

/// The gRPC request for `call`; `None` for [`Call::Stop`].
pub(crate) fn request(call: &Call, framework_id: &FrameworkId) -> Option<Request> {
    let framework_id = framework_id.0.clone();
    let offer_ids = |ids: &[OfferId]| ids.iter().map(|id| id.0.clone()).collect();
    Some(match call {
        Call::Accept {
            offer_ids: ids,
            operations,
            filters,
        } => Request::Accept(proto::AcceptRequest {
            framework_id,
            offer_ids: offer_ids(ids),
            operations: operations.clone(),
            filters: *filters,
        }),
        Call::Decline {
            offer_ids: ids,
            filters,
        } => Request::Decline(proto::DeclineRequest {
            framework_id,
            offer_ids: offer_ids(ids),
            filters: *filters,
        }),
        Call::Revive => Request::Revive(proto::ReviveRequest { framework_id }),
        Call::Suppress => Request::Suppress(proto::SuppressRequest { framework_id }),
        Call::Kill { task_id, grace } => Request::Kill(proto::KillRequest {
            framework_id,
            task_id: task_id.0.clone(),
            grace_period_secs: grace.map(|g| g.as_secs_f64()),
        }),
        Call::Acknowledge {
            agent_id,
            task_id,
            uuid,
        } => Request::Acknowledge(proto::AcknowledgeRequest {
            framework_id,
            agent_id: agent_id.0.clone(),
            task_id: task_id.0.clone(),
            uuid: uuid.clone(),
        }),
        Call::Reconcile { tasks } => Request::Reconcile(proto::ReconcileRequest {
            framework_id,
            tasks: tasks.clone(),
        }),
        Call::Teardown => Request::Teardown(proto::TeardownRequest { framework_id }),
        Call::SetDemand { demands } => Request::SetDemand(proto::SetDemandRequest {
            framework_id,
            demands: demands.clone(),
        }),
        Call::Stop => return None,
    })
}

/// A call in wire form.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Request {
    Accept(proto::AcceptRequest),
    Decline(proto::DeclineRequest),
    Revive(proto::ReviveRequest),
    Suppress(proto::SuppressRequest),
    Kill(proto::KillRequest),
    Acknowledge(proto::AcknowledgeRequest),
    Reconcile(proto::ReconcileRequest),
    Teardown(proto::TeardownRequest),
    SetDemand(proto::SetDemandRequest),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::UnboundedReceiver<Call>) -> Vec<Call> {
        let mut out = Vec::new();
        while let Ok(c) = rx.try_recv() {
            out.push(c);
        }
        out
    }

    #[test]
    fn calls_are_queued_in_order() {
        let (driver, mut rx) = Driver::new(None);
        let clone = driver.clone();
        driver.launch(["o1"], vec![proto::TaskInfo::default()]);
        clone.kill("t1", Some(Duration::from_millis(1500)));
        driver.decline(vec![OfferId::from("o2")], None);
        driver.revive();
        driver.stop();
        let names: Vec<_> = drain(&mut rx).iter().map(Call::name).collect();
        assert_eq!(names, ["accept", "kill", "decline", "revive", "stop"]);
        assert!(*driver.stopping().borrow());
    }

    #[test]
    fn requests_carry_the_framework_id() {
        let (driver, mut rx) = Driver::new(None);
        driver.kill("t1", Some(Duration::from_millis(1500)));
        driver.decline(["o2"], Some(30.0));
        driver.launch(["o1"], vec![proto::TaskInfo::default()]);
        let fid = FrameworkId::from("fw-1");
        let reqs: Vec<_> = drain(&mut rx)
            .iter()
            .filter_map(|c| request(c, &fid))
            .collect();
        assert_eq!(
            reqs[0],
            Request::Kill(proto::KillRequest {
                framework_id: "fw-1".into(),
                task_id: "t1".into(),
                grace_period_secs: Some(1.5),
            })
        );
        assert_eq!(
            reqs[1],
            Request::Decline(proto::DeclineRequest {
                framework_id: "fw-1".into(),
                offer_ids: vec!["o2".into()],
                filters: Some(proto::Filters {
                    refuse_seconds: Some(30.0)
                }),
            })
        );
        match &reqs[2] {
            Request::Accept(a) => {
                assert_eq!(a.framework_id, "fw-1");
                assert_eq!(a.offer_ids, ["o1"]);
                assert!(matches!(
                    a.operations[0].operation,
                    Some(proto::operation::Operation::Launch(ref l)) if l.tasks.len() == 1
                ));
            }
            other => panic!("expected an accept, got {other:?}"),
        }
        assert_eq!(request(&Call::Stop, &fid), None);
    }

    #[test]
    fn acknowledge_skips_updates_without_uuid() {
        let (driver, mut rx) = Driver::new(None);
        driver.acknowledge(&proto::TaskStatus::default());
        driver.acknowledge(&proto::TaskStatus {
            task_id: "t".into(),
            agent_id: "a".into(),
            uuid: "u".into(),
            ..Default::default()
        });
        assert_eq!(
            drain(&mut rx),
            [Call::Acknowledge {
                agent_id: "a".into(),
                task_id: "t".into(),
                uuid: "u".into()
            }]
        );
    }

    #[test]
    fn only_idempotent_calls_are_retried() {
        let safe: Vec<_> = [
            Call::Accept {
                offer_ids: vec![],
                operations: vec![],
                filters: None,
            },
            Call::Decline {
                offer_ids: vec![],
                filters: None,
            },
            Call::Revive,
            Call::Suppress,
            Call::Kill {
                task_id: "t".into(),
                grace: None,
            },
            Call::Acknowledge {
                agent_id: "a".into(),
                task_id: "t".into(),
                uuid: "u".into(),
            },
            Call::Reconcile { tasks: vec![] },
            Call::Teardown,
        ]
        .iter()
        .filter(|c| c.retry_safe())
        .map(Call::name)
        .collect();
        assert_eq!(
            safe,
            ["revive", "suppress", "kill", "acknowledge", "reconcile"]
        );
    }

    #[test]
    fn calls_after_the_end_are_dropped_quietly() {
        let (driver, rx) = Driver::new(Some("fw".into()));
        drop(rx);
        driver.revive();
        assert_eq!(driver.framework_id(), Some(FrameworkId::from("fw")));
    }
}
