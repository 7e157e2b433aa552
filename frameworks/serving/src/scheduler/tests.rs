use super::replicas::replica_task;
use super::*;

#[test]
fn the_replica_task_carries_port_health_check_and_urls() {
    let svc = Service {
        spec: DeployRequest {
            name: "m".into(),
            replicas: 1,
            cpus: 0.5,
            mem: 64.0,
            gpus: 0,
            health_path: "/health".into(),
            port_env: "PORT".into(),
            health_grace_secs: 120.0,
            command: "python3 model.py".into(),
        },
        proxy_port: 40000,
        slots: vec![],
        removing: false,
        version: 1,
        last_version: 1,
        update: None,
        canary: None,
        note: String::new(),
    };
    let offer = proto::Offer {
        id: "o".into(),
        agent_id: "a1".into(),
        ..Default::default()
    };
    let t = replica_task(
        &svc,
        "python3 model.py",
        &TaskId("serve-m-0.0".into()),
        "127.0.0.1:31000",
        31000,
    )
    .build(&offer);
    assert_eq!(t.labels["url"], "http://127.0.0.1:31000/");
    assert_eq!(t.labels["service_url"], "http://127.0.0.1:40000/");
    assert_eq!(t.command.unwrap().environment["PORT"], "31000");
    let Some(proto::health_check::Check::Http(h)) = t.health_check.unwrap().check else {
        panic!("no HTTP health check")
    };
    assert_eq!((h.port, h.path.as_str()), (31000, "/health"));
}

fn running(b: &mut Inner, key: &str, healthy: bool) {
    let id = b.tracker.launched(key, None).expect("waiting");
    let status = proto::TaskStatus {
        task_id: id.0.clone(),
        state: mezz_sdk::TaskState::Running as i32,
        ..Default::default()
    };
    b.tracker.update(&status, Instant::now());
    let name = b.owner[key].clone();
    let e = b.services.get_mut(&name).unwrap();
    e.replicas.entry(key.to_string()).or_default().healthy = healthy;
    if let Some(s) = e.service.slots.iter_mut().find(|s| s.key == key) {
        s.address = Some(format!("127.0.0.1:{}", 31000 + b.next_serial));
    }
}

/// A book in `tmp` with service `m` of `replicas` replicas of `v1`.
fn deployed(tmp: &tempfile::TempDir, replicas: u32) -> Book {
    let book = Book::load(&crate::store::open(tmp.path().join("s")).unwrap()).unwrap();
    let req = DeployRequest {
        name: "m".into(),
        replicas,
        cpus: 0.5,
        mem: 64.0,
        gpus: 0,
        health_path: "/health".into(),
        port_env: "PORT".into(),
        health_grace_secs: 1.0,
        command: "v1".into(),
    };
    book.deploy(req, 40000).unwrap();
    book
}

fn live(b: &Inner, version: u64) -> Vec<String> {
    b.services["m"]
        .service
        .slots
        .iter()
        .filter(|s| !s.retiring && s.version == version)
        .map(|s| s.key.clone())
        .collect()
}

#[test]
fn an_update_surges_by_one_and_stops_old_only_for_healthy_new() {
    let tmp = tempfile::tempdir().unwrap();
    let book = deployed(&tmp, 2);
    let mut b = book.lock();
    for k in live(&b, 1) {
        running(&mut b, &k, true);
    }
    b.start_update("m", "v2".into(), Pace::default()).unwrap();
    // One new replica beside the two old ones; none stopped yet.
    assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (2, 1));
    // Started but not healthy: still nothing stopped.
    let first = live(&b, 2)[0].clone();
    running(&mut b, &first, false);
    b.roll("m");
    assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (2, 1));
    // Healthy: one old one goes, and the next new one is wanted.
    b.services
        .get_mut("m")
        .unwrap()
        .replicas
        .get_mut(&first)
        .unwrap()
        .healthy = true;
    b.roll("m");
    assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (1, 2));
    let second = live(&b, 2).into_iter().find(|k| *k != first).unwrap();
    running(&mut b, &second, true);
    b.roll("m");
    assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (0, 2));
    let svc = &b.services["m"].service;
    assert!(svc.update.is_none());
    assert_eq!(svc.note, "updated to version 2");
    assert_eq!(b.view("m").unwrap().healthy, 2);
}

