use super::*;

fn offer(resources: &str) -> proto::Offer {
    proto::Offer {
        id: "o1".into(),
        agent_id: "a1".into(),
        agent_address: "10.0.0.7:5051".into(),
        hostname: "h".into(),
        resources: Resources::parse(resources).unwrap().to_proto(),
        ..Default::default()
    }
}

#[test]
fn a_restart_asks_for_its_old_port_first() {
    let base = Resources::parse("cpus:1;mem:256").unwrap();
    let o = offer("cpus:2;mem:512;ports:[31000-31010]");
    assert_eq!(claim(&o, &base, 0, None).unwrap().1, 31000);
    assert_eq!(claim(&o, &base, 0, Some(31007)).unwrap().1, 31007);
    assert_eq!(claim(&o, &base, 0, Some(40000)).unwrap().1, 31000);
    assert!(claim(&offer("cpus:2;mem:512"), &base, 0, None).is_none());
    assert!(claim(&o, &base, 1, None).is_none());
    let big = Resources::parse("cpus:4;mem:256").unwrap();
    assert!(claim(&o, &big, 0, None).is_none());
    assert_eq!(agent_host(&o), "10.0.0.7");
}

#[test]
fn gpus_are_picked_by_identity() {
    let base = Resources::parse("cpus:1;mem:256").unwrap();
    let o = offer("cpus:2;mem:512;ports:[31000-31010];gpus:{g0,g1}");
    let (needs, _, ids) = claim(&o, &base, 1, None).unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(needs.set_items(GPUS), vec![ids[0].as_str()]);
}

#[test]
fn the_task_names_its_url_and_files_but_not_its_token() {
    let nb = Notebook {
        name: "t1".into(),
        serial: 0,
        cpus: 1.0,
        mem: 256.0,
        gpus: 0,
        token: "secret-token".into(),
        idle_timeout_secs: None,
        notebook_dir: "/n/t1".into(),
        python: "python3".into(),
        lab: false,
        agent_id: Some("a1".into()),
        host: Some("10.0.0.7".into()),
        port: Some(31000),
    };
    let needs = Resources::parse("cpus:1;mem:256").unwrap();
    let task = server_task(
        &nb,
        &TaskId("jupyter-t1-0.0".into()),
        &needs,
        "10.0.0.7",
        31000,
    )
    .build(&offer("cpus:1"));
    assert_eq!(task.labels["url"], "http://10.0.0.7:31000/");
    assert_eq!(task.labels["notebook_dir"], "/n/t1");
    let cmd = task.command.unwrap();
    assert!(!cmd.arguments.iter().any(|a| a.contains("secret-token")));
    assert_eq!(cmd.environment["JUPYTER_TOKEN"], "secret-token");
}
