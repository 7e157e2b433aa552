use super::*;

fn menu() -> Sizes {
    Sizes::builtin()
}

fn parse(text: &str) -> Result<JobSpec, SpecError> {
    JobSpec::parse(text, &menu())
}

fn err(text: &str) -> String {
    parse(text).expect_err("refused").0
}

#[test]
fn the_smallest_spec_of_the_issue_parses() {
    let s = parse(
        "kind: command\nname: nightly-etl\ncpus: 1\nmem: 512\nretries: 3\ncommand: python etl.py --date today\n",
    )
    .unwrap();
    assert_eq!(s.name, "nightly-etl");
    assert_eq!((s.cpus, s.mem, s.gpus), (1.0, 512.0, 0));
    assert_eq!(s.retries, 3);
    assert_eq!(s.backoff, DEFAULT_BACKOFF);
    assert_eq!(s.role, "*");
    assert_eq!(s.task_command(), "set -e\npython etl.py --date today");
}

#[test]
fn json_is_read_too_and_a_size_comes_from_the_menu() {
    let s = parse(
        r#"{"kind": "python", "name": "train", "size": "gpu-small", "entrypoint": "train.py",
            "args": ["--lr", "0.1"], "workdir": "/data/x", "priority": "high",
            "deadline": "2h", "backoff": "1s", "max_backoff": "8s"}"#,
    )
    .unwrap();
    assert_eq!(s.kind, Kind::Python);
    assert_eq!((s.cpus, s.mem, s.gpus), (4.0, 16384.0, 1));
    assert_eq!(s.deadline, Some(Duration::from_secs(7200)));
    assert_eq!(s.labels()["priority"], "high");
    assert_eq!(s.labels()["job"], "train");
    let cmd = s.task_command();
    assert!(cmd.starts_with("set -e\ncd /data/x\nPY=python3\n"), "{cmd}");
    assert!(cmd.ends_with("exec \"$PY\" train.py --lr 0.1"), "{cmd}");
}

#[test]
fn a_python_job_with_requirements_gets_a_cached_virtualenv() {
    let s = parse(
        "kind: python\nname: fit\nworkdir: /srv/fit\nrequirements: requirements.txt\npython: /opt/py/bin/python\nentrypoint: fit.py\n",
    )
    .unwrap();
    let cmd = s.task_command();
    assert!(cmd.contains("REQ=requirements.txt\n"), "{cmd}");
    assert!(cmd.contains("VENV=\"$ROOT/fit-$SUM\""), "{cmd}");
    assert!(
        cmd.contains("/opt/py/bin/python -m venv --system-site-packages"),
        "{cmd}"
    );
    assert!(cmd.contains("pip install"), "{cmd}");
    assert!(cmd.ends_with("exec \"$PY\" fit.py"), "{cmd}");
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    let e = err("kind: command\nname: x\ncommand: true\nretires: 3\n");
    assert!(e.contains("retires") && e.contains("line 4"), "{e}");
}

