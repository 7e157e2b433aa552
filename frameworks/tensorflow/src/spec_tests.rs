use super::*;

fn no_sizes(name: &str) -> Result<Size, SpecError> {
    Ok(crate::sizes::Sizes::builtin().get(name)?)
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn flags_alone_make_a_job() {
    let spec = JobSpec::build(
        None,
        Overrides {
            chief: true,
            workers: Some(2),
            ps: Some(1),
            cpus: Some(2.0),
            gpus: Some(1),
            command: cmd(&["python3", "train.py"]),
            ..Default::default()
        },
        no_sizes,
    )
    .expect("valid");
    assert_eq!(spec.name, "train");
    assert_eq!(spec.replicas(), 4);
    let ids: Vec<String> = spec.replica_ids().iter().map(|r| r.to_string()).collect();
    assert_eq!(ids, ["chief/0", "worker/0", "worker/1", "ps/0"]);
    assert_eq!(spec.group(ReplicaType::Worker).map(|g| g.gpus), Some(1));
    assert_eq!(
        spec.group(ReplicaType::Ps).map(|g| (g.gpus, g.cpus)),
        Some((0, 2.0))
    );
    assert_eq!(spec.restart, RestartPolicy::Never);
    assert_eq!(spec.flavor, Flavor::Tensorflow);
}

#[test]
fn a_toml_file_with_flags_on_top() {
    let file = JobFile::from_toml(
        r#"
        name = "mnist"
        command = ["python3", "train.py"]
        flavor = "tensorflow"
        restart = "on-failure:2"
        [env]
        EPOCHS = "3"
        [chief]
        cpus = 2
        [worker]
        count = 4
        size = "gpu-small"
        [ps]
        count = 2
        mem = 2048
        command = "python3 ps.py"
        "#,
    )
    .expect("parses");
    let spec = JobSpec::build(
        Some(file),
        Overrides {
            workers: Some(3),
            env: vec![("EPOCHS".into(), "5".into())],
            ..Default::default()
        },
        no_sizes,
    )
    .expect("valid");
    assert_eq!(spec.name, "mnist");
    assert_eq!(spec.group(ReplicaType::Worker).map(|g| g.count), Some(3));
    assert_eq!(spec.group(ReplicaType::Worker).map(|g| g.gpus), Some(1));
    assert_eq!(spec.group(ReplicaType::Chief).map(|g| g.cpus), Some(2.0));
    assert_eq!(spec.env["EPOCHS"], "5");
    assert_eq!(
        spec.command_of(ReplicaId {
            kind: ReplicaType::Ps,
            index: 1
        }),
        ["python3 ps.py"]
    );
    assert_eq!(
        spec.restart,
        RestartPolicy::OnFailure {
            max_restarts: 2,
            backoff: Duration::from_secs(1)
        }
    );
}

#[test]
fn a_yaml_file_parses_too() {
    let dir = std::env::temp_dir().join(format!("mezz-tf-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("job.yaml");
    std::fs::write(
        &path,
        "name: r\ncommand: [python3, t.py]\nflavor: pytorch\nworker:\n  count: 2\n",
    )
    .expect("write");
    let spec = JobSpec::build(
        Some(JobFile::load(&path).expect("yaml")),
        Overrides::default(),
        no_sizes,
    )
    .expect("valid");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((spec.flavor, spec.replicas()), (Flavor::Pytorch, 2));
}

#[test]
fn mistakes_are_named() {
    let bad = |o: Overrides| JobSpec::build(None, o, no_sizes).expect_err("invalid").0;
    assert!(bad(Overrides {
        workers: Some(1),
        ..Default::default()
    })
    .contains("no command"));
    assert!(bad(Overrides {
        workers: Some(1),
        name: Some("a b".into()),
        command: cmd(&["true"]),
        ..Default::default()
    })
    .contains("job name"));
    assert!(bad(Overrides {
        ps: Some(1),
        flavor: Some(Flavor::Pytorch),
        command: cmd(&["true"]),
        ..Default::default()
    })
    .contains("pytorch"));
    assert!(JobFile::from_toml("[worker]\ncoutn = 2\n").is_err());
    assert!("on-failure:x".parse::<RestartPolicy>().is_err());
    assert!("sometimes".parse::<RestartPolicy>().is_err());
    assert!(JobSpec::build(
        None,
        Overrides {
            size: None,
            workers: Some(1),
            command: cmd(&["t"]),
            ..Default::default()
        },
        no_sizes
    )
    .is_ok());
}

#[test]
fn restart_backoff_doubles_up_to_the_limit() {
    let p: RestartPolicy = "on-failure:3".parse().expect("valid");
    assert_eq!(p.delay(1), Some(Duration::from_secs(1)));
    assert_eq!(p.delay(3), Some(Duration::from_secs(4)));
    assert_eq!(p.delay(4), None);
    assert_eq!(RestartPolicy::Never.delay(1), None);
}

#[test]
fn task_ids_round_trip() {
    let r = ReplicaId {
        kind: ReplicaType::Worker,
        index: 1,
    };
    assert_eq!(r.task_id("job", 2), "job.worker.1.2");
    assert_eq!(r.task_name("job"), "job/worker/1");
    assert_eq!(
        ReplicaId::parse_task_id("job", "job.worker.1.2"),
        Some((r, 2))
    );
    assert_eq!(ReplicaId::parse_task_id("job", "jobx.worker.1.2"), None);
    assert_eq!(ReplicaId::parse_task_id("job", "job.boss.1.2"), None);
}

#[test]
fn deadlines_come_from_the_file_or_flags_and_bad_ones_are_named() {
    let file = JobFile::from_toml(
        "command = \"true\"\nstart_deadline = \"10m\"\nrun_deadline = \"1h 30m\"\n",
    )
    .expect("parses");
    let spec = JobSpec::build(
        Some(file.clone()),
        Overrides {
            run_deadline: Some(Duration::from_secs(60)),
            ..Default::default()
        },
        no_sizes,
    )
    .expect("valid");
    assert_eq!(spec.start_deadline, Some(Duration::from_secs(600)));
    assert_eq!(
        spec.run_deadline,
        Some(Duration::from_secs(60)),
        "the flag wins"
    );
    let bad =
        JobFile::from_toml("command = \"true\"\nstart_deadline = \"soon\"\n").expect("parses");
    let e = JobSpec::build(Some(bad), Overrides::default(), no_sizes)
        .expect_err("not a duration")
        .0;
    assert!(
        e.starts_with("start_deadline 'soon' is not a duration"),
        "{e}"
    );
    let e = JobSpec::build(
        Some(file),
        Overrides {
            start_deadline: Some(Duration::ZERO),
            ..Default::default()
        },
        no_sizes,
    )
    .expect_err("zero")
    .0;
    assert!(e.contains("start deadline of zero"), "{e}");
}
