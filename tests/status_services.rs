//! Services on `/api/state` and the status page, end to end: real `mezz
//! master` and `mezz agent` processes, and a framework built on the SDK (in
//! this test process) that launches tasks labelled as replicas of one
//! service, the way any framework may. The agent's health checks decide
//! which replicas are healthy; the master derives the services from the
//! labels and the health alone.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mezz_sdk::{proto, Driver, DriverBuilder, FrameworkId, Resources, Scheduler, TaskBuilder};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
const SMALL: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31099]";
const PROXY: &str = "http://127.0.0.1:40000/";

/// A health check that runs `cmd` every 200 ms and never kills the task.
fn check(cmd: &str) -> proto::HealthCheck {
    proto::HealthCheck {
        check: Some(proto::health_check::Check::Command(cmd.into())),
        interval_secs: 0.2,
        timeout_secs: 5.0,
        grace_period_secs: 0.0,
        consecutive_failures: 1_000_000,
    }
}

/// (task id, command, labels, health check command)
type Replica = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Option<&'static str>,
);

fn replicas() -> Vec<Replica> {
    let v1 = |port: &'static str| {
        vec![
            ("service", "iris"),
            ("version", "1"),
            ("url", port),
            ("service_url", PROXY),
        ]
    };
    vec![
        (
            "iris-1-a",
            "sleep 300",
            v1("http://127.0.0.1:31001/"),
            Some("true"),
        ),
        (
            "iris-1-b",
            "sleep 300",
            v1("http://127.0.0.1:31002/"),
            Some("false"),
        ),
        (
            "iris-2-a",
            "sleep 300",
            vec![
                ("service", "iris"),
                ("version", "2"),
                ("canary", "true"),
                ("weight", "20"),
                ("url", "http://127.0.0.1:31003/"),
                ("service_url", PROXY),
            ],
            Some("true"),
        ),
        // A version that is not a number, and no health check.
        (
            "iris-x",
            "sleep 300",
            vec![("service", "iris"), ("version", "latest")],
            None,
        ),
        // Ends at once: a finished task is no replica.
        (
            "iris-done",
            "true",
            vec![("service", "iris"), ("version", "1")],
            None,
        ),
        // No service label: a plain task.
        ("plain", "sleep 300", vec![], None),
    ]
}

/// Launches [`replicas`] on the first offer that holds them all.
struct Labeller {
    launched: bool,
    driver: Arc<Mutex<Option<Driver>>>,
}

impl Scheduler for Labeller {
    fn subscribed(&mut self, driver: &Driver, _: &FrameworkId, _: bool) {
        if let Ok(mut d) = self.driver.lock() {
            *d = Some(driver.clone());
        }
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let needs = Resources::parse("cpus:0.1;mem:32").expect("valid resources");
        for offer in offers {
            let mut left = Resources::from_proto(&offer.resources).unwrap_or_default();
            let all = replicas();
            let fits = all
                .iter()
                .all(|_| left.checked_sub(&needs).map(|l| left = l).is_some());
            if self.launched || !fits {
                driver.decline([offer.id], Some(60.0));
                continue;
            }
            self.launched = true;
            let tasks = all
                .into_iter()
                .map(|(id, cmd, labels, health)| {
                    let mut b = TaskBuilder::shell(id, cmd).resources(&needs);
                    for (k, v) in labels {
                        b = b.label(k, v);
                    }
                    if let Some(h) = health {
                        b = b.health_check(check(h));
                    }
                    b.build(&offer)
                })
                .collect::<Vec<_>>();
            driver.launch([offer.id], tasks);
            driver.suppress();
        }
    }

    fn status_update(&mut self, _: &Driver, _: &proto::TaskStatus) {}
}

/// The `services` of `/api/state{query}`.
fn services(c: &Cluster, query: &str) -> Value {
    let (code, body) =
        http_get(&c.master_addr(), &format!("/api/state{query}")).expect("GET /api/state");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("state JSON");
    v["services"].clone()
}