#[test]
fn bad_values_name_the_field_and_line() {
    let cases: &[(&str, &[&str])] = &[
        (
            "kind: command\nname: x\nsize: huge\ncommand: true\n",
            &["`size` (line 3)", "huge", "cpu-small"],
        ),
        (
            "kind: command\nname: x\ncommand: true\ndeadline: soon\n",
            &["`deadline` (line 4)", "soon"],
        ),
        (
            "kind: command\nname: x\ncommand: true\ncpus: -1\n",
            &["`cpus` (line 4)"],
        ),
        (
            "kind: command\nname: X Y\ncommand: true\n",
            &["`name` (line 2)"],
        ),
        (
            "kind: jupyter\nname: x\ncommand: true\n",
            &["`command` (line 3)", "does not go with kind jupyter"],
        ),
        (
            "kind: jupyter\nname: x\njupyter:\n  idle_timeout: never\n",
            &["`jupyter` (line 3)", "`jupyter.idle_timeout`"],
        ),
        (
            "kind: serve\nname: x\ncommand: ./serve\nserve:\n  replicas: 0\n",
            &["`serve` (line 4)", "at least one replica"],
        ),
        (
            "kind: command\nname: x\ncommand: true\nserve: {}\n",
            &["`serve` (line 4)", "belongs to kind serve"],
        ),
        (
            "kind: spark\nname: x\ncommand: true\n",
            &["`command` (line 3)", "does not go with kind spark"],
        ),
        (
            "kind: spark\nname: x\nspark:\n  app: etl.py\n",
            &["`spark` (line 3)", "`spark.app`", "not an absolute path"],
        ),
        (
            "kind: spark\nname: x\nspark:\n  app: /a.py\n  executors: 0\n",
            &["`spark.executors` 0"],
        ),
        ("kind: cobol\nname: x\n", &["unknown kind 'cobol'"]),
        (
            "kind: command\nname: x\ncommand: true\nschedule: '0 3 * *'\n",
            &["`schedule` (line 4)", "not a cron expression"],
        ),
        (
            "kind: command\nname: x\ncommand: true\nschedule: '0 3 * * *'\ntimezone: Mars/Base\n",
            &["`timezone` (line 5)", "IANA"],
        ),
        (
            "kind: command\nname: x\ncommand: true\ntimezone: UTC\n",
            &["`timezone` (line 4)", "goes with `schedule`"],
        ),
        (
            "kind: command\nname: x\ncommand: true\nschedule: '0 3 * * *'\nconcurrency: sometimes\n",
            &["`concurrency` (line 5)", "forbid, allow, replace"],
        ),
        (
            "kind: command\nname: x\ncommand: true\nafter: [x]\n",
            &["`after` (line 4)", "cannot wait for itself"],
        ),
        (
            "kind: command\nname: x\ncommand: true\nafter: [a]\nafter_any: [b]\n",
            &["`after_any` (line 5)", "not both"],
        ),
        (
            "kind: command\nname: x\ncommand: true\nafter: [Bad]\n",
            &["`after` (line 4)", "'Bad' cannot name a job"],
        ),
        (
            "kind: command\nname: x\nsize: cpu-small\ncpus: 2\ncommand: true\n",
            &["`size` (line 3)", "not both"],
        ),
        (
            "kind: command\nname: x\ncommand: true\nretries: 1000\n",
            &["`retries` (line 4)"],
        ),
        (
            "kind: command\nname: x\ncommand: true\npriority: 'Very High'\n",
            &["`priority` (line 4)"],
        ),
        (
            "kind: command\nname: x\ncommand: true\nworkdir: rel\n",
            &["`workdir` (line 4)", "absolute"],
        ),
        (
            "kind: command\nname: x\ncommand: true\nenv: {'1X': y}\n",
            &["`env` (line 4)", "1X"],
        ),
        ("kind: command\nname: x\n", &["`command` is missing"]),
        ("name: x\ncommand: true\n", &["`kind` is missing"]),
        ("kind: command\ncommand: true\n", &["`name` is missing"]),
        (
            "kind: python\nname: x\nrequirements: r.txt\nentrypoint: a.py\n",
            &["`requirements` (line 3)", "relative"],
        ),
        ("kind: python\nname: x\n", &["exactly one of `entrypoint`"]),
        (
            "kind: command\nname: x\ncommand: true\nentrypoint: a.py\n",
            &["`entrypoint` (line 4)", "kind python"],
        ),
        (
            "kind: command\nname: x\ncommand: true\nbackoff: 1m\nmax_backoff: 1s\n",
            &["`max_backoff` (line 5)"],
        ),
        ("- just\n- a list\n", &["does not parse"]),
    ];
    for (text, wanted) in cases {
        let e = err(text);
        for w in *wanted {
            assert!(e.contains(w), "for {text:?}: {e:?} lacks {w:?}");
        }
    }
}

#[test]
fn shell_quoting_keeps_arguments_whole() {
    assert_eq!(quote("a.py"), "a.py");
    assert_eq!(quote("it's here"), "'it'\\''s here'");
    assert_eq!(quote(""), "''");
}

#[test]
fn a_file_of_jobs_is_a_dag_checked_for_cycles() {
    let dag = "kind: command\nname: a\ncommand: true\n---\nkind: command\nname: b\ncommand: true\nafter: [a]\n---\nkind: command\nname: c\ncommand: true\nafter_any: [a, b]\n";
    let specs = JobSpec::parse_all(dag, &Sizes::builtin()).unwrap();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(specs[2].after, ["a", "b"]);
    assert!(specs[2].after_any && !specs[1].after_any);

    let cycle = "kind: command\nname: a\ncommand: true\nafter: [c]\n---\nkind: command\nname: b\ncommand: true\nafter: [a]\n---\nkind: command\nname: c\ncommand: true\nafter: [b]\n";
    let e = JobSpec::parse_all(cycle, &Sizes::builtin()).unwrap_err().0;
    assert!(e.contains("cycle: a -> c -> b -> a"), "{e}");

    let twice =
        "kind: command\nname: a\ncommand: true\n---\nkind: command\nname: a\ncommand: true\n";
    let e = JobSpec::parse_all(twice, &Sizes::builtin()).unwrap_err().0;
    assert!(e.contains("names job 'a' twice (line 5)"), "{e}");

    let bad = "kind: command\nname: a\ncommand: true\n---\nkind: command\nname: b\ncommand: true\nretires: 3\n";
    let e = JobSpec::parse_all(bad, &Sizes::builtin()).unwrap_err().0;
    assert!(
        e.starts_with("job 2 (from line 5):") && e.contains("retires"),
        "{e}"
    );
}

