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
    if args.masters != 1 {
        return Err(anyhow!(
            "--masters {}: replication across several masters is not available in this release yet; use --masters 1",
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
    if args.fake_gpus.is_some() {
        return Err(anyhow!(
            "--fake-gpus is not available in this release yet (GPU isolation is coming); omit it"
        ));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let master_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let mut peers = std::collections::BTreeMap::new();
    peers.insert(1, master_addr.to_string());
    let master_config = mezz_master::Config {
        listen: master_addr,
        advertise: Some(master_addr.to_string()),
        data_dir: data_dir.join("master-1"),
        id: 1,
        peers,
        timeouts: args.timeouts.timeouts(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    {
        let stop = stopper(&stop_rx);
        tasks.spawn(async move {
            mezz_master::run(master_config, stop)
                .await
                .map_err(anyhow::Error::from)
                .context("master")
        });
    }
    let launcher =
        std::env::current_exe().context("locating the mezz binary to launch tasks with")?;
    for i in 0..args.agents {
        let listen = SocketAddr::from(([127, 0, 0, 1], args.port + args.masters + i));
        let config = mezz_agent::Config {
            masters: vec![master_addr.to_string()],
            listen,
            advertise_address: None,
            work_dir: data_dir.join(format!("agent-{}", i + 1)),
            resources: resources.clone(),
            hostname: Some(format!("dev-agent-{}", i + 1)),
            launcher: launcher.clone(),
            default_kill_grace: Duration::from_secs(5),
            // A temporary cluster takes its tasks with it.
            kill_tasks_on_shutdown: args.data_dir.is_none(),
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
    let masters = vec![master_addr.to_string()];
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
    println!("Mezzanine dev cluster is up.");
    println!("  status page  http://{master_addr}/");
    println!("  master       {master_addr}");
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
    println!("Try: mezz run -- echo hello      (Ctrl-C stops the cluster)");

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
