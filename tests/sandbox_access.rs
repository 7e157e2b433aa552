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

mod sandbox_access {
    mod audit;
    mod flood;
    mod grants;
}
