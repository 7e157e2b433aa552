//! The agent's configuration as the `mezz agent` command hands it over. It
//! holds plain values only; flags are parsed and validated by the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`crate::run`] needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// Master addresses (`host:port`), already validated; tried in order.
    pub masters: Vec<String>,
    /// Where the agent's own gRPC API (`AgentFiles`) listens.
    pub listen: SocketAddr,
    /// Address told to the master (and so to frameworks and the CLI) for
    /// the agent API. Default: the address actually bound for `listen`.
    pub advertise_address: Option<String>,
    /// Root of everything the agent keeps: `meta/checkpoint`, `sandboxes/`.
    pub work_dir: PathBuf,
    /// `--resources`: names given here replace the detected ones.
    pub resources: Option<mezz_proto::Resources>,
    /// Hostname advertised to the master. Default: the machine's hostname.
    pub hostname: Option<String>,
    /// Program implementing the task wrapper; the agent runs
    /// `<launcher> __launch <sandbox>/.mezz/launch.json`.
    pub launcher: PathBuf,
    /// Time between SIGTERM and SIGKILL when neither the kill request nor
    /// the task names one.
    pub default_kill_grace: Duration,
    /// Kill every task when the agent stops, instead of leaving them to be
    /// re-attached by the next start. For throw-away clusters (`mezz dev`).
    pub kill_tasks_on_shutdown: bool,
    /// `--isolation`: cgroups and namespaces, or none.
    pub isolation: crate::isolation::IsolationMode,
    /// Parent cgroup of every task's cgroup, in each hierarchy.
    pub cgroup_root: String,
    /// `--gpus` / `--fake-gpus`.
    pub gpus: crate::gpu::GpuMode,
    /// `--fake-gpu-topology`: how fake GPUs are connected (see
    /// [`crate::gpu::fake::parse_topology`]).
    pub fake_gpu_topology: Option<String>,
    /// Tasks (or their frameworks) may ask to run as root.
    pub allow_root_tasks: bool,
    /// `--gpu-reserve`: cpus and mem per idle GPU that the master keeps
    /// back from frameworks without the GPU capability. `None`: the
    /// master's default share (see `mezz_proto::holdback`).
    pub gpu_reserve: Option<mezz_proto::Resources>,
    /// Who runs tasks that name no user that may be used: `--task-user`
    /// (`nobody`), or the agent's own user (`mezz dev`).
    pub task_user: crate::task_user::DefaultTaskUser,
    /// `--task-hidden-path`: directories besides the work dir that tasks
    /// must not see (a master's data dir on the same machine).
    pub task_hidden_paths: Vec<PathBuf>,
    /// `--task-pids-cap`: `pids.max` of the parent cgroup, the most
    /// processes and threads of all tasks together. `None`: half of the
    /// kernel's `pid_max`.
    pub task_pids_cap: Option<u64>,
    /// TLS on the agent's own API (`--tls-cert`, `--tls-key`, `--tls-ca`,
    /// `--tls-client-auth`); `None`: plaintext. Its calls to the masters
    /// use the process's client TLS ([`mezz_proto::tls::client_tls`]).
    pub tls: Option<std::sync::Arc<mezz_proto::tls::ServerTls>>,
    /// The bearer token presented to masters that require one
    /// (`--credentials FILE` or `$MEZZ_TOKEN`).
    pub token: Option<mezz_proto::auth::Token>,
}

impl Config {
    /// A configuration with the defaults for everything but the required
    /// values.
    pub fn new(
        masters: Vec<String>,
        listen: SocketAddr,
        work_dir: PathBuf,
        launcher: PathBuf,
    ) -> Self {
        Config {
            masters,
            listen,
            advertise_address: None,
            work_dir,
            resources: None,
            hostname: None,
            launcher,
            default_kill_grace: Duration::from_secs(5),
            kill_tasks_on_shutdown: false,
            isolation: Default::default(),
            cgroup_root: "mezzanine".into(),
            gpus: crate::gpu::GpuMode::None,
            fake_gpu_topology: None,
            allow_root_tasks: false,
            gpu_reserve: None,
            task_user: Default::default(),
            task_hidden_paths: Vec::new(),
            task_pids_cap: None,
            tls: None,
            token: None,
        }
    }
}

/// File name of the stand-alone task wrapper program, installed beside
/// `mezz`.
pub const WRAPPER_PROGRAM: &str = "mezz-task-wrapper";

/// The launcher for a `mezz` binary at `exe`: the stand-alone wrapper
/// beside it when there is one (it starts in a fraction of the time, since
/// it links no async runtime and none of the agent), else `exe` itself,
/// whose hidden `__launch` subcommand runs the same code.
pub fn launcher_beside(exe: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let small = exe.with_file_name(WRAPPER_PROGRAM);
    match std::fs::metadata(&small) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => small,
        _ => exe.to_path_buf(),
    }
}