#[test]
fn a_schedule_reads_with_its_defaults_and_round_trips_as_json() {
    let s = JobSpec::parse(
        "kind: command\nname: nightly\ncommand: ./etl\nschedule: '0 3 * * *'\ntimezone: Europe/Paris\n",
        &Sizes::builtin(),
    )
    .unwrap();
    let sch = s.schedule.clone().unwrap();
    assert_eq!(sch.timezone, "Europe/Paris");
    assert_eq!(sch.concurrency, crate::spec::Concurrency::Forbid);
    assert_eq!(sch.missed, crate::spec::Missed::RunOnce);
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), s);
}

#[test]
fn a_jvm_job_runs_a_jar_or_a_main_class_with_a_heap_from_its_memory() {
    let s = parse("kind: jvm\nname: etl\nmem: 2048\nmain_class: com.example.Etl\nclasspath: [/opt/etl/lib/a.jar, /opt/etl/classes]\nargs: [--date, today]\n").unwrap();
    assert_eq!(s.kind, Kind::Jvm);
    assert!(s.task_command().ends_with(
        "exec java -XX:MaxRAMPercentage=75 -cp /opt/etl/lib/a.jar:/opt/etl/classes com.example.Etl --date today"
    ), "{}", s.task_command());
    let s = parse("kind: jvm\nname: etl\njar: /opt/etl.jar\njvm_args: [-Xmx1g, '-Dmode=fast run']\njava: /usr/lib/jvm/java-17/bin/java\n").unwrap();
    assert!(
        s.task_command().ends_with(
            "exec /usr/lib/jvm/java-17/bin/java -Xmx1g '-Dmode=fast run' -jar /opt/etl.jar"
        ),
        "{}",
        s.task_command()
    );
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), s);
    assert!(err("kind: jvm\nname: x\n").contains("exactly one of `jar`"));
    assert!(err("kind: jvm\nname: x\njar: a.jar\nmain_class: A\n").contains("exactly one of `jar`"));
    assert!(
        err("kind: jvm\nname: x\njar: a.jar\nclasspath: [b]\n").contains("`classpath` (line 4)")
    );
    assert!(err("kind: jvm\nname: x\njar: a.jar\ncommand: ls\n").contains("`command` (line 4)"));
    assert!(err("kind: command\nname: x\ncommand: ls\njar: a.jar\n")
        .contains("`jar` (line 4): belongs to kind jvm"));
}

#[test]
fn a_training_job_keeps_its_gang_sized_like_the_tf_flags_and_reads_back() {
    let s = parse(
        "kind: tensorflow\nname: train\nsize: gpu-small\nworkdir: /data/run\nretries: 2\n\
         env:\n  EPOCHS: '3'\ncommand: python3 train.py\n\
         tensorflow:\n  chief: {}\n  worker:\n    count: 2\n  ps:\n    count: 1\n    cpus: 2\n    mem: 4096\n\
         \x20 restart: on-failure:2\n  start_deadline: 10m\n",
    )
    .unwrap();
    assert_eq!(s.kind, Kind::Tensorflow);
    assert!(s.kind.is_delegated());
    let gang = s.tensorflow.clone().expect("the gang");
    let small = menu().get("gpu-small").unwrap();
    // The size goes to every replica, its GPUs to the chief and workers
    // only, as `mezz tf run --size` does.
    assert_eq!(gang.groups["worker"].count, 2);
    assert_eq!(gang.groups["worker"].gpus, small.gpus);
    assert_eq!(gang.groups["ps"].gpus, 0);
    assert_eq!(
        (gang.groups["ps"].cpus, gang.groups["ps"].mem),
        (2.0, 4096.0)
    );
    assert_eq!(gang.gpus(), 3 * small.gpus);
    // GPU-hours count the whole gang's GPUs.
    assert_eq!(crate::record::submitted(&s).attempt_gpus, 3 * small.gpus);
    // What one agent must hold: the largest replica.
    assert_eq!(s.cpus, small.cpus.max(2.0));
    assert_eq!(s.gpus, small.gpus);
    assert_eq!(gang.start_deadline_ms, Some(600_000));
    // Stored as JSON, it reads back the same, and makes the training job
    // of an attempt: named after it, run in the workdir.
    let back: JobSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    let training = gang.training_job(&s, "train.2").unwrap();
    assert_eq!(training.name, "train.2");
    assert_eq!(training.command, ["cd /data/run && python3 train.py"]);
    assert_eq!(training.env["EPOCHS"], "3");
    assert_eq!(training.replicas(), 4);
}

