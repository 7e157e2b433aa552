//! `mezz agent`: offer this machine's resources and run tasks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use mezz_proto::Resources;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum GpuMode {
    /// Find NVIDIA GPUs through NVML.
    Auto,
    /// Advertise no GPUs.
    None,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    /// cgroups and namespaces where possible, a warning where not.
    Auto,
    /// cgroups and namespaces, or refuse to start.
    Cgroups,
    /// No isolation.
    None,
}

impl From<IsolationArg> for mezz_agent::isolation::IsolationMode {
    fn from(a: IsolationArg) -> Self {
        match a {
            IsolationArg::Auto => Self::Auto,
            IsolationArg::Cgroups => Self::Cgroups,
            IsolationArg::None => Self::None,
        }
    }
}

/// The agent's GPU mode from `--gpus` and `--fake-gpus`.
pub fn gpu_mode(gpus: GpuMode, fake_gpus: Option<u32>) -> mezz_agent::gpu::GpuMode {
    match (fake_gpus, gpus) {
        (Some(n), _) => mezz_agent::gpu::GpuMode::Fake(n),
        (None, GpuMode::Auto) => mezz_agent::gpu::GpuMode::Auto,
        (None, GpuMode::None) => mezz_agent::gpu::GpuMode::None,
    }
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Master address(es), HOST:PORT[,HOST:PORT…].
    #[arg(long, value_name = "ADDR[,ADDR…]", env = mezz_proto::client::MASTER_ENV)]
    pub master: String,
    /// Address of the agent's own API (task sandboxes and logs).
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub listen: SocketAddr,
    /// Address announced to the master and clients (defaults to --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Directory for sandboxes and the agent's checkpoint (created if missing).
    #[arg(long)]
    pub work_dir: PathBuf,
    /// Resources to offer, overriding what is detected, e.g.
    /// 'cpus:4;mem:8192;disk:10000;ports:[31000-32000]'.
    #[arg(long)]
    pub resources: Option<String>,
    /// GPU discovery: `auto` finds NVIDIA GPUs through NVML (no driver: one
    /// log line, no GPUs); `none` advertises none.
    #[arg(long, value_enum, default_value = "auto")]
    pub gpus: GpuMode,
    /// Make G fake GPUs: device nodes WORK_DIR/dev/nvidia0… (major 195),
    /// advertised as fake-gpu-0…, for machines without NVIDIA. Needs root.
    #[arg(long, value_name = "G", conflicts_with = "gpus")]
    pub fake_gpus: Option<u32>,
    /// How the fake GPUs are connected, with the codes of `nvidia-smi topo
    /// -m`: comma-separated I-J=CODE pairs by index and `*=CODE` for the
    /// rest (default PHB), e.g. '0-1=NV4,2-3=NV4,*=SYS' (two NVLink pairs).
    #[arg(long, value_name = "SPEC", requires = "fake_gpus")]
    pub fake_gpu_topology: Option<String>,
    /// Task isolation: `auto` uses cgroups (cpu, memory, pids, devices) and
    /// PID/mount/UTS namespaces when running as root, and warns and runs
    /// tasks unconfined otherwise; `cgroups` makes that an error; `none`
    /// turns isolation off.
    #[arg(long, value_enum, default_value = "auto")]
    pub isolation: IsolationArg,
    /// Let tasks run as root when they, or their framework, ask for it
    /// (user "root"). Without it such a task fails to launch, and a
    /// framework's root user is replaced by --task-user.
    #[arg(long)]
    pub allow_root_tasks: bool,
    /// Who runs tasks that name no user: the framework's user when it
    /// exists on this machine (and is not root), else this one. It must
    /// exist, and be able to pass through the parent directories of
    /// --work-dir. Only an agent running as root switches users; otherwise
    /// tasks run as the agent's user.
    #[arg(long, value_name = "USER", default_value = mezz_agent::task_user::NOBODY)]
    pub task_user: String,
    /// A directory tasks must not see (repeatable), e.g. the data dir of a
    /// master on the same machine: each task's mount namespace covers it
    /// with an empty read-only directory. The agent's own --work-dir
    /// (other tasks' sandboxes, the checkpoint) is always hidden; a task
    /// sees only its own sandbox in it.
    #[arg(long, value_name = "DIR")]
    pub task_hidden_path: Vec<PathBuf>,
    /// The most processes and threads all tasks together may have
    /// (pids.max of the agent's parent cgroup). Each task gets 1024 per
    /// cpu, at least 256, never more than this. Default: half of the
    /// kernel's pid_max.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub task_pids_cap: Option<u64>,
    /// Hostname announced to the master (defaults to the machine's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// cpus and mem kept back per idle GPU, e.g. 'cpus:2;mem:8192':
    /// frameworks without the GPU capability are offered this agent's
    /// cpus, mem, disk and ports (never its GPUs) less this much for every
    /// GPU no task uses, so CPU-only work never leaves a GPU unusable.
    /// Default: half of the agent's cpus and mem, shared among its GPUs.
    #[arg(long, value_name = "RESOURCES")]
    pub gpu_reserve: Option<String>,
    #[command(flatten)]
    pub tls_server: super::tls::ServerTlsArgs,
}

