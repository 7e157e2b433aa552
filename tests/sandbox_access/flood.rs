//! A framework flooding launches is refused; another keeps its latency.

use super::super::*;

/// A subscribed framework's id, for `token`.
async fn subscribe(
    addr: &str,
    token: &str,
    role: &str,
) -> (String, tonic::Streaming<mezz_proto::v1::Event>) {
    let mut s = SchedulerClient::new(channel(addr, Some(&bearer(token)), None).await)
        .subscribe(SubscribeRequest {
            protocol_version: mezz_proto::PROTOCOL_VERSION,
            framework: Some(FrameworkInfo {
                name: format!("rate-{role}"),
                role: role.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("subscribe")
        .into_inner();
    loop {
        let e = s.message().await.expect("event").expect("an event");
        if let Some(mezz_proto::v1::event::Event::Subscribed(sub)) = e.event {
            return (sub.framework_id, s);
        }
    }
}

/// An ACCEPT launching `tasks` tasks on an offer the master never made: it
/// passes the rate limit (or not), then the state machine drops the tasks.
fn launch(fw: &str, tasks: usize) -> AcceptRequest {
    use mezz_proto::v1::{operation, Launch, Operation, TaskInfo};
    AcceptRequest {
        framework_id: fw.into(),
        offer_ids: vec!["no-such-offer".into()],
        operations: vec![Operation {
            operation: Some(operation::Operation::Launch(Launch {
                tasks: (0..tasks)
                    .map(|i| TaskInfo {
                        task_id: format!("t{i}"),
                        name: format!("t{i}"),
                        ..Default::default()
                    })
                    .collect(),
            })),
        }],
        filters: None,
    }
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn a_framework_flooding_launches_is_refused_while_another_keeps_its_latency() {
    let dir = cluster_dir();
    let limits = dir.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"principals": {"flood": {"calls_per_sec": 5, "burst": 10}}}"#,
    )
    .expect("limits");
    let c = Shared::start(&["--rate-limits", &limits.display().to_string()]);
    // Both may register in any role.
    let acls = ACLS.replace(
        r#"{"principals": ["admin"], "roles": "ANY"}
  ],
  "run_tasks""#,
        r#"{"principals": ["admin", "flood", "calm"], "roles": "ANY"}
  ],
  "run_tasks""#,
    );
    assert_ne!(acls, ACLS);
    let acl_file = dir.path().join("acls.json");
    std::fs::write(&acl_file, acls).expect("ACLs");
    let out = c.mezz_as("admin", &["acl", "set", &acl_file.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let tokens: Vec<String> = ["flood", "calm"]
        .iter()
        .map(|who| {
            let out = c.mezz_as("admin", &["token", "create", who]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            text(&out.stdout).trim().to_string()
        })
        .collect();
    let (flood, calm) = (tokens[0].clone(), tokens[1].clone());
    let rt = runtime();
    rt.block_on(async {
        let (flood_fw, _fs) = subscribe(&c.addr, &flood, "batch").await;
        let (calm_fw, _cs) = subscribe(&c.addr, &calm, "web").await;
        let calm_client = SchedulerClient::new(channel(&c.addr, Some(&bearer(&calm)), None).await);
        let timed = |n: usize| {
            let mut client = calm_client.clone();
            let fw = calm_fw.clone();
            async move {
                let mut samples = Vec::with_capacity(n);
                for _ in 0..n {
                    let at = Instant::now();
                    let r = client.accept(launch(&fw, 1)).await;
                    samples.push(at.elapsed());
                    // The master answers a launch on an unknown offer
                    // with TASK_DROPPED updates; never with a refusal.
                    if let Err(e) = r {
                        panic!("calm's launch refused: {e:?}");
                    }
                }
                samples
            }
        };
        let baseline = median(timed(40).await);

        // Flood: four callers launching 5 tasks per call, as fast as they can.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut flooders = Vec::new();
        for _ in 0..4 {
            let mut client =
                SchedulerClient::new(channel(&c.addr, Some(&bearer(&flood)), None).await);
            let (fw, stop) = (flood_fw.clone(), stop.clone());
            flooders.push(tokio::spawn(async move {
                let (mut passed, mut refused, mut sample) = (0u64, 0u64, None);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match client.accept(launch(&fw, 5)).await {
                        Err(e) if e.code() == Code::ResourceExhausted => {
                            refused += 1;
                            sample.get_or_insert(e);
                        }
                        _ => passed += 1,
                    }
                }
                (passed, refused, sample)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = median(timed(40).await);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut passed, mut refused, mut sample) = (0, 0, None);
        for f in flooders {
            let (p, r, s) = f.await.expect("flooder");
            passed += p;
            refused += r;
            sample = sample.or(s);
        }
        eprintln!(
            "calm median latency {baseline:?} alone, {during:?} during the flood; \
             flood: {passed} calls passed, {refused} refused"
        );
        assert!(
            refused > passed,
            "the flood is mostly refused: {passed} passed, {refused} refused"
        );
        let e = sample.expect("a refusal");
        let msg = e.message();
        assert!(
            msg.contains("'flood'")
                && msg.contains("5 scheduler calls per second")
                && msg.contains("retry in"),
            "{msg}"
        );
        let retry: u64 = e
            .metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("retry-after");
        assert!((1..=60).contains(&retry), "{retry}");
        // Generous: a busy 2-core machine may slow everything, but the calm
        // framework must not wait behind the flood.
        let bound = baseline * 10 + Duration::from_millis(50);
        assert!(
            during <= bound,
            "calm's latency {during:?} against {baseline:?} alone"
        );
    });
}
