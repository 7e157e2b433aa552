//! `mezz master`: run one master of the cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::Args;

use crate::duration;

/// Timeouts shared by `mezz master` and `mezz dev`.
#[derive(Args, Debug, Clone)]
pub struct TimeoutArgs {
    /// Outstanding offers are rescinded after this long.
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    pub offer_timeout: std::time::Duration,
    /// A disconnected agent has this long to re-register before its tasks
    /// are marked LOST.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    pub agent_timeout: std::time::Duration,
    /// A GPU a task holds is flagged idle (status page, /api/state,
    /// /metrics) once it has been at most 5% busy for this long.
    #[arg(long, default_value = "5m", value_parser = duration::parse)]
    pub gpu_idle_after: std::time::Duration,
    #[command(flatten)]
    pub scheduling: super::priorities::SchedulingArgs,
}

impl TimeoutArgs {
    pub fn timeouts(&self) -> mezz_master::Timeouts {
        mezz_master::Timeouts {
            offer: self.offer_timeout.as_millis().max(1) as u64,
            agent_reregister: self.agent_timeout.as_millis().max(1) as u64,
            gpu_idle_after: self.gpu_idle_after.as_millis().max(1) as u64,
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct MasterArgs {
    /// Address for gRPC and HTTP (status page, /api/state, /metrics).
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// Directory for the replicated log and snapshots (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This master's id in the raft group.
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// All masters of the group: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT.
    #[arg(long)]
    pub peers: Option<String>,
    /// Address announced to clients and peers (defaults to --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
    /// Compact the replicated log into a snapshot every this many applied
    /// entries. A follower that falls further behind catches up by
    /// snapshot.
    #[arg(long, default_value_t = mezz_master::replication::SNAPSHOT_EVERY, value_name = "ENTRIES")]
    pub snapshot_every: u64,
    /// Finished tasks kept in the replicated history (`mezz ps --all`),
    /// the same on every master and across restarts.
    #[arg(long, default_value_t = mezz_master::registry::DEFAULT_FINISHED_KEPT, value_name = "N")]
    pub max_completed_tasks: usize,
    /// Ended jobs (`mezz job`) kept in the replicated registry; beyond
    /// this many the one that ended first is dropped. Jobs that have not
    /// ended are always kept, and so is an ended job that one of them
    /// waits for.
    #[arg(long, default_value_t = mezz_master::job_store::DEFAULT_JOBS_KEPT, value_name = "N")]
    pub jobs_kept: usize,
    /// Connections open at once (gRPC and HTTP together); more are closed
    /// as they come, with a warning in the log. Lowered to what the
    /// process's open-file limit allows.
    #[arg(long, default_value_t = mezz_master::listener::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed
    /// (never sent one, or an HTTP keep-alive connection between
    /// requests). Streams of agents, frameworks and peer masters are
    /// requests in flight and are not cut.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    pub idle_timeout: std::time::Duration,
    #[command(flatten)]
    pub tls_server: super::tls::ServerTlsArgs,
    #[command(flatten)]
    pub security: super::auth::MasterSecurityArgs,
    #[command(flatten)]
    pub guard: super::guard::MasterGuardArgs,
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--peers: '{part}' is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| anyhow!("--peers: '{id}' in '{part}' is not a numeric id"))?;
        if id == 0 {
            return Err(anyhow!("--peers: id 0 is reserved; number masters from 1"));
        }
        mezz_proto::client::parse_master_list(addr).map_err(|e| anyhow!("--peers: {e}"))?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(anyhow!("--peers: id {id} appears twice"));
        }
    }
    Ok(out)
}

pub fn config(args: &MasterArgs) -> Result<mezz_master::Config> {
    let mut peers = match &args.peers {
        Some(p) => parse_peers(p)?,
        None => BTreeMap::new(),
    };
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.listen.to_string());
    if peers.is_empty() {
        peers.insert(args.id, advertise.clone());
    } else if !peers.contains_key(&args.id) {
        return Err(anyhow!("--id {} is not one of the ids in --peers", args.id));
    }
    Ok(mezz_master::Config {
        listen: args.listen,
        advertise: Some(advertise),
        data_dir: args.data_dir.clone(),
        id: args.id,
        peers,
        timeouts: args.timeouts.timeouts(),
        snapshot_every: args.snapshot_every.max(1),
        limits: mezz_master::Limits {
            connections: mezz_master::listener::ConnLimits {
                max_connections: args.max_connections.max(1),
                idle_timeout: args.idle_timeout.max(std::time::Duration::from_millis(100)),
                ..Default::default()
            },
            completed_tasks: args.max_completed_tasks.max(1),
            jobs_kept: args.jobs_kept.max(1),
        },
        tls: None,
        security: args.guard.apply(args.security.config()?)?,
        scheduling: args.timeouts.scheduling.config()?,
    })
}

/// `mezz master`, with TLS from `--tls-cert`, `--tls-key`, `--tls-ca` and
/// `--tls-client-auth`.
pub async fn main(args: MasterArgs, tls: &super::tls::TlsArgs) -> Result<ExitCode> {
    let mut config = config(&args)?;
    config.tls = tls.server(&args.tls_server)?;
    if config.tls.is_some() && tls.tls_ca.is_none() {
        return Err(anyhow!(
            "--tls-cert: also pass --tls-ca, the CA that signed the masters' and agents' certificates; the master trusts it when it calls its peers and agents"
        ));
    }
    mezz_master::run(config, super::shutdown_signal())
        .await
        .context("master stopped")?;
    Ok(ExitCode::SUCCESS)
}
