//! The Mezzanine agent: one per machine. It advertises the machine's
//! resources to the leading master, runs the tasks the master launches in
//! sandboxes through a small wrapper process, reports their status at least
//! once, survives its own restarts without killing tasks (checkpoint), and
//! serves sandbox files to the CLI.
//!
//! `run` is the whole agent; `launch_main` is the task wrapper that the
//! `mezz` binary runs for its hidden `__launch` subcommand.
#![warn(missing_docs)]

mod agent;
pub mod checkpoint;
mod config;
mod error;
pub mod executor;
pub mod files;
pub mod gpu;
pub mod health;
pub mod isolation;
pub mod launch_spec;
pub mod lifecycle;
mod master_link;
pub mod port_claims;
pub mod resources;
pub mod task_user;

use mezz_proto::resources::PORTS;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mezz_proto::v1::{agent_files_server::AgentFilesServer, AgentInfo};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;

pub use config::{launcher_beside, Config, WRAPPER_PROGRAM};
pub use error::AgentError;
pub use mezz_task_wrapper::launch_main;

/// How long to wait for a previous agent process (or instance) to let go of
/// the checkpoint's file lock.
const CHECKPOINT_LOCK_WAIT: Duration = Duration::from_secs(5);

/// How long shutdown waits for the agent's own background tasks to end
/// before the final checkpoint flush.
const TASKS_STOP_WAIT: Duration = Duration::from_secs(5);

/// Both ids are usable as path components.
fn validate_ids(framework_id: &str, task_id: &str) -> bool {
    mezz_proto::ids::validate_id("framework", framework_id).is_ok()
        && mezz_proto::ids::validate_id("task", task_id).is_ok()
}

fn ensure_dir(path: &std::path::Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(path).map_err(|source| AgentError::WorkDir {
        path: path.to_path_buf(),
        source,
    })
}

fn set_mode(path: &std::path::Path, mode: u32) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        AgentError::WorkDir {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Who tasks run as; checks at start-up that the default task user exists
/// and can reach the sandboxes, so that no task has to fail for it.
fn task_users(config: &Config) -> Result<task_user::Policy, AgentError> {
    use task_user::DefaultTaskUser;
    let policy = task_user::Policy {
        default: config.task_user.clone(),
        allow_root: config.allow_root_tasks,
        agent_uid: nix::unistd::geteuid().as_raw(),
    };
    let DefaultTaskUser::Named(name) = &config.task_user else {
        return Ok(policy);
    };
    let account = task_user::lookup(name)
        .map_err(AgentError::Tasks)?
        .ok_or_else(|| {
            AgentError::Tasks(format!(
                "--task-user '{name}': no such user on this machine; create it or name an existing unprivileged user"
            ))
        })?;
    if policy.agent_uid != 0 {
        if account.uid != policy.agent_uid {
            tracing::warn!(
                "the agent does not run as root, so tasks run as its own user (uid {}), not as --task-user '{name}'",
                policy.agent_uid
            );
        }
        return Ok(policy);
    }
    if account.is_root() {
        if !config.allow_root_tasks {
            return Err(AgentError::Tasks(format!(
                "--task-user '{name}' is root; pass --allow-root-tasks too to run tasks as root"
            )));
        }
        return Ok(policy);
    }
    // The work dir is the agent's own: let the task's user pass through.
    let work = &config.work_dir;
    let mode = std::fs::metadata(work)
        .map_err(|source| AgentError::WorkDir {
            path: work.clone(),
            source,
        })
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)?;
    if mode & 0o011 != 0o011 {
        set_mode(work, mode | 0o011)?;
    }
    let real = work.canonicalize().map_err(|source| AgentError::WorkDir {
        path: work.clone(),
        source,
    })?;
    let groups = task_user::groups_of(&account);
    if let Err(e) = task_user::check_traversable(&real, &account, &groups) {
        return Err(AgentError::Tasks(format!(
            "work dir '{}': tasks run as user '{name}' (uid {}), who cannot pass through '{}' (mode {:04o}) to reach their sandboxes; run `chmod a+x {}` (or o+x), or choose a --work-dir whose parent directories everyone may pass through",
            work.display(),
            account.uid,
            e.dir.display(),
            e.mode,
            e.dir.display()
        )));
    }
    tracing::info!(
        "tasks run as user '{name}' (uid {}) unless they or their framework name another",
        account.uid
    );
    Ok(policy)
}