pub fn parse_resources(text: Option<&str>) -> Result<Option<Resources>> {
    text.map(|t| Resources::parse(t).map_err(|e| anyhow!("--resources: {e}")))
        .transpose()
}

/// The task wrapper embedded in this binary at build time: statically
/// linked, so that its exec (one per launch) skips the dynamic loader and
/// glibc's start-up (see `build.rs`). `None` where the build had no musl
/// target to make it with.
#[cfg(static_wrapper)]
const STATIC_WRAPPER: Option<&[u8]> = Some(include_bytes!(concat!(
    env!("OUT_DIR"),
    "/mezz-task-wrapper-static"
)));
#[cfg(not(static_wrapper))]
const STATIC_WRAPPER: Option<&[u8]> = None;

/// The program agents launch tasks with: the embedded static wrapper,
/// installed as `DIR/bin/mezz-task-wrapper` (written again only when it
/// differs from this binary's), else the `mezz-task-wrapper` beside
/// `mezz` (or `mezz` itself; see `mezz_agent::launcher_beside`).
pub fn task_launcher(dir: &std::path::Path) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the mezz binary to launch tasks with")?;
    let Some(bytes) = STATIC_WRAPPER else {
        return Ok(mezz_agent::launcher_beside(&exe));
    };
    match install_wrapper(dir, bytes) {
        Ok(path) => Ok(path),
        Err(e) => {
            let fallback = mezz_agent::launcher_beside(&exe);
            tracing::warn!(
                "cannot install the static task wrapper under {}: {e}; launching tasks with {}",
                dir.display(),
                fallback.display()
            );
            Ok(fallback)
        }
    }
}

