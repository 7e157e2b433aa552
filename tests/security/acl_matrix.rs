//! The ACL matrix: (principal, action, object) cases with the expected
//! allow or deny, over gRPC and HTTP, and no secret in any log.

use super::super::*;

/// The ACLs of the matrix.
const ACLS: &str = r#"{
  "register_frameworks": [
    {"principals": ["alice"], "roles": ["eng"]},
    {"principals": ["bob"], "roles": ["ops/*"]},
    {"principals": ["admin"], "roles": "ANY"}
  ],
  "run_tasks": [{"principals": ["alice", "bob", "admin"], "users": "ANY"}],
  "register_agents": [{"principals": ["agent"]}],
  "set_quotas": [{"principals": ["admin"], "roles": "ANY"}],
  "set_weights": [
    {"principals": ["admin"], "roles": "ANY"},
    {"principals": ["bob"], "roles": ["ops"]}
  ],
  "kill_tasks": [
    {"principals": ["admin"], "roles": "ANY"},
    {"principals": ["alice"], "roles": ["eng"]}
  ],
  "view": [
    {"principals": ["alice"], "roles": ["eng"]},
    {"principals": ["bob"], "roles": ["ops/*"]},
    {"principals": ["admin"], "roles": "ANY"}
  ],
  "create_tokens": [{"principals": ["admin"]}],
  "manage_acls": [{"principals": ["admin"]}]
}"#;

const WHO: [&str; 5] = ["admin", "alice", "bob", "carol", "agent"];

/// Whether a gRPC answer is an allow (anything but PERMISSION_DENIED) or a
/// deny whose message names who, what and on what.
fn allowed<T>(r: &Result<T, tonic::Status>, who: &str, action: &str) -> bool {
    match r {
        Err(s) if s.code() == Code::PermissionDenied => {
            assert!(
                s.message().contains(&format!("'{who}'")) && s.message().contains(action),
                "{who} {action}: {}",
                s.message()
            );
            false
        }
        Err(s) => {
            assert_ne!(s.code(), Code::Unauthenticated, "{who} {action}: {s:?}");
            true
        }
        Ok(_) => true,
    }
}

