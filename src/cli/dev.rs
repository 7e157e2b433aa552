//! `mezz dev`: a whole local cluster in one foreground process, for trying
//! Mezzanine out and for development. Everything listens on 127.0.0.1.
//! Its agents share one machine, so each gets an equal share of it and a
//! port range of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use tokio::sync::watch;

use mezz_proto::Resources;

use super::master::TimeoutArgs;

/// The ports `mezz dev` divides among its agents when `--resources` names
/// none: agent i of N gets the i-th of N equal slices.
pub const DEV_PORTS: (u64, u64) = (31000, 32999);

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Number of masters (ports P, P+1, …).
    #[arg(long, default_value_t = 1)]
    pub masters: u16,
    /// Number of agents (ports after the masters'). Each offers an equal
    /// share of this machine and a port range of its own.
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
    /// How each agent's fake GPUs are connected, as `mezz agent
    /// --fake-gpu-topology` takes it, e.g. '0-1=NV4,2-3=NV4,*=SYS'.
    #[arg(long, value_name = "SPEC", requires = "fake_gpus")]
    pub fake_gpu_topology: Option<String>,
    /// Resources of each agent, e.g. 'cpus:2;mem:4096'. What it does not
    /// name is an equal share of this machine (detected cpus, memory and
    /// disk divided by the number of agents). Ports are always split: the
    /// agents divide the `ports` range given here, or 31000-32999, into
    /// equal slices, so no two agents offer the same port.
    #[arg(long)]
    pub resources: Option<String>,
    /// Run tasks as this user (e.g. `nobody`) instead of as you, as a
    /// production agent would (see `mezz agent --task-user`).
    #[arg(long, value_name = "USER")]
    pub task_user: Option<String>,
    /// Require a bearer token from every caller (frameworks, agents, the
    /// CLI, the status page), as `mezz master --authenticate all` does.
    /// An admin token is made and written to `<data-dir>/admin.token` (mode
    /// 0600); point the CLI at it with
    /// `export MEZZ_CREDENTIALS=<data-dir>/admin.token`.
    #[arg(long)]
    pub auth: bool,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
    /// TLS on every connection: makes a throwaway CA and certificates for
    /// 127.0.0.1 under `<data-dir>/tls/` (afresh at each start), and prints
    /// how clients trust it (`export MEZZ_TLS_CA=…`). Masters and agents
    /// present their certificates to each other. `mezz dev` itself does
    /// not use --tls-ca, --tls-cert, --tls-key or MEZZ_TLS_*.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: `optional` (the default) checks a client certificate
    /// when one is shown, as masters and agents do; `required` refuses
    /// every caller without one (then clients also need the printed
    /// MEZZ_TLS_CERT and MEZZ_TLS_KEY).
    #[arg(long, value_name = "optional|required", requires = "tls", value_parser = parse_dev_client_auth)]
    pub tls_client_auth: Option<mezz_proto::tls::ClientAuth>,
}

fn parse_dev_client_auth(s: &str) -> Result<mezz_proto::tls::ClientAuth, String> {
    s.parse()
}

/// The file `mezz dev --auth` keeps the admin token in, under its data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The admin token of `mezz dev --auth`: the one in `path` when the data
/// dir is reused, else a new one written there (mode 0600).
fn admin_token(path: &std::path::Path) -> Result<mezz_proto::auth::Token> {
    use mezz_proto::auth::Token;
    if path.exists() {
        return Token::from_file(path).map_err(|e| anyhow!("{e}"));
    }
    let t = Token::generate().map_err(|e| anyhow!(e))?;
    t.write_new_file(path)
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    Ok(t)
}

