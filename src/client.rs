//! How client commands reach the cluster: the master list from `--master`,
//! `$MEZZ_MASTER` or the default, the leader found among them, and the
//! token presented to it (`--credentials`, `$MEZZ_CREDENTIALS`,
//! `$MEZZ_TOKEN`).

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use mezz_proto::auth::{authed, AuthChannel, CredentialsError, Token};
use mezz_proto::client::{endpoint, leader_hint, parse_master_list, LeaderSearch};
use mezz_proto::v1::operator_client::OperatorClient;
use mezz_proto::v1::{ClusterState, GetLeaderRequest, GetStateRequest};
use mezz_proto::MAX_MESSAGE_BYTES;

/// The token this process presents, chosen once: by `main` from
/// `--credentials` (or by `mezz dev --auth`, which makes its own), else
/// from the environment at first use. Like `$MEZZ_MASTER`, a setting of
/// the whole process, never changed once set.
static CREDENTIALS: std::sync::OnceLock<Result<Option<Token>, CredentialsError>> =
    std::sync::OnceLock::new();

/// The file `--credentials` named, for the framework daemons this
/// process starts.
static CREDENTIALS_FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Presents `token` on every call of this process. Only the first choice
/// counts; false when one was made already.
pub fn use_credentials(token: Option<Token>) -> bool {
    CREDENTIALS.set(Ok(token)).is_ok()
}

/// Presents the token in `path` (mode 0600 or stricter) on every call of
/// this process and of the daemons it starts.
pub fn use_credentials_file(path: &std::path::Path) -> Result<()> {
    let token = Token::from_file(path).map_err(|e| anyhow!("--credentials: {e}"))?;
    use_credentials(Some(token));
    let _ = CREDENTIALS_FILE.set(path.to_path_buf());
    Ok(())
}

/// Where a daemon started by this process finds its token: the
/// environment to add to its command (`$MEZZ_CREDENTIALS`), if any.
pub fn credentials_env() -> Option<(&'static str, std::path::PathBuf)> {
    CREDENTIALS_FILE
        .get()
        .map(|p| (mezz_proto::auth::CREDENTIALS_ENV, p.clone()))
}

/// A framework driver that presents this process's token.
pub fn driver() -> Result<mezz_sdk::DriverBuilder> {
    let b = mezz_sdk::DriverBuilder::new();
    Ok(match credentials()? {
        Some(t) => b.token(t),
        None => b,
    })
}

/// The token this process presents, if any.
pub fn credentials() -> Result<Option<Token>> {
    CREDENTIALS
        .get_or_init(|| Token::from_env_or_file(None))
        .clone()
        .map_err(anyhow::Error::from)
}

/// The default master address.
pub const DEFAULT_MASTER: &str = "127.0.0.1:5050";

/// The masters to try: the flag, else `$MEZZ_MASTER`, else the default.
pub fn masters(flag: Option<&str>) -> Result<Vec<String>> {
    let env = std::env::var(mezz_proto::client::MASTER_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty());
    let list = flag
        .map(str::to_string)
        .or(env)
        .unwrap_or_else(|| DEFAULT_MASTER.to_string());
    let parsed = parse_master_list(&list).map_err(|e| anyhow!("--master: {e}"))?;
    let _ = MASTERS.set(parsed.clone());
    Ok(parsed)
}

/// The masters this command was pointed at, for calls made deep inside it
/// (a sandbox grant for each output stream it follows).
static MASTERS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// The masters of [`masters`] as first resolved, else the defaults.
pub fn known_masters() -> Result<Vec<String>> {
    match MASTERS.get() {
        Some(m) => Ok(m.clone()),
        None => masters(None),
    }
}

async fn operator_at(addr: &str) -> Result<OperatorClient<AuthChannel>, String> {
    let token = credentials().map_err(|e| e.to_string())?;
    let channel = endpoint(addr)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| mezz_proto::tls::describe(&e))?;
    Ok(OperatorClient::new(authed(channel, token.as_ref()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Finds the leading master and returns an operator client for it. Fails,
/// naming every address tried and why, when no master answers.
pub async fn leader(masters: &[String]) -> Result<(OperatorClient<AuthChannel>, String)> {
    // A bad credentials file is the answer, whatever the masters say.
    credentials()?;
    let mut errors = Vec::new();
    let mut search = LeaderSearch::new(masters, None);
    while let Some(addr) = search.next_address() {
        let mut client = match operator_at(&addr).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("{addr}: {}", e.trim_end_matches(": ")));
                continue;
            }
        };
        match client.get_leader(GetLeaderRequest {}).await {
            Ok(r) => {
                let r = r.into_inner();
                if r.is_leader {
                    return Ok((client, addr));
                }
                if r.leader.is_empty() {
                    errors.push(format!("{addr}: not the leader and no leader known yet"));
                } else if !search.redirect(&r.leader) {
                    errors.push(format!(
                        "{addr}: not the leader; it names {} as the leader, which did not answer",
                        r.leader
                    ));
                }
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                return Err(anyhow!("master {addr} refused: {}", status.message()));
            }
            Err(status) => {
                if let Some(hint) = leader_hint(&status) {
                    search.redirect(&hint);
                }
                errors.push(format!("{addr}: {}", status.message()));
            }
        }
    }
    Err(anyhow!(
        "could not reach a leading master (tried {}); start one with `mezz dev` or `mezz master`, \
         or point --master / $MEZZ_MASTER at it",
        errors.join("; ")
    ))
}

/// The cluster state from the leader.
pub async fn state(masters: &[String], completed: bool) -> Result<ClusterState> {
    let (mut client, addr) = leader(masters).await?;
    Ok(client
        .get_state(GetStateRequest { completed })
        .await
        .with_context(|| format!("reading the cluster state from {addr}"))?
        .into_inner())
}
