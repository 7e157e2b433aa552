//! The driver against an in-process master that speaks the real gRPC
//! `Scheduler` service and is scripted by each test: call order,
//! acknowledgements, reconnection, leader hints, removal and deadlines.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mezz_sdk::proto::scheduler_server::{Scheduler as SchedulerService, SchedulerServer};
use mezz_sdk::proto::{self, event::Event as Ev};
use mezz_sdk::{Driver, DriverBuilder, FrameworkId, OfferId, Scheduler, SdkError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status};

type EventTx = mpsc::UnboundedSender<Result<proto::Event, Status>>;

/// What the fake master received.
#[derive(Debug)]
enum Got {
    Subscribe(proto::SubscribeRequest, EventTx),
    Accept(proto::AcceptRequest),
    Kill(proto::KillRequest),
    Acknowledge(proto::AcknowledgeRequest),
    Reconcile(proto::ReconcileRequest),
    Teardown(proto::TeardownRequest),
    Other(&'static str),
}

#[derive(Clone)]
struct FakeMaster {
    got: mpsc::UnboundedSender<Got>,
    heartbeat_secs: f64,
    /// Refuse subscriptions, naming this leader.
    redirect_to: Option<String>,
    /// Answers to give, per call name, before answering Ok.
    failures: Arc<Mutex<HashMap<&'static str, VecDeque<Status>>>>,
    /// Acknowledgements are answered only while no one holds this for
    /// writing (they are recorded as they arrive).
    ack_gate: Arc<tokio::sync::RwLock<()>>,
    /// Calls that carried acknowledgements: (calls, acknowledgements).
    ack_calls: Arc<Mutex<(usize, usize)>>,
    /// Answer AcknowledgeMany as a master of an older release would.
    without_many: bool,
}

impl FakeMaster {
    fn answer(&self, name: &'static str, got: Got) -> Result<Response<proto::Empty>, Status> {
        let _ = self.got.send(got);
        let failure = self
            .failures
            .lock()
            .unwrap()
            .get_mut(name)
            .and_then(VecDeque::pop_front);
        failure.map_or(Ok(Response::new(proto::Empty {})), Err)
    }
}

#[tonic::async_trait]
impl SchedulerService for FakeMaster {
    type SubscribeStream = UnboundedReceiverStream<Result<proto::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if let Some(leader) = &self.redirect_to {
            let mut status = Status::unavailable("not the leader");
            status
                .metadata_mut()
                .insert(mezz_proto::client::LEADER_HINT_KEY, leader.parse().unwrap());
            return Err(status);
        }
        let request = request.into_inner();
        let id = request
            .framework
            .as_ref()
            .map(|f| f.id.clone())
            .unwrap_or_default();
        let (tx, rx) = mpsc::unbounded_channel();
        let subscribed = proto::Subscribed {
            protocol_version: mezz_proto::PROTOCOL_VERSION,
            framework_id: if id.is_empty() { "fw-1".into() } else { id },
            heartbeat_interval_secs: self.heartbeat_secs,
            master_id: "fake".into(),
        };
        tx.send(Ok(event(Ev::Subscribed(subscribed)))).unwrap();
        let _ = self.got.send(Got::Subscribe(request, tx));
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
    async fn accept(
        &self,
        r: Request<proto::AcceptRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.answer("accept", Got::Accept(r.into_inner()))
    }
    async fn decline(
        &self,
        _: Request<proto::DeclineRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.answer("decline", Got::Other("decline"))
    }
    async fn revive(
        &self,
        _: Request<proto::ReviveRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.answer("revive", Got::Other("revive"))
    }
    async fn suppress(
        &self,
        _: Request<proto::SuppressRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.answer("suppress", Got::Other("suppress"))
    }
    async fn kill(&self, r: Request<proto::KillRequest>) -> Result<Response<proto::Empty>, Status> {
        self.answer("kill", Got::Kill(r.into_inner()))
    }
    async fn acknowledge(
        &self,
        r: Request<proto::AcknowledgeRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        let answer = self.answer("acknowledge", Got::Acknowledge(r.into_inner()));
        {
            let mut n = self.ack_calls.lock().unwrap();
            *n = (n.0 + 1, n.1 + 1);
        }
        let _open = self.ack_gate.read().await;
        answer
    }
    async fn acknowledge_many(
        &self,
        r: Request<proto::AcknowledgeManyRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        if self.without_many {
            return Err(Status::unimplemented("unknown method AcknowledgeMany"));
        }
        let r = r.into_inner();
        assert_eq!(r.framework_id, "fw-1");
        let count = r.acks.len();
        let mut answer = Ok(Response::new(proto::Empty {}));
        for a in r.acks {
            answer = answer.and(self.answer("acknowledge_many", Got::Acknowledge(a)));
        }
        {
            let mut n = self.ack_calls.lock().unwrap();
            *n = (n.0 + 1, n.1 + count);
        }
        let _open = self.ack_gate.read().await;
        answer
    }
    async fn reconcile(
        &self,
        r: Request<proto::ReconcileRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.answer("reconcile", Got::Reconcile(r.into_inner()))
    }
    async fn teardown(
        &self,
        r: Request<proto::TeardownRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.answer("teardown", Got::Teardown(r.into_inner()))
    }
    async fn set_demand(
        &self,
        _r: Request<proto::SetDemandRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.answer("set_demand", Got::Other("set_demand"))
    }
}

fn event(e: Ev) -> proto::Event {
    proto::Event { event: Some(e) }
}

struct Master {
    addr: SocketAddr,
    got: mpsc::UnboundedReceiver<Got>,
    failures: Arc<Mutex<HashMap<&'static str, VecDeque<Status>>>>,
    ack_gate: Arc<tokio::sync::RwLock<()>>,
    ack_calls: Arc<Mutex<(usize, usize)>>,
    _shutdown: oneshot::Sender<()>,
}

async fn start_master(heartbeat_secs: f64, redirect_to: Option<String>) -> Master {
    start_master_with(heartbeat_secs, redirect_to, false).await
}

async fn start_master_with(
    heartbeat_secs: f64,
    redirect_to: Option<String>,
    without_many: bool,
) -> Master {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got_tx, got) = mpsc::unbounded_channel();
    let failures = Arc::new(Mutex::new(HashMap::new()));
    let ack_gate = Arc::new(tokio::sync::RwLock::new(()));
    let ack_calls = Arc::new(Mutex::new((0, 0)));
    let fake = FakeMaster {
        got: got_tx,
        heartbeat_secs,
        redirect_to,
        failures: failures.clone(),
        ack_gate: ack_gate.clone(),
        ack_calls: ack_calls.clone(),
        without_many,
    };
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SchedulerServer::new(fake))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop.await;
            }),
    );
    Master {
        addr,
        got,
        failures,
        ack_gate,
        ack_calls,
        _shutdown: shutdown,
    }
}