/// The resources of agent `i` of `n` on this machine: what `given` names,
/// and for cpus, mem and disk it does not name, `machine`'s divided by `n`;
/// the ports (`given`'s unreserved range, else [`DEV_PORTS`]) cut into `n`
/// equal slices, of which agent `i` gets the `i`-th.
pub fn agent_share(
    machine: &Resources,
    given: Option<&Resources>,
    i: u16,
    n: u16,
) -> Result<Resources> {
    let mut share = given.cloned().unwrap_or_default();
    for name in ["cpus", "mem", "disk"] {
        if share.scalar(name) == 0.0 {
            let each = machine.scalar(name) / f64::from(n);
            // Whole MB; hundredths of a CPU.
            let each = if name == "cpus" {
                (each * 100.0).floor() / 100.0
            } else {
                each.floor()
            };
            share.set_scalar(name, each);
        }
    }
    let ports: Vec<(u64, u64)> = match share.ranges("ports") {
        [] => vec![DEV_PORTS],
        given => given.to_vec(),
    };
    let all: Vec<u64> = ports.iter().flat_map(|&(b, e)| b..=e).collect();
    let per_agent = all.len() / usize::from(n);
    if per_agent == 0 {
        return Err(anyhow!(
            "--resources ports: {} port(s) cannot be split among {n} agents; give a range of at least {n} ports",
            all.len()
        ));
    }
    let mine = &all[per_agent * usize::from(i)..per_agent * (usize::from(i) + 1)];
    let mine: Vec<(u64, u64)> = mine.iter().map(|&p| (p, p)).collect();
    share.subtract(&Resources::new().with_ranges("ports", &ports));
    Ok(share.with_ranges("ports", &mine))
}