#[test]
fn the_acl_matrix_over_grpc_and_http_and_no_secret_in_any_log() {
    let acl_dir = tempfile::tempdir().expect("tempdir");
    let acl_file = acl_dir.path().join("acls.json");
    std::fs::write(&acl_file, ACLS).expect("write ACLs");
    let m = Master::start(&["--acls", &acl_file.display().to_string()]);
    let mut tokens = std::collections::BTreeMap::new();
    let mut files = std::collections::BTreeMap::new();
    tokens.insert("admin", m.admin.clone());
    files.insert("admin", m.admin_file.clone());
    for who in &WHO[1..] {
        let (t, f) = m.token(who, &[]);
        tokens.insert(*who, t);
        files.insert(*who, f);
    }

    // An agent with its own token; tasks of alice (role eng) and bob (ops).
    let agent_port = free_port();
    let agent_args: Vec<String> = [
        "agent",
        "--master",
        &m.addr,
        "--listen",
        &format!("127.0.0.1:{agent_port}"),
        "--work-dir",
        &m.dir.path().join("agent").display().to_string(),
        "--resources",
        RESOURCES,
        "--gpus",
        "none",
        "--credentials",
        &files["agent"].display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _agent = spawn_logged(m.dir.path(), "agent", &agent_args);
    let admin_state = || -> serde_json::Value {
        let (code, body) = http_get_as(&m.addr, "/api/state", Some(&bearer(&m.admin)));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    };
    wait_for("the agent to connect with its token", T, || {
        admin_state()["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["status"] == "connected"))
    });
    let mut task = std::collections::BTreeMap::new();
    // Each task gets a secret in its environment, which must show nowhere.
    let mut secrets = Vec::new();
    for (who, role) in [("alice", "eng"), ("bob", "ops")] {
        let value = mezz_proto::auth::Token::generate()
            .expect("randomness")
            .secret()
            .to_string();
        let secret_env = format!("SECRET_K={value}");
        secrets.push(value);
        let out = m.mezz_as(
            &files[who],
            &[
                "run",
                "--detach",
                "--role",
                role,
                "--cpus",
                "0.1",
                "--mem",
                "32",
                "--secret-env",
                &secret_env,
                "--",
                "sh",
                "-c",
                "echo secret-length=${#SECRET_K}; exec sleep 300",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{who}: {}", text(&out.stderr));
        let id = text(&out.stdout).trim().to_string();
        wait_for(&format!("{who}'s task to run"), T, || {
            admin_state()["tasks"]
                .as_array()
                .is_some_and(|a| a.iter().any(|t| t["id"] == id && t["state"] == "RUNNING"))
        });
        let fw = admin_state()["tasks"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["id"] == id).cloned())
            .expect("the task")["framework_id"]
            .as_str()
            .expect("framework id")
            .to_string();
        task.insert(role, (fw, id));
    }

    let rt = runtime();
    let mut cases = 0usize;
    let mut wrong = Vec::new();
    let mut check = |who: &str, action: &str, object: &str, want: bool, got: bool| {
        cases += 1;
        if want != got {
            wrong.push(format!("{who} {action} {object}: want {want}, got {got}"));
        }
    };

    // gRPC: (principal, action, object) → allowed?
    let grpc: Vec<(&str, &str, &str, bool)> = vec![
        // register_frameworks
        ("admin", "register_frameworks", "eng", true),
        ("admin", "register_frameworks", "ops", true),
        ("admin", "register_frameworks", "ops/batch", true),
        ("alice", "register_frameworks", "eng", true),
        ("alice", "register_frameworks", "ops", false),
        ("alice", "register_frameworks", "ops/batch", false),
        ("bob", "register_frameworks", "eng", false),
        ("bob", "register_frameworks", "ops", true),
        ("bob", "register_frameworks", "ops/batch", true),
        ("carol", "register_frameworks", "eng", false),
        ("carol", "register_frameworks", "ops", false),
        ("carol", "register_frameworks", "ops/batch", false),
        ("agent", "register_frameworks", "eng", false),
        ("agent", "register_frameworks", "ops", false),
        ("agent", "register_frameworks", "ops/batch", false),
        // set_quotas
        ("admin", "set_quotas", "eng", true),
        ("alice", "set_quotas", "eng", false),
        ("bob", "set_quotas", "eng", false),
        ("carol", "set_quotas", "eng", false),
        ("agent", "set_quotas", "eng", false),
        // set_weights
        ("admin", "set_weights", "ops", true),
        ("admin", "set_weights", "eng", true),
        ("alice", "set_weights", "ops", false),
        ("alice", "set_weights", "eng", false),
        ("bob", "set_weights", "ops", true),
        ("bob", "set_weights", "eng", false),
        ("carol", "set_weights", "ops", false),
        ("carol", "set_weights", "eng", false),
        ("agent", "set_weights", "ops", false),
        ("agent", "set_weights", "eng", false),
        // create_tokens (listing them is the same right)
        ("admin", "create_tokens", "-", true),
        ("alice", "create_tokens", "-", false),
        ("bob", "create_tokens", "-", false),
        ("carol", "create_tokens", "-", false),
        ("agent", "create_tokens", "-", false),
        // manage_acls
        ("admin", "manage_acls", "-", true),
        ("alice", "manage_acls", "-", false),
        ("bob", "manage_acls", "-", false),
        ("carol", "manage_acls", "-", false),
        ("agent", "manage_acls", "-", false),
        // register_agents
        ("admin", "register_agents", "-", false),
        ("alice", "register_agents", "-", false),
        ("bob", "register_agents", "-", false),
        ("carol", "register_agents", "-", false),
        ("agent", "register_agents", "-", true),
        // view, through GetState: does the role's task show?
        ("admin", "view", "eng", true),
        ("admin", "view", "ops", true),
        ("alice", "view", "eng", true),
        ("alice", "view", "ops", false),
        ("bob", "view", "eng", false),
        ("bob", "view", "ops", true),
        ("carol", "view", "eng", false),
        ("carol", "view", "ops", false),
        ("agent", "view", "eng", false),
        ("agent", "view", "ops", false),
    ];
    for (who, action, object, want) in &grpc {
        let auth = bearer(&tokens[who]);
        let got = rt.block_on(async {
            let ch = channel(&m.addr, Some(&auth)).await;
            match *action {
                "register_frameworks" => {
                    let r = SchedulerClient::new(ch)
                        .subscribe(SubscribeRequest {
                            protocol_version: mezz_proto::PROTOCOL_VERSION,
                            framework: Some(FrameworkInfo {
                                name: format!("matrix-{who}"),
                                role: object.to_string(),
                                ..Default::default()
                            }),
                        })
                        .await;
                    allowed(&r, who, action)
                }
                "set_quotas" => allowed(
                    &OperatorClient::new(ch)
                        .set_quota(SetQuotaRequest {
                            role: object.to_string(),
                            ..Default::default()
                        })
                        .await,
                    who,
                    action,
                ),
                "set_weights" => allowed(
                    &OperatorClient::new(ch)
                        .set_weight(SetWeightRequest {
                            role: object.to_string(),
                            weight: 1.0,
                        })
                        .await,
                    who,
                    action,
                ),
                "create_tokens" => allowed(
                    &OperatorClient::new(ch)
                        .list_tokens(ListTokensRequest {})
                        .await,
                    who,
                    action,
                ),
                "manage_acls" => allowed(
                    &OperatorClient::new(ch).get_acls(GetAclsRequest {}).await,
                    who,
                    action,
                ),
                "register_agents" => {
                    // A malformed secret: past the ACL, the master refuses
                    // the registration itself, so no agent is added.
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    tx.send(AgentMessage {
                        message: Some(agent_message::Message::Register(RegisterAgent {
                            protocol_version: mezz_proto::PROTOCOL_VERSION,
                            agent: Some(AgentInfo {
                                id: format!("matrix-{who}"),
                                hostname: "matrix".into(),
                                ..Default::default()
                            }),
                            secret: "not-a-secret".into(),
                            ..Default::default()
                        })),
                    })
                    .await
                    .expect("queue");
                    let r = AgentGatewayClient::new(ch)
                        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await;
                    allowed(&r, who, action)
                }
                "view" => {
                    let s = OperatorClient::new(ch)
                        .get_state(GetStateRequest { completed: false })
                        .await
                        .expect("GetState")
                        .into_inner();
                    let (_, id) = &task[object];
                    s.tasks.iter().any(|t| &t.id == id)
                }
                other => panic!("no such action {other}"),
            }
        });
        check(who, action, object, *want, got);
    }

    // HTTP: the task's output, its page and /api/state, per principal.
    let http: Vec<(&str, &str, bool)> = vec![
        ("admin", "eng", true),
        ("admin", "ops", true),
        ("alice", "eng", true),
        ("alice", "ops", false),
        ("bob", "eng", false),
        ("bob", "ops", true),
        ("carol", "eng", false),
        ("carol", "ops", false),
        ("agent", "eng", false),
        ("agent", "ops", false),
    ];
    for (who, role, want) in &http {
        let auth = bearer(&tokens[who]);
        let (fw, id) = &task[role];
        for path in [
            format!("/api/tasks/{fw}/{id}/files/stdout"),
            format!("/tasks/{fw}/{id}"),
        ] {
            let (code, body) = http_get_as(&m.addr, &path, Some(&auth));
            assert!(code == 200 || code == 403, "{who} {path}: {code} {body}");
            if code == 403 {
                assert!(
                    body.contains(&format!("'{who}'"))
                        && body.contains("view")
                        && body.contains(&format!("role '{role}'")),
                    "{body}"
                );
            }
            check(who, "view (http)", &path, *want, code == 200);
        }
        let (code, body) = http_get_as(&m.addr, "/api/state", Some(&auth));
        assert_eq!(code, 200);
        check(
            who,
            "view (/api/state)",
            role,
            *want,
            body.contains(id.as_str()),
        );
        let (code, body) = http_get_as(&m.addr, "/tasks", Some(&auth));
        assert_eq!(code, 200);
        check(
            who,
            "view (/tasks)",
            role,
            *want,
            body.contains(id.as_str()),
        );
    }

    // The task got its secret (its length is 64 hex digits).
    let (fw, id) = &task["eng"];
    wait_for("alice's task to print", T, || {
        http_get_as(
            &m.addr,
            &format!("/api/tasks/{fw}/{id}/files/stdout"),
            Some(&bearer(&tokens["alice"])),
        )
        .1
        .contains("secret-length=64")
    });

    // A framework is its registering principal's alone, ACLs or not.
    let (alice_fw, _) = task["eng"].clone();
    for who in ["alice", "bob", "admin"] {
        let auth = bearer(&tokens[who]);
        let (revive, resubscribe) = rt.block_on(async {
            let mut c = SchedulerClient::new(channel(&m.addr, Some(&auth)).await);
            let revive = c
                .revive(mezz_proto::v1::ReviveRequest {
                    framework_id: alice_fw.clone(),
                })
                .await;
            if who == "alice" {
                // Taking her own framework over would end the detached
                // run's registration, and its task with it.
                return (revive, Err(tonic::Status::cancelled("not tried")));
            }
            let resubscribe = c
                .subscribe(SubscribeRequest {
                    protocol_version: mezz_proto::PROTOCOL_VERSION,
                    framework: Some(FrameworkInfo {
                        id: alice_fw.clone(),
                        name: "taken".into(),
                        role: "eng".into(),
                        ..Default::default()
                    }),
                })
                .await
                .map(|_| ());
            (revive, resubscribe)
        });
        for (what, r) in [
            ("revive", revive.map(|_| ())),
            ("subscribe as", resubscribe),
        ] {
            if r.as_ref().is_err_and(|s| s.code() == Code::Cancelled) {
                continue;
            }
            // (alice's own re-subscription may be refused by the
            // framework's rules, never for want of permission)
            let permitted = r
                .as_ref()
                .err()
                .is_none_or(|s| s.code() != Code::PermissionDenied);
            if let Err(e) = &r {
                if !permitted {
                    assert!(
                        e.message().contains(&format!("'{who}'"))
                            && e.message().contains("'alice'"),
                        "{}",
                        e.message()
                    );
                }
            }
            check(who, what, "alice's framework", who == "alice", permitted);
        }
    }

    // kill_tasks: bob may not kill alice's task; alice may.
    let (_, eng_task) = &task["eng"];
    for (who, want) in [("bob", false), ("carol", false), ("alice", true)] {
        let auth = bearer(&tokens[who]);
        let r = rt.block_on(async {
            OperatorClient::new(channel(&m.addr, Some(&auth)).await)
                .kill_task(OperatorKillRequest {
                    task_id: eng_task.clone(),
                    framework_id: String::new(),
                })
                .await
        });
        check(
            who,
            "kill_tasks",
            "eng",
            want,
            allowed(&r, who, "kill_tasks"),
        );
    }
    assert!(cases >= 50, "{cases} cases");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // No token secret anywhere: every log file of the run, the state, the
    // page, and whatever the CLI printed except `token create`'s answer.
    let mut logs = Vec::new();
    let mut stack = vec![m.dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log")
                || p.file_name()
                    .is_some_and(|n| n == "stdout" || n == "stderr")
            {
                logs.push(p);
            }
        }
    }
    assert!(
        logs.len() >= 2,
        "the master's and the agent's logs: {logs:?}"
    );
    let (_, state) = http_get_as(&m.addr, "/api/state", Some(&bearer(&m.admin)));
    let (_, page) = http_get_as(&m.addr, "/", Some(&bearer(&m.admin)));
    let ps = m.mezz_as(&m.admin_file, &["ps", "--all", "--json"]);
    assert_eq!(ps.status.code(), Some(0), "{}", text(&ps.stderr));
    let (_, tasks_page) = http_get_as(&m.addr, "/tasks", Some(&bearer(&m.admin)));
    let printed = m.outputs.borrow().clone();
    for value in &secrets {
        for log in &logs {
            let body = std::fs::read_to_string(log).unwrap_or_default();
            assert!(
                !body.contains(value.as_str()),
                "a secret env value in {}",
                log.display()
            );
        }
        for (what, body) in [
            ("/api/state", &state),
            ("the status page", &page),
            ("the task list", &tasks_page),
        ] {
            assert!(
                !body.contains(value.as_str()),
                "a secret env value in {what}"
            );
        }
        // The command line of `mezz run` itself held it; nothing printed it.
        assert!(
            !printed.contains(value.as_str()),
            "a secret env value printed"
        );
    }
    for (who, t) in &tokens {
        let s = secret(t);
        for log in &logs {
            let body = std::fs::read_to_string(log).unwrap_or_default();
            assert!(
                !body.contains(s),
                "{who}'s token secret in {}",
                log.display()
            );
        }
        assert!(
            !state.contains(s) && !page.contains(s),
            "{who}'s secret shown"
        );
        // Created tokens were printed once, on stdout of `token create`.
        assert!(
            printed.matches(s).count() <= 1,
            "{who}'s secret printed more than once"
        );
    }
}