/// Writes `bytes` as the executable `DIR/bin/mezz-task-wrapper` unless it
/// is there already: a new file renamed into place, so that wrappers
/// running the old one are not disturbed.
fn install_wrapper(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let path = bin.join(mezz_agent::WRAPPER_PROGRAM);
    if std::fs::read(&path).is_ok_and(|b| b == bytes) {
        return Ok(path);
    }
    let tmp = bin.join(format!(
        ".{}.{}",
        mezz_agent::WRAPPER_PROGRAM,
        std::process::id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|_| path)
}

pub fn config(args: &AgentArgs) -> Result<mezz_agent::Config> {
    let masters = mezz_proto::client::parse_master_list(&args.master)
        .map_err(|e| anyhow!("--master: {e}"))?;
    // Tasks start in their sandbox, in a mount namespace of their own: a
    // work dir given relative to where the agent was started would not
    // lead there from the task wrapper.
    let work_dir = std::path::absolute(&args.work_dir)
        .with_context(|| format!("--work-dir {}", args.work_dir.display()))?;
    Ok(mezz_agent::Config {
        masters,
        listen: args.listen,
        advertise_address: args.advertise.clone(),
        resources: parse_resources(args.resources.as_deref())?,
        hostname: args.hostname.clone(),
        launcher: task_launcher(&work_dir)?,
        work_dir,
        default_kill_grace: std::time::Duration::from_secs(5),
        kill_tasks_on_shutdown: false,
        isolation: args.isolation.into(),
        cgroup_root: "mezzanine".into(),
        gpus: gpu_mode(args.gpus, args.fake_gpus),
        fake_gpu_topology: args.fake_gpu_topology.clone(),
        allow_root_tasks: args.allow_root_tasks,
        gpu_reserve: args
            .gpu_reserve
            .as_deref()
            .map(mezz_proto::holdback::parse_gpu_reserve)
            .transpose()
            .map_err(|e| anyhow!("--gpu-reserve: {e}"))?,
        task_user: mezz_agent::task_user::DefaultTaskUser::Named(args.task_user.clone()),
        task_hidden_paths: args.task_hidden_path.clone(),
        task_pids_cap: args.task_pids_cap,
        tls: None,
        // --credentials (global), $MEZZ_CREDENTIALS or $MEZZ_TOKEN.
        token: crate::client::credentials()?,
    })
}

/// `mezz agent`, with TLS on its own API from `--tls-cert`, `--tls-key`,
/// `--tls-ca` and `--tls-client-auth`.
pub async fn main(args: AgentArgs, tls: &super::tls::TlsArgs) -> Result<ExitCode> {
    let mut config = config(&args)?;
    config.tls = tls.server(&args.tls_server)?;
    if config.tls.is_some() && tls.tls_ca.is_none() {
        return Err(anyhow!(
            "--tls-cert: also pass --tls-ca, the CA that signed the masters' certificates; the agent trusts it when it calls them"
        ));
    }
    mezz_agent::run(config, super::shutdown_signal())
        .await
        .context("agent stopped")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_wrapper_is_written_once_and_replaced_when_it_differs() {
        let dir = tempfile::tempdir().unwrap();
        let path = install_wrapper(dir.path(), b"first").unwrap();
        assert_eq!(
            path,
            dir.path().join("bin").join(mezz_agent::WRAPPER_PROGRAM)
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "mode {mode:o}");
        let inode = |p: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).unwrap().ino()
        };
        let before = inode(&path);
        // The same bytes: left as it is (wrappers may be running it).
        install_wrapper(dir.path(), b"first").unwrap();
        assert_eq!(inode(&path), before);
        // Other bytes (a new `mezz`): a new file takes its place.
        install_wrapper(dir.path(), b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_ne!(inode(&path), before);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            [std::ffi::OsString::from(mezz_agent::WRAPPER_PROGRAM)]
        );
    }

    #[test]
    fn the_launcher_is_the_embedded_wrapper_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = task_launcher(dir.path()).unwrap();
        match STATIC_WRAPPER {
            Some(bytes) => {
                assert_eq!(
                    launcher,
                    dir.path().join("bin").join(mezz_agent::WRAPPER_PROGRAM)
                );
                assert_eq!(std::fs::read(&launcher).unwrap(), bytes);
                // It is a program that runs here, and refuses a bad spec
                // the way the wrapper does.
                let out = std::process::Command::new(&launcher)
                    .args(["__launch", "/nonexistent/launch.json"])
                    .output()
                    .unwrap();
                assert_eq!(out.status.code(), Some(2));
                let said = String::from_utf8_lossy(&out.stdout);
                assert!(
                    said.starts_with("failed cannot read the launch spec"),
                    "{said}"
                );
            }
            // Built without a musl target: the wrapper beside `mezz` (or
            // `mezz` itself), and nothing written.
            None => {
                let exe = std::env::current_exe().unwrap();
                assert_eq!(launcher, mezz_agent::launcher_beside(&exe));
                assert!(!dir.path().join("bin").exists());
            }
        }
    }
}
