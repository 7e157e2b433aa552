//! Sandboxes, the audit log and rate limits on a cluster with ACLs, against
//! real `mezz` processes: an agent serves a task's files only with the
//! master's grant, for a principal that may view the task's role, and
//! never beyond the sandbox (through `mezz logs`, the master's file pages
//! and direct `AgentFiles` calls); every operator action, kill, first token
//! use and denial lands in the audit log; a framework flooding launches is
//! refused while another keeps its latency.
//!
//! What the file API itself refuses (`..`, absolute paths, symbolic links
//! raced by a task) is proven in `agent/src/files.rs` and
//! `tests/containment.rs`; here the same refusals hold behind a valid grant.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use mezz_proto::v1::{
    agent_files_client::AgentFilesClient, operator_client::OperatorClient,
    scheduler_client::SchedulerClient, AcceptRequest, FrameworkInfo, GetAuditRequest,
    GrantTaskFilesRequest, ListFilesRequest, ReadFileRequest, SetQuotaRequest, SetWeightRequest,
    SubscribeRequest, TailFileRequest,
};
use tonic::Code;

const T: Duration = Duration::from_secs(30);
const RESOURCES: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31099]";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Puts `authorization` and `x-mezz-grant` on every call, as given.
#[derive(Clone)]
struct Meta {
    auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    grant: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Meta {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.auth {
            req.metadata_mut().insert("authorization", v.clone());
        }
        if let Some(v) = &self.grant {
            req.metadata_mut()
                .insert(mezz_proto::grant::GRANT_METADATA, v.clone());
        }
        Ok(req)
    }
}

type Authed = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Meta>;

/// A channel whose calls carry `authorization` and `x-mezz-grant` as given.
async fn channel(addr: &str, authorization: Option<&str>, grant: Option<&str>) -> Authed {
    let ch = mezz_proto::client::connect(addr).await.expect("connect");
    let meta = Meta {
        auth: authorization.map(|a| a.parse().expect("ascii")),
        grant: grant.map(|g| g.parse().expect("ascii")),
    };
    tonic::service::interceptor::InterceptedService::new(ch, meta)
}

fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("{name}.token"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("token file");
    writeln!(f, "{token}").expect("write token");
    path
}

const ACLS: &str = r#"{
  "register_frameworks": [
    {"principals": ["alice"], "roles": ["eng"]},
    {"principals": ["bob"], "roles": ["ops"]},
    {"principals": ["admin"], "roles": "ANY"}
  ],
  "run_tasks": [{"principals": ["alice", "bob", "admin"], "users": "ANY"}],
  "register_agents": [{"principals": ["agent"]}],
  "set_quotas": [{"principals": ["admin"], "roles": "ANY"}],
  "set_weights": [{"principals": ["admin"], "roles": "ANY"}],
  "kill_tasks": [{"principals": ["admin"], "roles": "ANY"}],
  "teardown_frameworks": [{"principals": ["admin"], "roles": "ANY"}],
  "view": [
    {"principals": ["alice"], "roles": ["eng"]},
    {"principals": ["bob"], "roles": ["ops"]},
    {"principals": ["admin"], "roles": "ANY"}
  ],
  "create_tokens": [{"principals": ["admin"]}],
  "manage_acls": [{"principals": ["admin"]}],
  "read_audit": [{"principals": ["admin"]}]
}"#;

/// A master with the ACLs above and an audit log, one agent, tokens for
/// admin, alice, bob and the agent.
struct Shared {
    dir: tempfile::TempDir,
    addr: String,
    agent_addr: String,
    tokens: std::collections::BTreeMap<&'static str, (String, PathBuf)>,
    audit_file: PathBuf,
    _procs: Vec<Proc>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        kill_tasks_under(self.dir.path());
    }
}

