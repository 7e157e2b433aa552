//! Authentication and ACLs against real `mezz` processes: every kind of bad
//! token refused with its reason over gRPC and HTTP; an ACL matrix of
//! (principal, action, object) cases with the expected allow or deny,
//! checked over gRPC and over HTTP; and no token secret in any log line of
//! the whole run.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use mezz_proto::v1::{
    agent_gateway_client::AgentGatewayClient, agent_message, operator_client::OperatorClient,
    scheduler_client::SchedulerClient, AgentInfo, AgentMessage, ClusterState, FrameworkInfo,
    GetAclsRequest, GetStateRequest, ListTokensRequest, OperatorKillRequest, RegisterAgent,
    SetQuotaRequest, SetWeightRequest, SubscribeRequest,
};
use tonic::Code;

const T: Duration = Duration::from_secs(30);
const RESOURCES: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31099]";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A channel whose calls carry `authorization` exactly as given (or none).
async fn channel(
    addr: &str,
    authorization: Option<&str>,
) -> tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    impl tonic::service::Interceptor + Clone,
> {
    let ch = mezz_proto::client::connect(addr).await.expect("connect");
    let value: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        authorization.map(|a| a.parse().expect("ascii"));
    tonic::service::interceptor::InterceptedService::new(ch, move |mut req: tonic::Request<()>| {
        if let Some(v) = &value {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    })
}

async fn grpc_state(
    addr: &str,
    authorization: Option<&str>,
) -> Result<ClusterState, tonic::Status> {
    OperatorClient::new(channel(addr, authorization).await)
        .get_state(GetStateRequest { completed: false })
        .await
        .map(|r| r.into_inner())
}

/// Writes a token to a private file, as a principal would keep it.
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

/// A master with `flags`, its admin token (from --bootstrap-token-file,
/// made by the master) once that token works.
struct Master {
    dir: tempfile::TempDir,
    addr: String,
    _proc: Proc,
    admin: String,
    admin_file: PathBuf,
    /// Everything the CLI printed, to search for secrets.
    outputs: std::cell::RefCell<String>,
}

impl Master {
    fn start(flags: &[&str]) -> Master {
        let dir = cluster_dir();
        let addr = format!("127.0.0.1:{}", free_port());
        let admin_file = dir.path().join("admin.token");
        for f in flags {
            if f.ends_with(".json") {
                assert!(Path::new(f).exists(), "{f}");
            }
        }
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        let (proc, admin) = start_master_with_admin(dir.path(), &addr, &flags);
        Master {
            dir,
            addr,
            _proc: proc,
            admin,
            admin_file,
            outputs: Default::default(),
        }
    }

    /// `mezz ARGS` with `--master ADDR --credentials FILE` before the first
    /// flag (so after the subcommands, and never after `--`).
    fn mezz_as(&self, credentials: &Path, args: &[&str]) -> std::process::Output {
        let cred = credentials.display().to_string();
        let at = args
            .iter()
            .position(|a| a.starts_with('-'))
            .unwrap_or(args.len());
        let mut full: Vec<&str> = args[..at].to_vec();
        full.extend(["--master", self.addr.as_str(), "--credentials", &cred]);
        full.extend_from_slice(&args[at..]);
        let out = mezz(&full, T);
        let mut o = self.outputs.borrow_mut();
        o.push_str(&text(&out.stderr));
        o.push_str(&text(&out.stdout));
        out
    }

    /// A new token for `principal` (with `extra` flags), kept in a file.
    fn token(&self, principal: &str, extra: &[&str]) -> (String, PathBuf) {
        let mut args = vec!["token", "create", principal];
        args.extend_from_slice(extra);
        let out = self.mezz_as(&self.admin_file, &args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let token = text(&out.stdout).trim().to_string();
        assert!(token.starts_with("mezz_"), "{token}");
        let file = token_file(self.dir.path(), principal, &token);
        (token, file)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }
}

/// The secret part of a token.
fn secret(token: &str) -> &str {
    token.rsplit('_').next().expect("a token")
}

mod security {
    mod acl_matrix;
    mod tokens;
}
