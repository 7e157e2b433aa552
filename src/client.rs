//! How client commands reach the cluster: the master list from `--master`,
//! `$MEZZ_MASTER` or the default, and the leader found among them.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use mezz_proto::client::{endpoint, leader_hint, parse_master_list};
use mezz_proto::v1::operator_client::OperatorClient;
use mezz_proto::v1::{ClusterState, GetLeaderRequest, GetStateRequest};
use mezz_proto::MAX_MESSAGE_BYTES;
use tonic::transport::Channel;

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
    parse_master_list(&list).map_err(|e| anyhow!("--master: {e}"))
}

async fn operator_at(addr: &str) -> Result<OperatorClient<Channel>, String> {
    let channel = endpoint(addr)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| mezz_proto::tls::describe(&e))?;
    Ok(OperatorClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Finds the leading master and returns an operator client for it. Fails,
/// naming every address tried and why, when no master answers.
pub async fn leader(masters: &[String]) -> Result<(OperatorClient<Channel>, String)> {
    let mut errors = Vec::new();
    let mut queue: Vec<String> = masters.to_vec();
    let mut tried = std::collections::HashSet::new();
    while let Some(addr) = queue.first().cloned() {
        queue.remove(0);
        if !tried.insert(addr.clone()) {
            continue;
        }
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
                if !r.leader.is_empty() {
                    queue.insert(0, r.leader);
                } else {
                    errors.push(format!("{addr}: not the leader and no leader known yet"));
                }
            }
            Err(status) => {
                if let Some(hint) = leader_hint(&status) {
                    queue.insert(0, hint);
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
