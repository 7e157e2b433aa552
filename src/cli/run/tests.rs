use super::*;

fn st(
    state: TaskState,
    reason: TaskReason,
    code: Option<i32>,
    sig: Option<i32>,
) -> proto::TaskStatus {
    proto::TaskStatus {
        state: state as i32,
        reason: reason as i32,
        exit_code: code,
        signal: sig,
        ..Default::default()
    }
}

fn launcher() -> Launcher {
    let need = Resources::parse("cpus:1;mem:64").unwrap();
    let template = TaskBuilder::exec("t1", "true", Vec::<String>::new()).resources(&need);
    Launcher::new(need, "*".into(), 0, template, "t1".into(), false)
}

fn offer(id: &str, agent: &str, resources: &str) -> proto::Offer {
    proto::Offer {
        id: id.into(),
        agent_id: agent.into(),
        resources: Resources::parse(resources).unwrap().to_proto(),
        ..Default::default()
    }
}

fn update(task: &str, state: TaskState) -> proto::TaskStatus {
    proto::TaskStatus {
        task_id: task.into(),
        state: state as i32,
        ..Default::default()
    }
}

fn launched(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Launch { task, .. } => Some(task.task_id.clone()),
            _ => None,
        })
        .collect()
}

fn reconciles(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Reconcile { .. }))
        .count()
}

#[test]
fn a_failed_accept_is_asked_about_and_launched_again_only_when_unknown() {
    let mut l = launcher();
    let t0 = Instant::now();
    let out = l.offers(vec![offer("o1", "a1", "cpus:2;mem:128")], t0);
    assert_eq!(launched(&out), vec!["t1"]);
    assert!(out.iter().any(|a| matches!(a, Action::Suppress)));
    // The accept fails (the leader died): not launched yet, not lost.
    let out = l.failed_call("accept: transport error", t0);
    assert_eq!(reconciles(&out), 1, "{out:?}");
    // Offers meanwhile are declined, never launched twice.
    let out = l.offers(vec![offer("o2", "a1", "cpus:2;mem:128")], t0);
    assert!(launched(&out).is_empty(), "{out:?}");
    // A new leader: asked again; one UNKNOWN is not enough (the accept
    // might still be on its way), a second one a second later is.
    let out = l.subscribed(t0 + Duration::from_millis(100));
    assert_eq!(reconciles(&out), 1);
    let t1 = t0 + Duration::from_millis(200);
    let out = l.status(&update("t1", TaskState::Unknown), t1);
    assert!(!out.iter().any(|a| matches!(a, Action::Revive)), "{out:?}");
    let out = l.status(&update("t1", TaskState::Unknown), t1 + UNKNOWN_CONFIRM);
    assert!(out.iter().any(|a| matches!(a, Action::Revive)), "{out:?}");
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Tell(Progress::Retry { .. }))));
    // The next launch has its own id, so the two can never be confused.
    let out = l.offers(vec![offer("o3", "a2", "cpus:2;mem:128")], t1);
    assert_eq!(launched(&out), vec!["t1.2"]);
    // Updates of the first attempt are no longer news.
    assert!(l.status(&update("t1", TaskState::Running), t1).is_empty());
    let out = l.status(&update("t1.2", TaskState::Running), t1);
    assert!(
        matches!(&out[..], [Action::Tell(Progress::Update(_))]),
        "{out:?}"
    );
}

#[test]
fn a_launch_the_master_knows_is_never_repeated() {
    let mut l = launcher();
    let t0 = Instant::now();
    l.offers(vec![offer("o1", "a1", "cpus:2;mem:128")], t0);
    l.disconnected();
    l.subscribed(t0);
    // STAGING: the master has it; UNKNOWN answers before it are reset.
    let t1 = t0 + Duration::from_millis(300);
    l.status(&update("t1", TaskState::Unknown), t0);
    let out = l.status(&update("t1", TaskState::Staging), t1);
    assert!(
        matches!(&out[..], [Action::Tell(Progress::Update(_))]),
        "{out:?}"
    );
    let out = l.status(&update("t1", TaskState::Unknown), t1 + UNKNOWN_CONFIRM);
    assert!(!out.iter().any(|a| matches!(a, Action::Revive)), "{out:?}");
    // Quiet for too long: asked about on the next wake-up.
    let out = l.wakeup(t1 + LAUNCH_PATIENCE * 2);
    assert_eq!(reconciles(&out), 1, "{out:?}");
    // Dropped for want of resources: launched again.
    let dropped = proto::TaskStatus {
        reason: TaskReason::ResourcesUnavailable as i32,
        ..update("t1", TaskState::Dropped)
    };
    let out = l.status(&dropped, t1);
    assert!(out.iter().any(|a| matches!(a, Action::Revive)), "{out:?}");
}

#[test]
fn declines_name_one_agent_each() {
    let mut l = launcher();
    let out = l.offers(
        vec![
            offer("o1", "a1", "cpus:0.5;mem:128"),
            offer("o2", "a2", "cpus:0.5;mem:128"),
            offer("o3", "a1", "mem:128"),
        ],
        Instant::now(),
    );
    let declines: Vec<Vec<String>> = out
        .iter()
        .filter_map(|a| match a {
            Action::Decline { offer_ids, .. } => Some(offer_ids.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(declines, vec![vec!["o1", "o3"], vec!["o2"]]);
}

#[test]
fn exit_codes_follow_the_shell() {
    assert_eq!(
        exit_code(&st(
            TaskState::Finished,
            TaskReason::Unspecified,
            Some(0),
            None
        ))
        .0,
        0
    );
    assert_eq!(
        exit_code(&st(
            TaskState::Failed,
            TaskReason::CommandExited,
            Some(3),
            None
        )),
        (3, None)
    );
    assert_eq!(
        exit_code(&st(TaskState::Failed, TaskReason::LaunchFailed, None, None)).0,
        127
    );
    assert_eq!(
        exit_code(&st(
            TaskState::Killed,
            TaskReason::KilledByRequest,
            None,
            Some(15)
        ))
        .0,
        143
    );
    assert_eq!(
        exit_code(&st(TaskState::Lost, TaskReason::AgentRemoved, None, None)).0,
        1
    );
}

#[test]
fn program_names_make_task_ids() {
    assert_eq!(program_name("/usr/bin/python3"), "python3");
    assert_eq!(program_name("echo hi && ls"), "echo");
    assert_eq!(program_name("a.b"), "a-b");
}