#[test]
fn the_pace_bounds_extra_and_missing_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let book = deployed(&tmp, 4);
    let mut b = book.lock();
    for k in live(&b, 1) {
        running(&mut b, &k, true);
    }
    let stuck = Pace {
        max_surge: 0,
        max_unavailable: 0,
    };
    assert!(b.start_update("m", "v2".into(), stuck).is_err());
    assert!(b.services["m"].service.update.is_none());
    // No surge, two short: two old ones stop at once and two new ones
    // take their places; never more than four run.
    let pace = Pace {
        max_surge: 0,
        max_unavailable: 2,
    };
    b.start_update("m", "v2".into(), pace).unwrap();
    assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (2, 2));
    let first = live(&b, 2);
    for k in &first {
        running(&mut b, k, true);
    }
    b.roll("m");
    assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (0, 4));
    // Not done until the last new ones answer too.
    assert!(b.services["m"].service.update.is_some());
    for k in live(&b, 2).iter().filter(|k| !first.contains(k)) {
        running(&mut b, k, true);
    }
    b.roll("m");
    assert!(b.services["m"].service.update.is_none());
    drop(b);
    // A surge of three, none short: three new ones beside the four old.
    let mut b = book.lock();
    let pace = Pace {
        max_surge: 3,
        max_unavailable: 0,
    };
    b.start_update("m", "v3".into(), pace).unwrap();
    assert_eq!((live(&b, 2).len(), live(&b, 3).len()), (4, 3));
}

#[test]
fn a_failing_update_goes_back_to_the_old_command() {
    let tmp = tempfile::tempdir().unwrap();
    let book = deployed(&tmp, 1);
    let mut b = book.lock();
    let old = live(&b, 1)[0].clone();
    running(&mut b, &old, true);
    b.start_update("m", "v2".into(), Pace::default()).unwrap();
    assert!(
        b.start_update("m", "v3".into(), Pace::default()).is_err(),
        "two updates at once"
    );
    let new = live(&b, 2)[0].clone();
    b.roll_back("m", "replica x failed its health check");
    let svc = &b.services["m"].service;
    assert_eq!((svc.version, svc.spec.command.as_str()), (1, "v1"));
    assert!(
        svc.note.contains("rolled back: replica x failed"),
        "{}",
        svc.note
    );
    // The new replica never ran: it is gone; the old one stays.
    assert!(svc.slots.iter().all(|s| s.key != new));
    assert_eq!(live(&b, 1), vec![old]);
    assert!(svc.update.is_none());
    // The next update gets a version of its own.
    b.start_update("m", "v3".into(), Pace::default()).unwrap();
    assert_eq!(b.services["m"].service.version, 3);
}

#[test]
fn a_healthy_replica_counts_once_the_proxy_routes_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let book = deployed(&tmp, 2);
    let keys = live(&book.lock(), 1);
    let turned = Instant::now();
    {
        let mut b = book.lock();
        for k in &keys {
            running(&mut b, k, true);
            let e = b.services.get_mut("m").unwrap();
            e.replicas.get_mut(k).unwrap().healthy_since = Some(turned);
        }
        // Healthy by their checks, yet no push of routes since: a request
        // now would find no replica, so none is counted.
        let v = b.view("m").unwrap();
        assert_eq!(v.healthy, 0);
        assert!(
            v.replica_list.iter().all(|r| r.state == "starting"),
            "{v:?}"
        );
    }
    // Both in the routes a push took before they turned healthy: still not.
    let answer = || crate::relay::PushAnswer {
        failed: Default::default(),
        in_flight: Default::default(),
    };
    book.proxy_said(answer(), turned - Duration::from_millis(1));
    assert_eq!(book.lock().view("m").unwrap().healthy, 0);
    // A push with routes taken after: both count, and both are routed.
    assert_eq!(book.backends("m").stable.len(), 2);
    book.proxy_said(answer(), Instant::now());
    let v = book.lock().view("m").unwrap();
    assert_eq!(v.healthy, 2);
    assert_eq!(v.state, "running");
}
