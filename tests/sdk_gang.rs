//! Two gang frameworks built on the SDK compete for a cluster of real
//! `mezz` processes that fits only one gang at a time. Each first holds one
//! agent's offer; bounded holds and refuse filters must break that tie, so
//! both gangs run, whole, one after the other.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use mezz_sdk::{proto, Driver, DriverBuilder, FrameworkId, Gang, OfferId, Resources};
use mezz_sdk::{Scheduler, TaskBuilder, TaskRequest, TaskState};

const GANG_SIZE: usize = 2;

struct GangFramework {
    name: String,
    gang: Gang,
    subscribed: std::sync::mpsc::Sender<String>,
    launches: usize,
    ended: BTreeMap<String, TaskState>,
    first_running: Option<Instant>,
    last_end: Option<Instant>,
}

impl GangFramework {
    fn new(name: &str, seed: u64, subscribed: std::sync::mpsc::Sender<String>) -> Self {
        let needs = Resources::parse("cpus:1;mem:64").expect("valid resources");
        let requests =
            (0..GANG_SIZE).map(|i| TaskRequest::new(format!("{name}-{i}"), needs.clone()));
        let gang = Gang::new(requests)
            .hold(Duration::from_millis(800))
            .refuse(Duration::from_millis(400))
            .seed(seed);
        GangFramework {
            name: name.into(),
            gang,
            subscribed,
            launches: 0,
            ended: BTreeMap::new(),
            first_running: None,
            last_end: None,
        }
    }
}

impl Scheduler for GangFramework {
    fn subscribed(&mut self, _: &Driver, _: &FrameworkId, _: bool) {
        let _ = self.subscribed.send(self.name.clone());
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let launched = self.gang.on_offers(driver, offers, |p| {
            TaskBuilder::shell(p.key.clone(), "sleep 1")
        });
        if launched {
            self.launches += 1;
        }
    }

    fn rescinded(&mut self, _: &Driver, offer_id: &OfferId) {
        self.gang.rescinded(offer_id);
    }

    fn disconnected(&mut self, _: &Driver) {
        self.gang.disconnected();
    }

    fn wakeup(&mut self, driver: &Driver) {
        self.gang.on_wakeup(driver);
    }

    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        let state = status.state();
        if state == TaskState::Running && self.first_running.is_none() {
            self.first_running = Some(Instant::now());
        }
        if state.is_terminal() && !self.ended.contains_key(&status.task_id) {
            self.ended.insert(status.task_id.clone(), state);
            self.last_end = Some(Instant::now());
            if self.ended.len() == GANG_SIZE {
                driver.teardown();
            }
        }
    }
}

#[test]
fn two_gangs_on_a_cluster_that_fits_one_both_finish_one_after_the_other() {
    // Each agent holds one task of a gang; a gang needs both agents.
    let mut c = Cluster::start("cpus:1;mem:256;disk:100", &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (tx, rx) = std::sync::mpsc::channel();
    let runs: Vec<_> = [("gang-a", 11), ("gang-b", 12)]
        .into_iter()
        .map(|(name, seed)| {
            let builder = DriverBuilder::new()
                .masters([c.master_addr()])
                .framework(proto::FrameworkInfo {
                    name: name.into(),
                    ..Default::default()
                })
                .connect_timeout(Duration::from_secs(20));
            runtime.spawn(builder.run(GangFramework::new(name, seed, tx.clone())))
        })
        .collect();
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("both frameworks subscribe");
    }
    // One agent's offer is held by one gang; the next agent goes to the
    // other (DRF): each holds half of what it needs.
    c.add_agent();

    let done = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(40), futures::future::join_all(runs)).await
    });
    let done = done.expect("both gangs finish within 40 s");
    let mut spans = Vec::new();
    for result in done {
        let fw = result
            .expect("driver task")
            .expect("driver ends by teardown");
        assert_eq!(fw.launches, 1, "{}: launched once, whole", fw.name);
        assert_eq!(fw.ended.len(), GANG_SIZE, "{}", fw.name);
        assert!(
            fw.ended.values().all(|s| *s == TaskState::Finished),
            "{}: {:?}",
            fw.name,
            fw.ended
        );
        spans.push((fw.first_running.expect("ran"), fw.last_end.expect("ended")));
    }
    spans.sort();
    assert!(
        spans[0].1 <= spans[1].0 + Duration::from_millis(200),
        "the gangs ran one after the other: {spans:?}"
    );
}
