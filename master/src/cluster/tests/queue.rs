//! The queue through the state machine: preemption for a higher class,
//! held resources offered to the preemptor, start and run deadlines.

use super::*;
use mezz_proto::v1::{Demand, SetDemandRequest};

/// Subscribes a framework of class `priority` on stream `conn`; its id
/// and the effects (its first offers among them).
fn subscribe_with(
    h: &mut Harness,
    conn: ConnId,
    name: &str,
    priority: &str,
) -> (String, Vec<Effect>) {
    h.c.subscribe(
        conn,
        mezz_proto::PROTOCOL_VERSION,
        FrameworkInfo {
            name: name.into(),
            priority: priority.into(),
            ..Default::default()
        },
        h.now,
    )
    .unwrap();
    let e = h.settle();
    let fid = e
        .iter()
        .find_map(|e| match e {
            Effect::ToFramework(
                c,
                Event {
                    event: Some(event::Event::Subscribed(s)),
                },
            ) if *c == conn => Some(s.framework_id.clone()),
            _ => None,
        })
        .expect("subscribed");
    (fid, e)
}

fn subscribe_as(h: &mut Harness, conn: ConnId, name: &str, priority: &str) -> String {
    subscribe_with(h, conn, name, priority).0
}

/// Subscribes a framework of class `priority` and launches `t` on its
/// first offer; it runs.
fn runs(h: &mut Harness, conn: ConnId, priority: &str, t: TaskInfo) -> String {
    let name = if priority.is_empty() { "f" } else { priority };
    let (fid, e) = subscribe_with(h, conn, name, priority);
    let o = offers(&e);
    assert!(!o.is_empty(), "an offer: {e:?}");
    let tid = t.task_id.clone();
    launch(h, &fid, &o[0], vec![t]);
    h.update(1, agent_status("a1", &fid, &tid, TaskState::Running, "u1"));
    h.settle();
    fid
}

fn demand(h: &mut Harness, fid: &str, id: &str, res: &str, deadline: f64) {
    h.c.set_demand(
        SetDemandRequest {
            framework_id: fid.into(),
            demands: vec![Demand {
                id: id.into(),
                resources: Resources::parse(res).unwrap().to_proto(),
                tasks: 1,
                start_deadline_secs: deadline,
                ..Default::default()
            }],
        },
        h.now,
    )
    .unwrap();
}

fn kills(effects: &[Effect]) -> Vec<mezz_proto::v1::KillTask> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToAgent(
                _,
                MasterMessage {
                    message: Some(M::Kill(k)),
                },
            ) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_higher_class_preempts_and_is_offered_what_was_freed() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:1024", vec![]);
    let low = runs(&mut h, 10, "best-effort", task("t1", "cpus:2;mem:512"));

    let high = subscribe_as(&mut h, 11, "high", "production");
    demand(&mut h, &high, "train", "cpus:1;mem:128", 0.0);
    let e = h.tick(100);
    let k = kills(&e);
    assert_eq!(k.len(), 1, "{e:?}");
    assert_eq!(
        (k[0].task_id.as_str(), k[0].reason()),
        ("t1", TaskReason::Preempted)
    );
    assert!(
        k[0].message.contains("'high'") && k[0].message.contains("production"),
        "{}",
        k[0].message
    );
    // Nothing more while the victim dies.
    assert!(kills(&h.tick(100)).is_empty());

    h.update(1, agent_status("a1", &low, "t1", TaskState::Killed, "u2"));
    let e = h.settle();
    let to_high: Vec<Offer> = offers(&e)
        .into_iter()
        .filter(|o| o.framework_id == high)
        .collect();
    // The held resources first, as their own offer; the allocator may
    // offer the rest beside them.
    assert!(
        !to_high.is_empty(),
        "the freed resources go to the preemptor: {e:?}"
    );
    let offered = Resources::from_proto(&to_high[0].resources).unwrap();
    assert!(offered.contains(&Resources::parse("cpus:1;mem:128").unwrap()));
}

#[test]
fn an_equal_or_lower_class_never_preempts() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:1024", vec![]);
    runs(&mut h, 10, "production", task("t1", "cpus:2;mem:512"));
    let other = subscribe_as(&mut h, 11, "other", "production");
    demand(&mut h, &other, "w", "cpus:1;mem:128", 0.0);
    assert!(kills(&h.tick(100)).is_empty());
    let view = h.c.queue_views();
    assert_eq!(view.len(), 1);
    assert!(
        view[0].why.contains("would not make room"),
        "{}",
        view[0].why
    );
}

#[test]
fn start_deadline_drops_the_demand_with_its_reason() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:1;mem:256", vec![]);
    let fid = subscribe_as(&mut h, 10, "f", "");
    demand(&mut h, &fid, "big", "cpus:8;mem:128;gpus:1", 1.0);
    assert!(updates(&h.tick(500)).is_empty());
    let u = updates(&h.tick(600));
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].task_id, "big");
    assert_eq!(u[0].state(), TaskState::Dropped);
    assert_eq!(u[0].reason(), TaskReason::DeadlineNotMet);
    assert!(u[0].message.contains("gpus:1") && u[0].message.contains("batch"));
    assert!(h.c.queue_views().is_empty());
    assert!(h.c.completed.iter().any(|t| t.info.task_id == "big"));
}

#[test]
fn run_deadline_kills_the_task_and_unknown_classes_are_refused() {
    let mut h = Harness::new();
    h.register_agent(1, "a1", "cpus:2;mem:1024", vec![]);
    let mut t = task("t1", "cpus:1;mem:64");
    t.max_run_secs = 2.0;
    runs(&mut h, 10, "", t);
    assert!(kills(&h.tick(1_000)).is_empty());
    let k = kills(&h.tick(1_500));
    assert_eq!(k.len(), 1);
    assert_eq!(k[0].reason(), TaskReason::DeadlineExceeded);

    let e =
        h.c.subscribe(
            11,
            mezz_proto::PROTOCOL_VERSION,
            FrameworkInfo {
                name: "x".into(),
                priority: "urgent".into(),
                ..Default::default()
            },
            h.now,
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("production, batch, best-effort"),
        "{e}"
    );
}