/// What each agent's resources are, in words, for the banner.
fn share_note(given: Option<&Resources>) -> String {
    let shared: Vec<&str> = ["cpus", "mem", "disk"]
        .into_iter()
        .filter(|n| !given.is_some_and(|g| g.scalar(n) != 0.0))
        .collect();
    match shared.as_slice() {
        [] => "its own ports and the --resources given".into(),
        [one] => format!("its own ports and an equal share of this machine's {one}"),
        [init @ .., last] => format!(
            "its own ports and an equal share of this machine's {} and {last}",
            init.join(", ")
        ),
    }
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
    let given = super::agent::parse_resources(args.resources.as_deref())?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    if args.task_user.is_some() && args.data_dir.is_none() {
        // Tasks of another user must pass through the temporary directory
        // (made 0700) to their sandboxes; they still cannot list it, and
        // with namespaces they do not see it at all.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("opening {} to the task user", data_dir.display()))?;
    }
    let token_file = data_dir.join(ADMIN_TOKEN_FILE);
    let token = if args.auth {
        let t = admin_token(&token_file)?;
        // This process's own calls (waiting for the agents) present it.
        crate::client::use_credentials(Some(t.clone()));
        Some(t)
    } else {
        None
    };
    let security = match &token {
        Some(_) => mezz_master::security::SecurityConfig {
            classes: mezz_master::security::AuthClasses::ALL,
            bootstrap_token_file: Some(token_file.clone()),
            bootstrap_principal: mezz_master::security::DEFAULT_ADMIN.into(),
            acls: None,
            audit_log: None,
            rate_limits: Default::default(),
        },
        None => Default::default(),
    };
    let machine = mezz_agent::resources::advertised(&data_dir, None);
    let shares: Vec<Resources> = (0..args.agents)
        .map(|i| agent_share(&machine, given.as_ref(), i, args.agents))
        .collect::<Result<_>>()?;
    let tls = if args.tls {
        Some(dev_tls_setup(&data_dir, args.tls_client_auth)?)
    } else {
        // Plain `mezz dev` is plaintext, whatever MEZZ_TLS_* say.
        mezz_proto::tls::set_client_tls(None);
        None
    };
    let server_tls = tls.as_ref().map(|(_, s)| std::sync::Arc::clone(s));
    let (stop_tx, stop_rx) = watch::channel(false);
    let master_addrs: Vec<SocketAddr> = (0..args.masters)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], args.port + i)))
        .collect();
    let master_addr = master_addrs[0];
    let scheduling = args.timeouts.scheduling.config()?;
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
            snapshot_every: mezz_master::replication::SNAPSHOT_EVERY,
            limits: Default::default(),
            tls: server_tls.clone(),
            security: mezz_master::security::SecurityConfig {
                // One audit log per master: each appends what it saw.
                audit_log: token
                    .is_some()
                    .then(|| data_dir.join(format!("audit-master-{id}.log"))),
                ..security.clone()
            },
            scheduling: scheduling.clone(),
        };
        let stop = stopper(&stop_rx);
        tasks.spawn(async move {
            mezz_master::run(master_config, stop)
                .await
                .map_err(anyhow::Error::from)
                .with_context(|| format!("master {id}"))
        });
    }
    let launcher = super::agent::task_launcher(&data_dir)?;
    for (i, share) in (0..args.agents).zip(&shares) {
        let listen = SocketAddr::from(([127, 0, 0, 1], args.port + args.masters + i));
        let config = mezz_agent::Config {
            masters: peers.values().cloned().collect(),
            listen,
            advertise_address: None,
            work_dir: data_dir.join(format!("agent-{}", i + 1)),
            resources: Some(share.clone()),
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
            fake_gpu_topology: args.fake_gpu_topology.clone(),
            allow_root_tasks: true,
            gpu_reserve: None,
            // A personal cluster: tasks run as whoever started it, unless
            // told otherwise.
            task_user: match &args.task_user {
                Some(u) => mezz_agent::task_user::DefaultTaskUser::Named(u.clone()),
                None => mezz_agent::task_user::DefaultTaskUser::Agent,
            },
            // The masters' state (and the other agents') is not the
            // tasks' to see.
            task_hidden_paths: vec![data_dir.clone()],
            task_pids_cap: None,
            tls: server_tls.clone(),
            token: token.clone(),
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
    outln!("Mezzanine dev cluster is up.");
    outln!("  status page  {}://{leader}/", mezz_proto::tls::scheme());
    if masters.len() == 1 {
        outln!("  master       {master_addr}");
    } else {
        outln!("  masters      {} (leader {leader})", masters.join(","));
    }
    let gpus = match args.fake_gpus {
        Some(g) if g > 0 => format!(" + {g} fake GPU(s)"),
        _ => String::new(),
    };
    if args.agents == 1 {
        outln!(
            "  agent        dev-agent-1 at 127.0.0.1:{}: {}{gpus}",
            args.port + args.masters,
            shares[0]
        );
    } else {
        outln!(
            "  agents       {}, each with {}:",
            args.agents,
            share_note(given.as_ref())
        );
        for (i, share) in (0..args.agents).zip(&shares) {
            outln!(
                "               dev-agent-{} at 127.0.0.1:{}: {share}{gpus}",
                i + 1,
                args.port + args.masters + i,
            );
        }
    }
    outln!(
        "  data dir     {}{}",
        data_dir.display(),
        if args.data_dir.is_none() {
            " (removed on exit)"
        } else {
            ""
        }
    );
    if let Some((files, _)) = &tls {
        dev_tls_banner(files, args.tls_client_auth);
    }
    if token.is_some() {
        outln!(
            "  auth         on for every caller; admin token in {} (mode 0600)",
            token_file.display()
        );
        outln!(
            "               export MEZZ_CREDENTIALS={}",
            token_file.display()
        );
        outln!(
            "               the status page asks for a login: any user name, the token as password"
        );
        outln!(
            "  audit log    {} (and GET /api/audit)",
            data_dir.join("audit-master-1.log").display()
        );
    }
    if masters.len() == 1 && args.port == 5050 {
        outln!("Try: mezz run -- echo hello      (Ctrl-C stops the cluster)");
    } else {
        outln!(
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
    errln!("stopping the local cluster…");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                errln!("mezz dev: {e:#}");
            }
        }
    })
    .await;
    if drained.is_err() {
        errln!("mezz dev: some components did not stop within 15 s");
    }
    stop_framework_daemons(&masters);
    Ok(ExitCode::SUCCESS)
}

/// Stops the framework processes that commands started in the background
/// for this cluster (the jobs, Jupyter and serving daemons, and the
/// serving proxy, in their default state directories for `masters`):
/// their cluster is gone with `mezz dev`. A process is signalled only when
/// its command line names its state directory, so a pid that was reused
/// by another program is left alone.
fn stop_framework_daemons(masters: &[String]) {
    for kind in ["jobs", "jupyter", "serve"] {
        let Ok(dir) = mezz_sdk::daemon::default_dir(kind, masters) else {
            continue;
        };
        for file in ["daemon.json", "proxy.json"] {
            let pid = std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["pid"].as_i64())
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| *p > 1);
            let Some(pid) = pid else { continue };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&dir.display().to_string()) {
                errln!(
                    "mezz dev: stopping the {kind} framework's {} (pid {pid})",
                    &file[..file.len() - 5]
                );
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
}