impl Shared {
    fn start(extra: &[&str]) -> Shared {
        let dir = cluster_dir();
        let addr = format!("127.0.0.1:{}", free_port());
        let admin_file = dir.path().join("admin.token");
        let acl_file = dir.path().join("acls.json");
        std::fs::write(&acl_file, ACLS).expect("ACLs");
        let audit_file = dir.path().join("audit").join("master.audit");
        let mut flags: Vec<String> = vec![
            "--acls".into(),
            acl_file.display().to_string(),
            "--audit-log".into(),
            audit_file.display().to_string(),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        let (master, admin) = start_master_with_admin(dir.path(), &addr, &flags);
        let mut s = Shared {
            addr,
            agent_addr: String::new(),
            tokens: Default::default(),
            audit_file,
            _procs: vec![master],
            dir,
        };
        s.tokens.insert("admin", (admin, admin_file));
        for who in ["alice", "bob", "agent"] {
            let out = s.mezz_as("admin", &["token", "create", who]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            let token = text(&out.stdout).trim().to_string();
            let file = token_file(s.dir.path(), who, &token);
            s.tokens.insert(who, (token, file));
        }
        s
    }

    fn start_agent(&mut self) {
        let port = free_port();
        self.agent_addr = format!("127.0.0.1:{port}");
        let args: Vec<String> = [
            "agent",
            "--master",
            &self.addr,
            "--listen",
            &self.agent_addr,
            "--work-dir",
            &self.work_dir().display().to_string(),
            "--resources",
            RESOURCES,
            "--gpus",
            "none",
            "--credentials",
            &self.tokens["agent"].1.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self._procs
            .push(spawn_logged(self.dir.path(), "agent", &args));
        wait_for("the agent to connect", T, || {
            self.state()["agents"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["status"] == "connected"))
        });
    }

    fn work_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn token(&self, who: &str) -> &str {
        &self.tokens[who].0
    }

    /// `mezz ARGS` as `who`, flags after the subcommands.
    fn mezz_as(&self, who: &str, args: &[&str]) -> std::process::Output {
        let cred = self.tokens[who].1.display().to_string();
        let at = args
            .iter()
            .position(|a| a.starts_with('-'))
            .unwrap_or(args.len());
        let mut full: Vec<&str> = args[..at].to_vec();
        full.extend(["--master", self.addr.as_str(), "--credentials", &cred]);
        full.extend_from_slice(&args[at..]);
        mezz(&full, T)
    }

    fn state(&self) -> serde_json::Value {
        let (code, _, body) =
            http_get_full(&self.addr, "/api/state", Some(&bearer(self.token("admin"))));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Runs `script` as `who` in `role`; (framework id, task id) once it runs.
    fn run(&self, who: &str, role: &str, script: &str) -> (String, String) {
        let out = self.mezz_as(
            who,
            &[
                "run", "--detach", "--role", role, "--cpus", "0.1", "--mem", "32", "--", "sh",
                "-c", script,
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{who}: {}", text(&out.stderr));
        let id = text(&out.stdout).trim().to_string();
        let mut fw = String::new();
        wait_for(&format!("{who}'s task to run"), T, || {
            let s = self.state();
            let t = s["tasks"]
                .as_array()
                .and_then(|a| a.iter().find(|t| t["id"] == id.as_str()).cloned());
            match t {
                Some(t) if t["state"] == "RUNNING" => {
                    fw = t["framework_id"].as_str().unwrap_or_default().to_string();
                    true
                }
                _ => false,
            }
        });
        (fw, id)
    }

    fn sandbox(&self, fw: &str, id: &str) -> PathBuf {
        self.work_dir().join("sandboxes").join(fw).join(id)
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
            .collect()
    }
}

/// A direct `ReadFile` to the agent with `grant`.
async fn read_direct(
    agent: &str,
    grant: Option<&str>,
    fw: &str,
    id: &str,
    path: &str,
) -> Result<Vec<u8>, tonic::Status> {
    AgentFilesClient::new(channel(agent, None, grant).await)
        .read_file(ReadFileRequest {
            framework_id: fw.into(),
            task_id: id.into(),
            path: path.into(),
            offset: 0,
            length: 0,
        })
        .await
        .map(|r| r.into_inner().data)
}

async fn grant_for(master: &str, token: &str, fw: &str, id: &str) -> Result<String, tonic::Status> {
    OperatorClient::new(channel(master, Some(&bearer(token)), None).await)
        .grant_task_files(GrantTaskFilesRequest {
            framework_id: fw.into(),
            task_id: id.into(),
        })
        .await
        .map(|r| r.into_inner().grant)
}

#[test]
fn a_sandbox_opens_only_to_a_viewer_with_the_masters_grant_and_only_inside() {
    let mut c = Shared::start(&[]);
    c.start_agent();
    let (bob_fw, bob_id) = c.run("bob", "ops", "echo bob-private-output; exec sleep 300");
    let bob_sandbox = c.sandbox(&bob_fw, &bob_id);
    wait_for("bob's sandbox", T, || bob_sandbox.join("stdout").exists());
    // Alice's task plants links at a host secret and at bob's sandbox.
    let script = format!(
        "ln -s /etc/shadow shadow; ln -s {b} bobs; ln -s {b}/stdout bobout; \
         echo alice-output; exec sleep 300",
        b = bob_sandbox.display()
    );
    let (alice_fw, alice_id) = c.run("alice", "eng", &script);
    wait_for("alice's links", T, || {
        c.sandbox(&alice_fw, &alice_id)
            .join("bobout")
            .symlink_metadata()
            .is_ok()
    });
    let rt = runtime();
    let (alice, bob, admin) = (c.token("alice"), c.token("bob"), c.token("admin"));

    // mezz logs: each reads its own; alice cannot read bob's.
    let out = c.mezz_as("alice", &["logs", &alice_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("alice-output"));
    let out = c.mezz_as("admin", &["logs", &bob_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("bob-private-output"));
    let out = c.mezz_as("admin", &["logs", &alice_id, "--list"]);
    assert!(
        text(&out.stdout).contains("bobout"),
        "{}",
        text(&out.stdout)
    );
    let out = c.mezz_as("alice", &["logs", &bob_id]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!text(&out.stdout).contains("bob-private-output"));

    // The grant RPC: PERMISSION_DENIED naming principal, action, object.
    let e = rt
        .block_on(grant_for(&c.addr, alice, &bob_fw, &bob_id))
        .expect_err("alice may not view ops");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    for want in ["'alice'", "view", "role 'ops'"] {
        assert!(e.message().contains(want), "{}", e.message());
    }
    let alice_grant = rt
        .block_on(grant_for(&c.addr, alice, &alice_fw, &alice_id))
        .expect("alice's own task");
    let bob_grant = rt
        .block_on(grant_for(&c.addr, bob, &bob_fw, &bob_id))
        .expect("bob's own task");
    assert!(alice_grant.starts_with("v1.") && bob_grant.starts_with("v1."));

    // Direct to the agent: without a grant, forged, for another task,
    // malformed, or with its expiry moved: refused.
    let key = mezz_proto::grant::new_key().expect("randomness");
    let forged = mezz_proto::grant::sign(&key, &bob_fw, &bob_id, "any-agent", u64::MAX / 2);
    let (_, expiry_and_tag) = bob_grant.split_at(3);
    let (expiry, tag) = expiry_and_tag.split_once('.').expect("v1.E.T");
    let later = expiry.parse::<u64>().expect("expiry") + 3600;
    let stretched = format!("v1.{later}.{tag}");
    let earlier = format!("v1.{}.{tag}", expiry.parse::<u64>().expect("expiry") - 3600);
    for (what, grant) in [
        ("no grant", None),
        ("forged", Some(forged.as_str())),
        ("another task's", Some(alice_grant.as_str())),
        ("malformed", Some("v1.1.zz")),
        ("stretched", Some(stretched.as_str())),
        ("backdated", Some(earlier.as_str())),
    ] {
        let e = rt
            .block_on(read_direct(
                &c.agent_addr,
                grant,
                &bob_fw,
                &bob_id,
                "stdout",
            ))
            .expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(e.message().contains("grant"), "{what}: {}", e.message());
    }
    // List and tail too.
    let e = rt
        .block_on(async {
            AgentFilesClient::new(channel(&c.agent_addr, None, Some(&alice_grant)).await)
                .list_files(ListFilesRequest {
                    framework_id: bob_fw.clone(),
                    task_id: bob_id.clone(),
                    path: String::new(),
                })
                .await
        })
        .expect_err("list with another task's grant");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = rt
        .block_on(async {
            AgentFilesClient::new(channel(&c.agent_addr, None, None).await)
                .tail_file(TailFileRequest {
                    framework_id: bob_fw.clone(),
                    task_id: bob_id.clone(),
                    path: "stdout".into(),
                    length: 0,
                })
                .await
        })
        .expect_err("tail without a grant");
    assert_eq!(e.code(), Code::PermissionDenied);
    // The real grant reads.
    let data = rt
        .block_on(read_direct(
            &c.agent_addr,
            Some(&bob_grant),
            &bob_fw,
            &bob_id,
            "stdout",
        ))
        .expect("bob's grant reads bob's output");
    assert!(String::from_utf8_lossy(&data).contains("bob-private-output"));

    // Behind a valid grant, nothing outside the sandbox.
    let sibling = format!("../{bob_id}/stdout");
    for (path, code) in [
        ("shadow", Code::PermissionDenied),
        ("bobout", Code::PermissionDenied),
        ("bobs/stdout", Code::PermissionDenied),
        ("../../../../etc/shadow", Code::InvalidArgument),
        ("/etc/shadow", Code::InvalidArgument),
        (sibling.as_str(), Code::InvalidArgument),
    ] {
        let e = rt
            .block_on(read_direct(
                &c.agent_addr,
                Some(&alice_grant),
                &alice_fw,
                &alice_id,
                path,
            ))
            .expect_err(path);
        assert_eq!(e.code(), code, "{path}: {e:?}");
    }

    // The master's pages: alice is refused bob's task and output.
    for path in [
        format!("/api/tasks/{bob_fw}/{bob_id}/files/stdout"),
        format!("/tasks/{bob_fw}/{bob_id}"),
    ] {
        let (code, _, body) = http_get_full(&c.addr, &path, Some(&bearer(alice)));
        assert_eq!(code, 403, "{path}: {body}");
        assert!(
            body.contains("'alice'") && body.contains("role 'ops'"),
            "{body}"
        );
        assert!(!body.contains("bob-private-output"));
    }
    let (code, _, body) = http_get_full(
        &c.addr,
        &format!("/api/tasks/{alice_fw}/{alice_id}/files/stdout"),
        Some(&bearer(alice)),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("alice-output"),
        "the page's own grant reads: {body}"
    );
    let (code, _, body) = http_get_full(
        &c.addr,
        &format!("/tasks/{alice_fw}/{alice_id}"),
        Some(&bearer(alice)),
    );
    assert_eq!(code, 200);
    assert!(
        body.contains("alice-output"),
        "the task page shows the tail"
    );

    // Traversal through the pages, even for admin: never a host file.
    for path in [
        format!("/api/tasks/{alice_fw}/{alice_id}/files/shadow"),
        format!("/api/tasks/{alice_fw}/{alice_id}/files/bobout"),
        format!("/api/tasks/{alice_fw}/{alice_id}/files/..%2f..%2f..%2fetc%2fshadow"),
        format!("/api/tasks/{alice_fw}/{alice_id}/files/%2e%2e%2f{bob_id}%2fstdout"),
        format!("/api/tasks/{alice_fw}/{alice_id}/files/%2fetc%2fshadow"),
        format!("/api/tasks/{alice_fw}/%2e%2e/files/stdout"),
        "/api/tasks/%2e%2e/%2e%2e/files/stdout".to_string(),
        format!("/api/tasks/{alice_fw}/{alice_id}/files/%2e%2e/%2e%2e/%2e%2e/etc/shadow"),
        format!("/tasks/{alice_fw}/%2e%2e%2f{bob_id}"),
    ] {
        let (code, _, body) = http_get_full(&c.addr, &path, Some(&bearer(admin)));
        assert!(matches!(code, 400 | 404), "{path}: {code} {body}");
        assert!(!body.contains("root:"), "{path}: a host file: {body}");
        assert!(!body.contains("bob-private-output"), "{path}: {body}");
    }
}

#[test]
fn the_audit_log_has_operator_actions_kills_first_uses_and_denials_but_no_secret() {
    let mut c = Shared::start(&[]);
    c.start_agent();
    let (fw, id) = c.run("alice", "eng", "exec sleep 300");
    let rt = runtime();
    let (admin, alice) = (c.token("admin").to_string(), c.token("alice").to_string());
    rt.block_on(async {
        let mut op = OperatorClient::new(channel(&c.addr, Some(&bearer(&admin)), None).await);
        op.set_quota(SetQuotaRequest {
            role: "eng".into(),
            ..Default::default()
        })
        .await
        .expect("quota");
        op.set_weight(SetWeightRequest {
            role: "eng".into(),
            weight: 2.0,
        })
        .await
        .expect("weight");
        // Alice is denied a weight.
        let e = OperatorClient::new(channel(&c.addr, Some(&bearer(&alice)), None).await)
            .set_weight(SetWeightRequest {
                role: "ops".into(),
                weight: 3.0,
            })
            .await
            .expect_err("alice may not set weights");
        assert_eq!(e.code(), Code::PermissionDenied);
    });
    let out = c.mezz_as("admin", &["token", "create", "carol"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let carol = text(&out.stdout).trim().to_string();
    let out = c.mezz_as("admin", &["token", "revoke", "carol"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let acl_file = c.dir.path().join("acls.json");
    let out = c.mezz_as("admin", &["acl", "set", &acl_file.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = c.mezz_as("admin", &["kill", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The audit page: alice is refused (and that refusal is audited too).
    let (code, _, body) = http_get_full(&c.addr, "/api/audit", Some(&bearer(&alice)));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read_audit"), "{body}");
    let e = rt
        .block_on(async {
            OperatorClient::new(channel(&c.addr, Some(&bearer(&alice)), None).await)
                .get_audit(GetAuditRequest { limit: 0 })
                .await
        })
        .expect_err("alice may not read the audit log");
    assert_eq!(e.code(), Code::PermissionDenied);

    let want = [
        ("set_quota", "admin"),
        ("set_weight", "admin"),
        ("denied", "alice"),
        ("create_token", "admin"),
        ("revoke_token", "admin"),
        ("set_acls", "admin"),
        ("kill", "admin"),
        ("token_first_use", "alice"),
        ("token_first_use", "admin"),
    ];
    wait_for("every entry in the audit file", T, || {
        let entries = c.audit();
        want.iter().all(|(event, who)| {
            entries
                .iter()
                .any(|e| e["event"] == *event && e["principal"] == *who)
        })
    });
    let entries = c.audit();
    let kill = entries
        .iter()
        .find(|e| e["event"] == "kill")
        .expect("the kill");
    assert_eq!(kill["task_id"], id.as_str());
    assert_eq!(kill["framework_id"], fw.as_str());
    let denied = entries
        .iter()
        .find(|e| {
            e["event"] == "denied" && e["principal"] == "alice" && e["action"] == "set_weights"
        })
        .expect("alice's denial");
    assert_eq!(denied["object"], "role 'ops'");
    assert!(entries
        .iter()
        .any(|e| e["event"] == "denied" && e["action"] == "read_audit"));
    // A first use is once per token and address, not per call.
    let firsts = entries
        .iter()
        .filter(|e| e["event"] == "token_first_use" && e["principal"] == "alice")
        .count();
    assert_eq!(firsts, 1, "{entries:?}");
    assert!(entries
        .iter()
        .all(|e| e["time"].as_f64().is_some_and(|t| t > 1.0e9)));

    // Admin reads the same entries over HTTP and gRPC.
    let (code, _, body) = http_get_full(&c.addr, "/api/audit?limit=500", Some(&bearer(&admin)));
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let events: Vec<&str> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    for (event, _) in want {
        assert!(events.contains(&event), "{event} in {events:?}");
    }
    let lines = rt
        .block_on(async {
            OperatorClient::new(channel(&c.addr, Some(&bearer(&admin)), None).await)
                .get_audit(GetAuditRequest { limit: 3 })
                .await
        })
        .expect("admin reads the audit log")
        .into_inner()
        .lines;
    assert_eq!(lines.len(), 3);

    // Never a secret: token ids only.
    let file = std::fs::read_to_string(&c.audit_file).expect("audit file");
    for t in [&admin, &alice, &carol] {
        let secret = t.rsplit('_').next().expect("a token");
        assert!(!file.contains(secret), "a secret in the audit log");
        assert!(!body.contains(secret), "a secret in /api/audit");
    }
    let carol_id = carol.split('_').nth(1).expect("id");
    assert!(file.contains(carol_id), "tokens are named by id");
}

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
