//! `mezz dev`: a whole local cluster in one foreground process, for trying
//! Mezzanine out and for development. Everything listens on 127.0.0.1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use tokio::sync::watch;

use super::master::TimeoutArgs;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Number of masters (ports P, P+1, …).
    #[arg(long, default_value_t = 1)]
    pub masters: u16,
    /// Number of agents (ports after the masters').
    #[arg(long, default_value_t = 1)]
    pub agents: u16,
    /// First port.
    #[arg(long, default_value_t = 5050)]
    pub port: u16,
    /// Where masters and agents keep their state (default: a fresh
    /// temporary directory, removed on exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Give each agent G fake GPUs.
    #[arg(long, value_name = "G")]
    pub fake_gpus: Option<u32>,
    /// Resources of each agent (default: detected).
    #[arg(long)]
    pub resources: Option<String>,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
}

fn stopper(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

pub async fn main(args: DevArgs) -> Result<ExitCode> {
    if !matches!(args.masters, 1 | 3 | 5) {
        return Err(anyhow!(
            "--masters {}: a raft group needs 1, 3 or 5 masters",
            args.masters
        ));
    }
    if args.agents == 0 {
        return Err(anyhow!("--agents must be at least 1"));
    }
    let top = u32::from(args.port) + u32::from(args.masters) + u32::from(args.agents);
    if top > 65535 {
        return Err(anyhow!(
            "--port {} leaves no room for {} masters and {} agents",
            args.port,
            args.masters,
            args.agents
        ));
    }
    let _temp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::Builder::new()
                .prefix("mezz-dev-")
                .tempdir()
                .context("creating a temporary data directory")?;
            let p = t.path().to_path_buf();
            _temp = t;
            p
        }
    };
    let resources = super::agent::parse_resources(args.resources.as_deref())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let master_addrs: Vec<SocketAddr> = (0..args.masters)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], args.port + i)))
        .collect();
    let master_addr = master_addrs[0];
    let peers: std::collections::BTreeMap<u64, String> = master_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.to_string()))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, addr) in master_addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let master_config = mezz_master::Config {
            listen: *addr,
            advertise: Some(addr.to_string()),
            data_dir: data_dir.join(format!("master-{id}")),
            id,
            peers: peers.clone(),
            timeouts: args.timeouts.timeouts(),
            snapshot_every: super::master::DEFAULT_SNAPSHOT_EVERY,
        };
        let stop = stopper(&stop_rx);
        tasks.spawn(async move {
            mezz_master::run(master_config, stop)
                .await
                .map_err(anyhow::Error::from)
                .with_context(|| format!("master {id}"))
        });
    }
    let launcher =
        std::env::current_exe().context("locating the mezz binary to launch tasks with")?;
    for i in 0..args.agents {
        let listen = SocketAddr::from(([127, 0, 0, 1], args.port + args.masters + i));
        let config = mezz_agent::Config {
            masters: peers.values().cloned().collect(),
            listen,
            advertise_address: None,
            work_dir: data_dir.join(format!("agent-{}", i + 1)),
            resources: agent_resources(resources.as_ref(), i, args.agents),
            hostname: Some(format!("dev-agent-{}", i + 1)),
            launcher: launcher.clone(),
            default_kill_grace: Duration::from_secs(5),
            // A temporary cluster takes its tasks with it.
            kill_tasks_on_shutdown: args.data_dir.is_none(),
            isolation: mezz_agent::isolation::IsolationMode::Auto,
            cgroup_root: "mezzanine".into(),
            gpus: match args.fake_gpus {
                Some(n) => mezz_agent::gpu::GpuMode::Fake(n),
                None => mezz_agent::gpu::GpuMode::None,
            },
            allow_root_tasks: true,
        };
        let stop = stopper(&stop_rx);
        tasks.spawn(async move {
            mezz_agent::run(config, stop)
                .await
                .map_err(anyhow::Error::from)
                .with_context(|| format!("agent on {listen}"))
        });
    }

    // Wait until every agent has registered, or a component fails.
    let masters: Vec<String> = peers.values().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(done) = tasks.try_join_next() {
            let err = match done {
                Ok(Ok(())) => anyhow!("a component stopped during start-up"),
                Ok(Err(e)) => e,
                Err(e) => anyhow!("a component panicked: {e}"),
            };
            let _ = stop_tx.send(true);
            return Err(err);
        }
        if let Ok(s) = crate::client::state(&masters, false).await {
            if s.agents.iter().filter(|a| a.status == "connected").count()
                >= usize::from(args.agents)
            {
                break;
            }
        }
        if Instant::now() > deadline {
            let _ = stop_tx.send(true);
            return Err(anyhow!(
                "the local cluster did not come up within 20 s; see the log above"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = match crate::client::leader(&masters).await {
        Ok((_, addr)) => addr,
        Err(_) => master_addr.to_string(),
    };
    println!("Mezzanine dev cluster is up.");
    println!("  status page  http://{leader}/");
    if masters.len() == 1 {
        println!("  master       {master_addr}");
    } else {
        println!("  masters      {} (leader {leader})", masters.join(","));
    }
    println!(
        "  agents       {} (ports {}-{})",
        args.agents,
        args.port + args.masters,
        args.port + args.masters + args.agents - 1
    );
    println!(
        "  data dir     {}{}",
        data_dir.display(),
        if args.data_dir.is_none() {
            " (removed on exit)"
        } else {
            ""
        }
    );
    if masters.len() == 1 && args.port == 5050 {
        println!("Try: mezz run -- echo hello      (Ctrl-C stops the cluster)");
    } else {
        println!(
            "Try: MEZZ_MASTER={} mezz run -- echo hello      (Ctrl-C stops the cluster)",
            masters.join(",")
        );
    }

    tokio::select! {
        _ = super::shutdown_signal() => {}
        Some(done) = tasks.join_next() => {
            let _ = stop_tx.send(true);
            return match done {
                Ok(Ok(())) => Err(anyhow!("a component stopped unexpectedly")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow!("a component panicked: {e}")),
            };
        }
    }
    eprintln!("stopping the local cluster…");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                eprintln!("mezz dev: {e:#}");
            }
        }
    })
    .await;
    if drained.is_err() {
        eprintln!("mezz dev: some components did not stop within 15 s");
    }
    Ok(ExitCode::SUCCESS)
}