impl Master {
    async fn next(&mut self) -> Got {
        within(self.got.recv()).await.expect("fake master gone")
    }

    fn fail_next(&self, call: &'static str, status: Status) {
        self.failures
            .lock()
            .unwrap()
            .entry(call)
            .or_default()
            .push_back(status);
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out waiting")
}

/// What the scheduler saw.
#[derive(Debug)]
enum Seen {
    Subscribed(Driver, FrameworkId, bool),
    Offers(Vec<proto::Offer>),
    Update(proto::TaskStatus),
    Rescinded(OfferId),
    Error(String),
    Disconnected,
}

struct Recorder(mpsc::UnboundedSender<Seen>);

impl Scheduler for Recorder {
    fn subscribed(&mut self, driver: &Driver, id: &FrameworkId, reconnected: bool) {
        let _ = self
            .0
            .send(Seen::Subscribed(driver.clone(), id.clone(), reconnected));
    }
    fn offers(&mut self, _: &Driver, offers: Vec<proto::Offer>) {
        let _ = self.0.send(Seen::Offers(offers));
    }
    fn rescinded(&mut self, _: &Driver, offer_id: &OfferId) {
        let _ = self.0.send(Seen::Rescinded(offer_id.clone()));
    }
    fn status_update(&mut self, _: &Driver, status: &proto::TaskStatus) {
        let _ = self.0.send(Seen::Update(status.clone()));
    }
    fn error(&mut self, _: &Driver, message: &str) {
        let _ = self.0.send(Seen::Error(message.to_string()));
    }
    fn disconnected(&mut self, _: &Driver) {
        let _ = self.0.send(Seen::Disconnected);
    }
}

struct Framework {
    run: JoinHandle<Result<Recorder, SdkError>>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Framework {
    fn start(builder: DriverBuilder) -> Self {
        let (tx, seen) = mpsc::unbounded_channel();
        let builder = builder.framework(proto::FrameworkInfo {
            name: "test-fw".into(),
            ..Default::default()
        });
        Framework {
            run: tokio::spawn(builder.run(Recorder(tx))),
            seen,
        }
    }

    async fn next(&mut self) -> Seen {
        within(self.seen.recv()).await.expect("scheduler gone")
    }

    async fn subscribed(&mut self) -> (Driver, bool) {
        match self.next().await {
            Seen::Subscribed(driver, id, reconnected) => {
                assert_eq!(id.as_str(), "fw-1");
                assert_eq!(driver.framework_id(), Some(id));
                (driver, reconnected)
            }
            other => panic!("expected subscribed, saw {other:?}"),
        }
    }

    async fn finish(self) -> Result<Recorder, SdkError> {
        within(self.run).await.expect("driver panicked")
    }
}

fn connect(master: &Master) -> DriverBuilder {
    DriverBuilder::new().masters([master.addr.to_string()])
}

async fn expect_subscribe(master: &mut Master) -> (proto::SubscribeRequest, EventTx) {
    match master.next().await {
        Got::Subscribe(request, tx) => (request, tx),
        other => panic!("expected a subscription, got {other:?}"),
    }
}

#[tokio::test]
async fn calls_go_out_in_order_and_updates_are_acknowledged() {
    let mut master = start_master(15.0, None).await;
    let mut fw = Framework::start(connect(&master));
    let (request, events) = expect_subscribe(&mut master).await;
    assert_eq!(request.protocol_version, mezz_proto::PROTOCOL_VERSION);
    assert_eq!(request.framework.unwrap().name, "test-fw");
    let (driver, reconnected) = fw.subscribed().await;
    assert!(!reconnected);

    let offer = proto::Offer {
        id: "o1".into(),
        agent_id: "a1".into(),
        ..Default::default()
    };
    events
        .send(Ok(event(Ev::Offers(proto::Offers {
            offers: vec![offer.clone()],
        }))))
        .unwrap();
    assert!(matches!(fw.next().await, Seen::Offers(o) if o == [offer.clone()]));
    let task = mezz_sdk::TaskBuilder::shell("t1", "true").build(&offer);
    driver.launch([offer.id.clone()], vec![task]);
    driver.kill("t1", None);
    match master.next().await {
        Got::Accept(a) => assert_eq!(
            (a.framework_id.as_str(), a.offer_ids),
            ("fw-1", vec!["o1".to_string()])
        ),
        other => panic!("expected the accept first, got {other:?}"),
    }
    assert!(
        matches!(master.next().await, Got::Kill(k) if k.task_id == "t1" && k.framework_id == "fw-1")
    );

    events
        .send(Ok(event(Ev::Rescind(proto::Rescind {
            offer_id: "o2".into(),
        }))))
        .unwrap();
    assert!(matches!(fw.next().await, Seen::Rescinded(id) if id.as_str() == "o2"));

    let status = proto::TaskStatus {
        task_id: "t1".into(),
        agent_id: "a1".into(),
        framework_id: "fw-1".into(),
        state: proto::TaskState::Killed as i32,
        uuid: "u-1".into(),
        ..Default::default()
    };
    events
        .send(Ok(event(Ev::Update(proto::Update {
            status: Some(status),
        }))))
        .unwrap();
    assert!(matches!(fw.next().await, Seen::Update(s) if s.state() == proto::TaskState::Killed));
    match master.next().await {
        Got::Acknowledge(ack) => assert_eq!(
            ack,
            proto::AcknowledgeRequest {
                framework_id: "fw-1".into(),
                agent_id: "a1".into(),
                task_id: "t1".into(),
                uuid: "u-1".into()
            }
        ),
        other => panic!("expected an acknowledgement, got {other:?}"),
    }

    driver.revive();
    driver.stop();
    assert!(matches!(master.next().await, Got::Other("revive")));
    assert!(fw.finish().await.is_ok());
}

/// Acknowledgements go out beside the ordered calls: while the master
/// holds every acknowledgement unanswered, the rest still arrive, and a
/// stop waits for the acknowledgements before the driver ends.
#[tokio::test]
async fn acknowledgements_do_not_hold_up_other_calls_and_stop_waits_for_them() {
    let mut master = start_master(15.0, None).await;
    let mut fw = Framework::start(connect(&master));
    let (_, events) = expect_subscribe(&mut master).await;
    let (driver, _) = fw.subscribed().await;
    let held = master.ack_gate.clone().write_owned().await;
    send_updates(&events, &mut fw, 10).await;
    driver.revive();
    let mut acked = std::collections::BTreeSet::new();
    let mut revived = false;
    while acked.len() < 10 || !revived {
        match master.next().await {
            Got::Acknowledge(a) => {
                acked.insert(a.uuid);
            }
            Got::Other("revive") => revived = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    driver.stop();
    // Not over while the acknowledgements wait for their answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fw.run.is_finished(),
        "the driver ended with acknowledgements unanswered"
    );
    drop(held);
    assert!(fw.finish().await.is_ok());
}

/// Sends `n` FINISHED updates (uuids `u-0`…) and waits until the
/// framework saw them all.
async fn send_updates(events: &EventTx, fw: &mut Framework, n: usize) {
    for i in 0..n {
        let status = proto::TaskStatus {
            task_id: format!("t{i}"),
            agent_id: "a1".into(),
            framework_id: "fw-1".into(),
            state: proto::TaskState::Finished as i32,
            uuid: format!("u-{i}"),
            ..Default::default()
        };
        events
            .send(Ok(event(Ev::Update(proto::Update {
                status: Some(status),
            }))))
            .unwrap();
        assert!(matches!(fw.next().await, Seen::Update(_)));
    }
}

/// The uuids of `n` acknowledgements, as the master received them.
async fn acknowledged(master: &mut Master, n: usize) -> std::collections::BTreeSet<String> {
    let mut acked = std::collections::BTreeSet::new();
    while acked.len() < n {
        match master.next().await {
            Got::Acknowledge(a) => {
                assert_eq!(a.agent_id, "a1");
                acked.insert(a.uuid);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    acked
}

/// Acknowledgements queued while earlier ones wait for the master go out
/// together in one call: 300 updates while the master holds the
/// acknowledgements make a few calls, not 300, and every update is
/// acknowledged once.
#[tokio::test]
async fn acknowledgements_queued_together_go_in_one_call() {
    let mut master = start_master(15.0, None).await;
    let mut fw = Framework::start(connect(&master));
    let (_, events) = expect_subscribe(&mut master).await;
    let (driver, _) = fw.subscribed().await;
    let held = master.ack_gate.clone().write_owned().await;
    send_updates(&events, &mut fw, 300).await;
    // The first calls are held; the rest wait for room and gather.
    let first = acknowledged(&mut master, 1).await;
    drop(held);
    let rest = acknowledged(&mut master, 299).await;
    let all: std::collections::BTreeSet<String> = first.union(&rest).cloned().collect();
    assert_eq!(all.len(), 300);
    let (calls, acks) = *master.ack_calls.lock().unwrap();
    assert_eq!(acks, 300, "every update acknowledged once");
    assert!(
        calls <= 40,
        "{calls} calls carried the 300 acknowledgements"
    );
    driver.stop();
    assert!(fw.finish().await.is_ok());
}

/// A master without `AcknowledgeMany` (an older release) gets every
/// acknowledgement one by one.
#[tokio::test]
async fn a_master_without_acknowledge_many_gets_them_one_by_one() {
    let mut master = start_master_with(15.0, None, true).await;
    let mut fw = Framework::start(connect(&master));
    let (_, events) = expect_subscribe(&mut master).await;
    let (driver, _) = fw.subscribed().await;
    let held = master.ack_gate.clone().write_owned().await;
    send_updates(&events, &mut fw, 100).await;
    let first = acknowledged(&mut master, 1).await;
    drop(held);
    let rest = acknowledged(&mut master, 99).await;
    assert_eq!(first.union(&rest).count(), 100);
    assert_eq!(*master.ack_calls.lock().unwrap(), (100, 100));
    driver.stop();
    assert!(fw.finish().await.is_ok());
}

#[tokio::test]
async fn a_failed_accept_is_reported_and_the_driver_goes_on() {
    let mut master = start_master(15.0, None).await;
    let mut fw = Framework::start(connect(&master));
    let (_, _events) = expect_subscribe(&mut master).await;
    let (driver, _) = fw.subscribed().await;
    master.fail_next("accept", Status::invalid_argument("offer o9 is unknown"));
    driver.launch(["o9"], vec![]);
    match fw.next().await {
        Seen::Error(message) => {
            assert!(message.contains("accept of offers [o9]"), "{message}");
            assert!(message.contains("offer o9 is unknown"), "{message}");
        }
        other => panic!("expected an error, saw {other:?}"),
    }
    driver.teardown();
    assert!(matches!(master.next().await, Got::Accept(_)));
    assert!(matches!(master.next().await, Got::Teardown(t) if t.framework_id == "fw-1"));
    assert!(fw.finish().await.is_ok());
}

#[tokio::test]
async fn a_closed_stream_leads_to_resubscription_and_reconciliation() {
    let mut master = start_master(15.0, None).await;
    let mut fw = Framework::start(connect(&master));
    let (_, events) = expect_subscribe(&mut master).await;
    fw.subscribed().await;
    drop(events);
    assert!(matches!(fw.next().await, Seen::Disconnected));
    let (again, _events) = expect_subscribe(&mut master).await;
    assert_eq!(again.framework.unwrap().id, "fw-1");
    let (driver, reconnected) = fw.subscribed().await;
    assert!(reconnected);
    assert!(
        matches!(master.next().await, Got::Reconcile(r) if r.tasks.is_empty() && r.framework_id == "fw-1")
    );
    driver.stop();
    assert!(fw.finish().await.is_ok());
}

#[tokio::test]
async fn a_silent_master_is_left_after_three_heartbeats() {
    let mut master = start_master(0.1, None).await;
    let mut fw = Framework::start(connect(&master));
    let (_, _silent) = expect_subscribe(&mut master).await;
    fw.subscribed().await;
    let started = tokio::time::Instant::now();
    assert!(matches!(fw.next().await, Seen::Disconnected));
    assert!(started.elapsed() >= Duration::from_millis(1200));
    let (_, _events) = expect_subscribe(&mut master).await;
    let (driver, reconnected) = fw.subscribed().await;
    assert!(reconnected);
    driver.stop();
    assert!(fw.finish().await.is_ok());
}

#[tokio::test]
async fn a_kill_that_fails_on_a_dying_master_is_retried_after_reconnection() {
    let mut master = start_master(15.0, None).await;
    let mut fw = Framework::start(connect(&master));
    let (_, events) = expect_subscribe(&mut master).await;
    let (driver, _) = fw.subscribed().await;
    master.fail_next("kill", Status::unavailable("master is shutting down"));
    driver.kill("t1", Some(Duration::from_secs(3)));
    assert!(matches!(master.next().await, Got::Kill(_)));
    drop(events);
    let (_, _events) = expect_subscribe(&mut master).await;
    // The kill was queued first, so its retry goes out before the implicit
    // reconciliation that follows the new subscription.
    assert!(matches!(master.next().await, Got::Kill(k) if k.grace_period_secs == Some(3.0)));
    assert!(matches!(master.next().await, Got::Reconcile(_)));
    assert!(matches!(fw.next().await, Seen::Disconnected));
    assert!(matches!(fw.next().await, Seen::Subscribed(_, _, true)));
    driver.stop();
    let mut seen_errors = Vec::new();
    while let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(100), fw.seen.recv()).await {
        seen_errors.push(format!("{s:?}"));
    }
    assert!(seen_errors.is_empty(), "{seen_errors:?}");
    assert!(fw.finish().await.is_ok());
}

#[tokio::test]
async fn a_follower_hint_leads_to_the_leader() {
    let mut leader = start_master(15.0, None).await;
    let follower = start_master(15.0, Some(leader.addr.to_string())).await;
    let mut fw = Framework::start(DriverBuilder::new().masters([follower.addr.to_string()]));
    let (_, _events) = expect_subscribe(&mut leader).await;
    let (driver, _) = fw.subscribed().await;
    driver.stop();
    assert!(fw.finish().await.is_ok());
}

#[tokio::test]
async fn removal_ends_the_run_with_the_masters_message() {
    let mut master = start_master(15.0, None).await;
    let mut fw = Framework::start(connect(&master));
    let (_, events) = expect_subscribe(&mut master).await;
    fw.subscribed().await;
    let removed = proto::Error {
        message: "failover timeout expired".into(),
    };
    events.send(Ok(event(Ev::Error(removed)))).unwrap();
    let err = fw.finish().await.err().expect("run must fail").to_string();
    assert!(err.contains("failover timeout expired"), "{err}");
    assert!(err.contains("'test-fw'") && err.contains("fw-1"), "{err}");
}

#[tokio::test]
async fn nobody_listening_fails_within_the_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    let started = std::time::Instant::now();
    let fw = Framework::start(
        DriverBuilder::new()
            .masters([dead.clone()])
            .connect_timeout(Duration::from_secs(1)),
    );
    let err = fw.finish().await.err().expect("run must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, SdkError::Unreachable { .. }));
    let text = err.to_string();
    assert!(text.contains(&dead) && text.contains("'test-fw'"), "{text}");
}

#[tokio::test]
async fn the_framework_id_file_makes_a_restart_fail_over() {
    let dir = std::env::temp_dir().join(format!("mezz-sdk-idfile-{}", std::process::id()));
    let file = dir.join("framework-id");
    let _ = std::fs::remove_dir_all(&dir);
    let mut master = start_master(15.0, None).await;

    // First start: no file, a new registration, and the id is stored.
    let mut fw = Framework::start(connect(&master).framework_id_file(&file));
    let (request, _events) = expect_subscribe(&mut master).await;
    assert_eq!(request.framework.map(|f| f.id), Some(String::new()));
    let (driver, reconnected) = fw.subscribed().await;
    assert!(!reconnected);
    assert_eq!(
        std::fs::read_to_string(&file).ok().as_deref(),
        Some("fw-1\n")
    );
    driver.stop();
    assert!(fw.finish().await.is_ok());

    // Restart: the stored id is used, so the scheduler fails over.
    let mut fw = Framework::start(connect(&master).framework_id_file(&file));
    let (request, _events) = expect_subscribe(&mut master).await;
    assert_eq!(request.framework.map(|f| f.id), Some("fw-1".to_string()));
    let (driver, reconnected) = fw.subscribed().await;
    assert!(reconnected);
    assert!(matches!(master.next().await, Got::Reconcile(_)));

    // A confirmed teardown forgets the id.
    driver.teardown();
    assert!(matches!(master.next().await, Got::Teardown(_)));
    assert!(fw.finish().await.is_ok());
    assert!(!file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Wakes up once, then stops the driver.
struct Sleeper(mpsc::UnboundedSender<()>);

impl Scheduler for Sleeper {
    fn subscribed(&mut self, driver: &Driver, _: &FrameworkId, _: bool) {
        driver.wake_after(Duration::from_millis(50));
    }
    fn offers(&mut self, _: &Driver, _: Vec<proto::Offer>) {}
    fn status_update(&mut self, _: &Driver, _: &proto::TaskStatus) {}
    fn wakeup(&mut self, driver: &Driver) {
        let _ = self.0.send(());
        driver.stop();
    }
}

#[tokio::test]
async fn wake_after_calls_the_scheduler_back() {
    let mut master = start_master(15.0, None).await;
    let (tx, mut woke) = mpsc::unbounded_channel();
    let run = tokio::spawn(
        connect(&master)
            .framework(proto::FrameworkInfo {
                name: "sleeper".into(),
                ..Default::default()
            })
            .run(Sleeper(tx)),
    );
    let (_, _events) = expect_subscribe(&mut master).await;
    within(woke.recv()).await.expect("woken up");
    assert!(within(run).await.expect("driver task").is_ok());
}