fn replica(
    task_id: &str,
    agent: &str,
    url: &str,
    version: Value,
    canary: bool,
    healthy: Value,
) -> Value {
    json!({
        "task_id": task_id, "agent_id": agent, "url": url, "version": version,
        "canary": canary, "state": "RUNNING", "healthy": healthy
    })
}

#[test]
fn labelled_tasks_are_services_with_versions_and_health() {
    let c = Cluster::start(SMALL, &[]);
    assert_eq!(services(&c, ""), json!([]));
    let (code, page) = http_get(&c.master_addr(), "/services").expect("GET /services");
    assert_eq!(code, 200);
    assert!(page.contains("No services are running."), "{page}");

    let driver = Arc::new(Mutex::new(None::<Driver>));
    let (done_tx, done_rx) = mpsc::channel();
    let masters = vec![c.master_addr()];
    let shared = driver.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let result = runtime.block_on(
            DriverBuilder::new()
                .masters(masters)
                .framework(proto::FrameworkInfo {
                    name: "labeller".into(),
                    ..Default::default()
                })
                .connect_timeout(Duration::from_secs(10))
                .run(Labeller {
                    launched: false,
                    driver: shared,
                }),
        );
        let _ = done_tx.send(result.map(|_| ()).map_err(|e| e.to_string()));
    });

    wait_for("the finished task to be FINISHED", T, || {
        c.task("iris-done")
            .is_some_and(|t| t["state"] == "FINISHED")
    });
    let state = c.state();
    let fw = state["frameworks"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "labeller"))
        .expect("the framework in the state")["id"]
        .as_str()
        .expect("framework id")
        .to_string();
    let agent = state["agents"][0]["id"]
        .as_str()
        .expect("agent id")
        .to_string();
    let expected = json!([{
        "name": "iris",
        "framework_id": fw,
        "framework_name": "labeller",
        "url": PROXY,
        "versions": [
            { "version": 1, "canary": false, "weight": null, "replicas": 2, "healthy": 1 },
            { "version": 2, "canary": true, "weight": 20, "replicas": 1, "healthy": 1 },
            { "version": null, "canary": false, "weight": null, "replicas": 1, "healthy": 0 }
        ],
        "replicas": [
            replica("iris-1-a", &agent, "http://127.0.0.1:31001/", json!(1), false, json!(true)),
            replica("iris-1-b", &agent, "http://127.0.0.1:31002/", json!(1), false, json!(false)),
            replica("iris-2-a", &agent, "http://127.0.0.1:31003/", json!(2), true, json!(true)),
            replica("iris-x", &agent, "", Value::Null, false, Value::Null),
        ]
    }]);
    // Health arrives with the checks' first results.
    let deadline = Instant::now() + T;
    loop {
        let now = services(&c, "");
        if now == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {T:?} waiting for the services to show every replica's \
             health\nwanted {expected:#}\nlast   {now:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(services(&c, "?completed=false"), expected);

    // The page shows the same.
    for path in ["/services", "/"] {
        let (code, html) = http_get(&c.master_addr(), path).expect("GET page");
        assert_eq!(code, 200);
        for want in [
            format!("href=\"{PROXY}\""),
            "<b>v1</b> <span class=\"hc\">1/2 healthy</span>".to_string(),
            "canary 20%</span> <span class=\"hc ok\">1/1 healthy</span>".to_string(),
            "<b>version unknown</b> <span class=\"hc\">0/1 healthy</span>".to_string(),
            format!("href=\"/tasks/{fw}/iris-1-b\""),
            "s-unhealthy".to_string(),
            "health unknown".to_string(),
        ] {
            assert!(html.contains(&want), "{path} lacks {want}: {html}");
        }
        assert!(!html.contains("iris-done"), "{path}: {html}");
        assert!(!html.contains("/plain\""), "{path}: {html}");
    }

    // A framework gone takes its services with it.
    driver
        .lock()
        .expect("driver lock")
        .as_ref()
        .expect("subscribed")
        .teardown();
    match done_rx.recv_timeout(T) {
        Ok(r) => r.expect("the framework ends cleanly"),
        Err(e) => panic!("the framework did not end after its teardown: {e}"),
    }
    wait_for("no services once the framework is gone", T, || {
        services(&c, "") == json!([])
    });
}
