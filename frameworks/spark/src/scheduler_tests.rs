use super::*;
use mezz_sdk::Resources;

fn offer(id: &str, res: &str) -> proto::Offer {
    proto::Offer {
        id: id.into(),
        agent_id: format!("agent-{id}"),
        agent_address: format!("127.0.0.{}:5051", id.len()),
        resources: Resources::parse(res).expect("valid").to_proto(),
        ..Default::default()
    }
}

fn status(id: &str, state: TaskState, code: Option<i32>) -> proto::TaskStatus {
    proto::TaskStatus {
        task_id: id.into(),
        state: state as i32,
        exit_code: code,
        ..Default::default()
    }
}

#[test]
fn the_drivers_exit_code_is_the_applications() {
    assert_eq!(
        driver_outcome(&status("d", TaskState::Finished, Some(0))).code,
        0
    );
    let failed = driver_outcome(&status("d", TaskState::Failed, Some(3)));
    assert_eq!(failed.code, 3);
    assert!(failed.message.is_some_and(|m| m.contains("driver FAILED")));
    let mut killed = status("d", TaskState::Killed, None);
    killed.signal = Some(15);
    assert_eq!(driver_outcome(&killed).code, 143);
    assert_eq!(driver_outcome(&status("d", TaskState::Lost, None)).code, 1);
}

#[test]
fn the_gang_spreads_workers_and_says_what_is_missing() {
    let spec = crate::app::tests::spec();
    let offers = [
        offer("a", "cpus:4;mem:4096;ports:[31000-31010]"),
        offer("bb", "cpus:4;mem:4096;ports:[32000-32010]"),
    ];
    let plan = place(Strategy::Spread, &offers, &spec.gang());
    assert!(plan.is_complete(), "{plan:?}");
    let workers: BTreeSet<&str> = plan
        .placed
        .iter()
        .filter(|p| matches!(spec.gang_role(p.request), Role::Worker(_)))
        .map(|p| p.agent_id.as_str())
        .collect();
    assert_eq!(workers.len(), 2, "one worker per agent: {plan:?}");
    let text = missing(&spec, &offers[..1]);
    assert!(
        text.starts_with("3 of 4 tasks fit the 1 agent(s)"),
        "{text}"
    );
    assert!(text.contains("missing: 1 × "), "{text}");
    assert!(missing(&spec, &[]).contains("no offer yet"));
    assert_eq!(agent_host(&offers[1]), "127.0.0.2");
}