/// Makes the dev CA and certificates and this process's client TLS
/// (masters and agents present the node certificate when they call out).
fn dev_tls_setup(
    data_dir: &std::path::Path,
    auth: Option<mezz_proto::tls::ClientAuth>,
) -> Result<(
    super::dev_tls::DevTls,
    std::sync::Arc<mezz_proto::tls::ServerTls>,
)> {
    use mezz_proto::tls::{ClientAuth, ClientTls, ServerTls, ServerTlsFiles};
    let files = super::dev_tls::make(&data_dir.join("tls"))?;
    let server = ServerTls::load(&ServerTlsFiles {
        cert: files.node_cert.clone(),
        key: files.node_key.clone(),
        ca: Some(files.ca.clone()),
        client_auth: match auth {
            None | Some(ClientAuth::None) => ClientAuth::Optional,
            Some(a) => a,
        },
    })?;
    let client = ClientTls::load(&files.ca, Some(&files.node_cert), Some(&files.node_key))?;
    mezz_proto::tls::set_client_tls(Some(client));
    Ok((files, std::sync::Arc::new(server)))
}

fn dev_tls_banner(files: &super::dev_tls::DevTls, auth: Option<mezz_proto::tls::ClientAuth>) {
    outln!(
        "  TLS          on, with a throwaway CA: {}",
        files.ca.display()
    );
    outln!("  clients      export MEZZ_TLS_CA={}", files.ca.display());
    if auth == Some(mezz_proto::tls::ClientAuth::Required) {
        outln!(
            "               export MEZZ_TLS_CERT={} MEZZ_TLS_KEY={}",
            files.client_cert.display(),
            files.client_key.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Resources {
        Resources::parse("cpus:2;mem:23000;disk:100001;ports:[31000-32000]").expect("valid")
    }

    #[test]
    fn agents_get_equal_shares_and_disjoint_ports() {
        let a = agent_share(&machine(), None, 0, 2).expect("share");
        let b = agent_share(&machine(), None, 1, 2).expect("share");
        assert_eq!(
            a.to_string(),
            "cpus:1;disk:50000;mem:11500;ports:[31000-31999]"
        );
        assert_eq!(
            b.to_string(),
            "cpus:1;disk:50000;mem:11500;ports:[32000-32999]"
        );
        let third = agent_share(&machine(), None, 2, 3).expect("share");
        assert_eq!(third.scalar("cpus"), 0.66);
        assert_eq!(third.ranges("ports"), &[(32332, 32997)]);
        let one = agent_share(&machine(), None, 0, 1).expect("share");
        assert_eq!(one.ranges("ports"), &[DEV_PORTS]);
        assert_eq!(one.scalar("cpus"), 2.0);
    }

    #[test]
    fn given_resources_are_per_agent_but_ports_are_split() {
        let given =
            Resources::parse("cpus:4;ports:[40000-40009,50000-50001];gpus:{g}").expect("valid");
        let a = agent_share(&machine(), Some(&given), 0, 3).expect("share");
        let c = agent_share(&machine(), Some(&given), 2, 3).expect("share");
        assert_eq!(a.scalar("cpus"), 4.0, "as given");
        assert_eq!(a.scalar("mem"), 7666.0, "a share");
        assert_eq!(a.ranges("ports"), &[(40000, 40003)]);
        assert_eq!(c.ranges("ports"), &[(40008, 40009), (50000, 50001)]);
        assert_eq!(c.set_items("gpus"), vec!["g"]);
        let few = Resources::parse("ports:[1-2]").expect("valid");
        let err = agent_share(&machine(), Some(&few), 0, 3).expect_err("too few");
        assert!(
            err.to_string()
                .contains("2 port(s) cannot be split among 3 agents"),
            "{err}"
        );
        assert_eq!(
            share_note(Some(&given)),
            "its own ports and an equal share of this machine's mem and disk"
        );
    }
}