/// The work dir and the `--task-hidden-path`s as absolute real paths: what
/// each task's mount namespace hides.
fn hidden_paths(config: &Config) -> Result<Vec<std::path::PathBuf>, AgentError> {
    let work = config
        .work_dir
        .canonicalize()
        .map_err(|source| AgentError::WorkDir {
            path: config.work_dir.clone(),
            source,
        })?;
    let mut out = vec![work];
    for p in &config.task_hidden_paths {
        let bad = |why: String| {
            AgentError::Tasks(format!(
                "--task-hidden-path '{}': {why}; give an existing directory other than /",
                p.display()
            ))
        };
        if !p.is_absolute() {
            return Err(bad("not an absolute path".into()));
        }
        let real = p.canonicalize().map_err(|e| bad(e.to_string()))?;
        if !real.is_dir() {
            return Err(bad("not a directory".into()));
        }
        if real.parent().is_none() {
            return Err(bad("hiding the root directory would hide everything".into()));
        }
        out.push(real);
    }
    Ok(out)
}

async fn open_checkpoint(path: &std::path::Path) -> Result<checkpoint::Checkpoint, AgentError> {
    let deadline = tokio::time::Instant::now() + CHECKPOINT_LOCK_WAIT;
    loop {
        match checkpoint::Checkpoint::open(path) {
            Ok(cp) => return Ok(cp),
            // The holder may be an agent that is just exiting.
            Err(AgentError::CheckpointLocked { .. }) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("checkpoint is locked; waiting");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn advertised_address(config: &Config, bound: SocketAddr, hostname: &str) -> String {
    match &config.advertise_address {
        Some(a) => a.clone(),
        // 0.0.0.0 means nothing to a remote peer; name the host instead.
        None if bound.ip().is_unspecified() => format!("{hostname}:{}", bound.port()),
        None => bound.to_string(),
    }
}

/// The agent API's connections over TLS. Each handshake runs in a task
/// of its own (bounded by [`mezz_proto::tls::HANDSHAKE_TIMEOUT`]), so a
/// slow or failing peer never holds up the others; failures are logged by
/// [`mezz_proto::tls::ServerTls`] at a bounded rate, and a plaintext
/// client is dropped. The accept loop ends with the server.
fn tls_incoming(
    listener: tokio::net::TcpListener,
    tls: Arc<mezz_proto::tls::ServerTls>,
) -> impl tokio_stream::Stream<
    Item = Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors, typically: give
                        // connections a moment to close rather than spin.
                        tracing::warn!("agent API: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let tls = Arc::clone(&tls);
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(mezz_proto::tls::Accepted::Tls(stream)) = tls.accept(tcp, peer).await {
                    let _ = tx.send(Ok(*stream)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Runs the agent until `shutdown` resolves. Tasks keep running after it
/// returns (they are checkpointed and re-attached by the next start).
/// Fails only on a local problem: unusable work dir, checkpoint or launcher,
/// or a listen address that cannot be bound.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    if let Err(e) = std::fs::metadata(&config.launcher) {
        return Err(AgentError::Launcher {
            path: config.launcher.clone(),
            message: e.to_string(),
        });
    }
    let meta_dir = config.work_dir.join("meta");
    ensure_dir(&meta_dir)?;
    ensure_dir(&executor::sandboxes_root(&config.work_dir))?;
    // The checkpoint is the agent's alone; tasks pass through the
    // sandboxes directory to their own sandbox without listing it.
    set_mode(&meta_dir, 0o700)?;
    set_mode(&executor::sandboxes_root(&config.work_dir), 0o711)?;
    let users = task_users(&config)?;
    let hidden_paths = hidden_paths(&config)?;
    let checkpoint = open_checkpoint(&meta_dir.join("checkpoint")).await?;
    let agent_id = match checkpoint.agent_id() {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            checkpoint
                .set_agent_id(&id)
                .map_err(|e| AgentError::Checkpoint {
                    path: checkpoint.path().to_path_buf(),
                    message: e.to_string(),
                })?;
            id
        }
    };
    // Made and stored before the first registration (see
    // `Checkpoint::secret`); never logged.
    let secret = checkpoint.secret()?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: config.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| AgentError::Listen {
        addr: config.listen,
        source,
    })?;
    let hostname = config.hostname.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into())
    });
    let mut isolation =
        isolation::select(config.isolation, &config.cgroup_root, config.task_pids_cap)
            .map_err(|e| AgentError::Isolation(e.to_string()))?;
    if isolation.isolator.kind() != "none" {
        let why = if !isolation.namespaces {
            Some("this machine has no PID, mount and UTS namespaces".to_string())
        } else {
            isolation::namespaces::probe(&config.launcher, &config.work_dir)
                .err()
                .map(|e| format!("they cannot be made here: {e}"))
        };
        if let Some(why) = why {
            if config.isolation == isolation::IsolationMode::Cgroups {
                return Err(AgentError::Isolation(format!(
                    "--isolation cgroups: task namespaces are unusable ({why}); pass --isolation auto to run tasks without them"
                )));
            }
            tracing::warn!(
                "tasks run WITHOUT their own PID/mount/UTS namespaces ({why}): they can see the host's processes, the agent's work dir with other tasks' sandboxes, and the paths it was told to hide"
            );
            isolation.namespaces = false;
        }
    }
    let gpu_backend = gpu::discover(
        config.gpus,
        &config.work_dir,
        config.fake_gpu_topology.as_deref(),
    )
    .map_err(|e| AgentError::Gpus(e.to_string()))?;
    let gpu_backend: Option<Arc<dyn gpu::GpuBackend>> = gpu_backend.map(Arc::from);
    let gpus: Vec<gpu::Gpu> = gpu_backend
        .as_ref()
        .map_or_else(Vec::new, |b| b.gpus().to_vec());
    let mut resources = resources::advertised(&config.work_dir, config.resources.as_ref());
    if !gpus.is_empty() && resources.set_items(gpu::RESOURCE).is_empty() {
        let ids: Vec<String> = gpus.iter().map(|g| g.id.0.clone()).collect();
        resources = resources::merge(
            &resources,
            &mezz_proto::Resources::new().with_set(gpu::RESOURCE, &ids),
        );
    }
    let mut attributes = std::collections::HashMap::new();
    if let Some(first) = gpus.first() {
        attributes.insert("gpu_model".to_string(), first.name.clone());
        attributes.insert("gpu_memory_mb".to_string(), first.memory_mb.to_string());
    }
    if let Some(topology) = gpu_backend.as_deref().and_then(gpu::advertised_topology) {
        tracing::info!(%topology, "GPU topology");
        attributes.insert(
            mezz_proto::topology::ATTRIBUTE.to_string(),
            topology.to_string(),
        );
    }
    let info = AgentInfo {
        id: agent_id.clone(),
        hostname: hostname.clone(),
        address: advertised_address(&config, bound, &hostname),
        resources: resources.to_proto(),
        attributes: attributes.into_iter().collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        gpu_reserve: config
            .gpu_reserve
            .as_ref()
            .map(mezz_proto::Resources::to_proto)
            .unwrap_or_default(),
    };
    // Held until the agent stops; dropping it withdraws the claim.
    let _port_claim = claim_ports(&config, &info, &resources)?;
    tracing::info!(
        agent_id = %agent_id,
        "agent {agent_id} on {hostname}: API on {bound} (advertised as {}), work dir {}, resources {resources}",
        info.address,
        config.work_dir.display()
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = Arc::new(agent::Agent::new(
        info,
        &config,
        checkpoint,
        agent::Machine {
            isolation,
            gpus,
            gpu_backend,
            users,
            hidden_paths,
        },
        stop_rx.clone(),
    ));
    agent.recover().await;

    let files = AgentFilesServer::new(files::FilesService::new(Arc::clone(&agent)))
        .max_decoding_message_size(mezz_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(mezz_proto::MAX_MESSAGE_BYTES);
    let mut server_stop = stop_rx.clone();
    let server_stopped = async move {
        let _ = server_stop.wait_for(|v| *v).await;
    };
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(files);
    let mut server = match config.tls.clone() {
        None => {
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                conn.inspect(|tcp| {
                    let _ = tcp.set_nodelay(true);
                })
            });
            // With our own listener tonic's tcp_nodelay does not apply: set
            // it per connection, or small responses wait for delayed ACKs.
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, server_stopped))
        }
        Some(tls) => tokio::spawn(
            router.serve_with_incoming_shutdown(tls_incoming(listener, tls), server_stopped),
        ),
    };
    let link = tokio::spawn(master_link::run(
        Arc::clone(&agent),
        config.masters.clone(),
        secret,
        config.token.clone(),
        stop_rx,
    ));

    let outcome = tokio::select! {
        _ = shutdown => Ok(()),
        r = &mut server => Err(AgentError::Serve {
            addr: bound,
            message: match r {
                Ok(Ok(())) => "stopped unexpectedly".into(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            },
        }),
    };
    if config.kill_tasks_on_shutdown {
        agent.kill_all(Duration::from_secs(5)).await;
        tracing::info!("agent {agent_id} stopping");
    } else {
        tracing::info!("agent {agent_id} stopping; running tasks keep running");
    }
    let _ = stop_tx.send(true);
    let _ = link.await;
    if outcome.is_ok() {
        let _ = server.await;
    }
    // What those tasks write (a kill request, a status) goes into the
    // final flush; one stuck in a blocking call does not hold the stop.
    if !agent.wait_for_tasks(TASKS_STOP_WAIT).await {
        tracing::warn!(
            "some of the agent's background tasks did not end within {TASKS_STOP_WAIT:?}; flushing the checkpoint anyway"
        );
    }
    if let Err(e) = agent_flush(&agent).await {
        tracing::warn!("final checkpoint flush failed: {e}");
    }
    outcome
}

/// Claims the ports this agent offers among the agents of this host, or
/// refuses to start when another one already offers some of them (see
/// [`port_claims`]).
fn claim_ports(
    config: &Config,
    info: &AgentInfo,
    resources: &mezz_proto::Resources,
) -> Result<Option<port_claims::Held>, AgentError> {
    let ports = resources.reserve("").ranges(PORTS).to_vec();
    if ports.is_empty() {
        return Ok(None);
    }
    let work_dir =
        std::fs::canonicalize(&config.work_dir).unwrap_or_else(|_| config.work_dir.clone());
    let claim = port_claims::Claim {
        agent_id: info.id.clone(),
        address: info.address.clone(),
        host: port_claims::advertised_host(&info.address, &info.hostname),
        root: work_dir
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
        work_dir,
        masters: config.masters.clone(),
        ports,
        pid: std::process::id(),
        started: port_claims::process_start(std::process::id()).unwrap_or(0),
    };
    port_claims::claim(&port_claims::default_dir(), claim)
        .map_err(|conflict| AgentError::Ports(conflict.to_string()))
}

async fn agent_flush(agent: &agent::Agent) -> sled::Result<()> {
    agent.flush().await
}

/// Resolves once the stop signal is set (or its sender is gone).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