#[test]
fn a_pytorch_job_has_torch_ranks_and_no_parameter_server() {
    let s = parse(
        "kind: pytorch\nname: ddp\ncpus: 1\nmem: 512\ngpus: 1\ncommand: torchrun t.py\n\
         tensorflow:\n  chief: {}\n  worker:\n    count: 3\n",
    )
    .unwrap();
    let t = s
        .tensorflow
        .as_ref()
        .unwrap()
        .training_job(&s, "ddp.1")
        .unwrap();
    assert_eq!(t.flavor, mezz_tensorflow::Flavor::Pytorch);
    assert_eq!(t.replicas(), 4);
    let e = err("kind: pytorch\nname: p\ncommand: x\ntensorflow:\n  ps: {}\n");
    assert!(
        e.contains("`tensorflow` (line 4)") && e.contains("not ps"),
        "{e}"
    );
    let e = err("kind: tensorflow\nname: t\nentrypoint: t.py\n");
    assert!(
        e.contains("`entrypoint`") && e.contains("training job"),
        "{e}"
    );
    let e = err("kind: tensorflow\nname: t\n");
    assert!(e.contains("no command"), "{e}");
}

#[test]
fn a_spark_job_keeps_its_request_with_every_size_written_out() {
    let s = parse(
        "kind: spark\nname: etl\nsize: cpu-medium\nretries: 1\n\
         spark:\n  app: /apps/etl.py\n  args: [--day, today]\n  executors: 3\n  conf:\n    spark.sql.shuffle.partitions: '8'\n",
    )
    .unwrap();
    assert_eq!(s.kind, Kind::Spark);
    assert!(s.kind.is_delegated());
    let app = s.spark.clone().expect("the request");
    let medium = menu().get("cpu-medium").unwrap();
    // The size made each executor's worker; written out, so a later
    // change of the menu changes nothing.
    assert_eq!(app.executors, Some(3));
    assert_eq!(app.executor_cores, Some(medium.cpus as u32));
    assert_eq!(
        app.executor_memory,
        Some(format!("{}m", medium.mem as u64 - 768))
    );
    assert_eq!(app.driver_memory.as_deref(), Some("1024m"));
    // What one agent must hold: an executor's worker here.
    assert_eq!((s.cpus, s.mem), (medium.cpus.floor(), medium.mem));
    let back: JobSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    let e = err("kind: spark\nname: x\nspark:\n  app: /a.py\n  executer_cores: 2\n");
    assert!(e.contains("executer_cores"), "{e}");
    let e = err("kind: command\nname: x\ncommand: true\nspark:\n  app: /a.py\n");
    assert!(e.contains("`spark` (line 4): belongs to kind spark"), "{e}");
}

#[test]
fn services_take_their_frameworks_defaults_and_sections() {
    let nb = parse("kind: jupyter\nname: explore\njupyter:\n  idle_timeout: 1h\n").unwrap();
    assert!(nb.kind.is_delegated() && nb.kind.is_service());
    // As `mezz jupyter start`: 1 CPU and 1024 MB unless the file says.
    assert_eq!((nb.cpus, nb.mem, nb.gpus), (1.0, 1024.0, 0));
    assert_eq!(
        nb.jupyter.as_ref().unwrap().idle_timeout().unwrap(),
        Some(std::time::Duration::from_secs(3600))
    );
    let svc = parse("kind: serve\nname: model\ngpus: 1\ncommand: ./serve\n").unwrap();
    assert_eq!((svc.mem, svc.gpus), (512.0, 1));
    assert_eq!(svc.serve, Some(crate::service::ServeSection::default()));
    let back: JobSpec = serde_json::from_str(&serde_json::to_string(&svc).unwrap()).unwrap();
    assert_eq!(back, svc);
}