/// Agent `i`'s resources. The agents of a dev cluster share one host, so
/// unless `--resources` names ports, each gets its own slice of the
/// default port range: two tasks on different agents must never be handed
/// the same port.
fn agent_resources(
    resources: Option<&mezz_proto::Resources>,
    i: u16,
    agents: u16,
) -> Option<mezz_proto::Resources> {
    if resources.is_some_and(|r| r.range_count("ports") > 0) {
        return resources.cloned();
    }
    let (begin, end) = mezz_agent::resources::DEFAULT_PORTS;
    let width = (end - begin + 1) / u64::from(agents.max(1));
    let first = begin + width * u64::from(i);
    let own = (first, first + width - 1);
    Some(
        resources
            .cloned()
            .unwrap_or_default()
            .with_ranges("ports", &[own]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_on_one_host_get_disjoint_ports() {
        let a = agent_resources(None, 0, 2).expect("resources");
        let b = agent_resources(None, 1, 2).expect("resources");
        assert_eq!(a.ranges("ports"), &[(31000, 31499)]);
        assert_eq!(b.ranges("ports"), &[(31500, 31999)]);
        let given = mezz_proto::Resources::parse("cpus:2;ports:[9000-9009]").expect("valid");
        assert_eq!(agent_resources(Some(&given), 1, 2), Some(given.clone()));
        let cpus = mezz_proto::Resources::parse("cpus:2").expect("valid");
        let c = agent_resources(Some(&cpus), 0, 1).expect("resources");
        assert_eq!(c.scalar("cpus"), 2.0);
        assert_eq!(c.ranges("ports"), &[(31000, 32000)]);
    }
}
