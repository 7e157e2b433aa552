//! One Spark application: what was asked for (executors, memory, the app
//! and its arguments), the resources each of its tasks needs, and the
//! command lines of the master, the workers and the driver. Pure: no
//! process is started and no file is read here.

use mezz_sdk::{CPUS, MEM};
use std::fmt;
use std::path::PathBuf;

use mezz_sdk::{Resources, TaskBuilder, TaskRequest};

/// Heap of the master and worker daemons (`SPARK_DAEMON_MEMORY`). Spark's
/// default of 1 GiB is far more than a daemon of one application needs.
pub const DAEMON_HEAP_MB: u64 = 256;
/// Memory of the master task: the daemon's heap and the JVM around it.
pub const MASTER_MEM_MB: f64 = 512.0;
/// CPUs of the master task. A JVM held to half a CPU takes many seconds
/// to start, which every executor then waits for.
pub const MASTER_CPUS: f64 = 1.0;
/// Memory a worker task needs beyond its executor's heap: the worker
/// daemon, the executor JVM's own overhead and PySpark's Python workers.
pub const WORKER_OVERHEAD_MB: u64 = 768;
/// Memory the driver task needs beyond the driver's heap (the JVM's
/// overhead and, for PySpark, the Python process).
pub const DRIVER_OVERHEAD_MB: u64 = 512;
/// CPUs of the driver task.
pub const DRIVER_CPUS: f64 = 1.0;
/// Ports: master (RPC, UI), worker (RPC, UI), driver (RPC, block
/// manager, UI).
pub const MASTER_PORTS: usize = 2;
/// See [`MASTER_PORTS`].
pub const WORKER_PORTS: usize = 2;
/// See [`MASTER_PORTS`].
pub const DRIVER_PORTS: usize = 3;

/// Where Spark and the programs it needs are, on every agent (the same
/// paths as where the application is submitted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparkInstall {
    /// `SPARK_HOME`: has `bin/spark-class` and `bin/spark-submit`.
    pub home: PathBuf,
    /// `JAVA_HOME`, when one was set or found; else `java` on PATH.
    pub java_home: Option<PathBuf>,
    /// The Python of PySpark drivers and executors.
    pub python: Option<PathBuf>,
}

/// One task kind of an application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The standalone master.
    Master,
    /// Worker `i` (one executor).
    Worker(u32),
    /// The driver (`spark-submit`).
    Driver,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Master => write!(f, "master"),
            Role::Worker(i) => write!(f, "worker/{i}"),
            Role::Driver => write!(f, "driver"),
        }
    }
}

/// An application as submitted.
#[derive(Clone, Debug, PartialEq)]
pub struct AppSpec {
    /// The application's id: its name and a random suffix. Task ids and
    /// the framework's name are made from it.
    pub id: String,
    /// `spark.app.name`.
    pub name: String,
    /// The application: an absolute path to a `.py` file or a jar.
    pub app: PathBuf,
    /// The application's arguments.
    pub args: Vec<String>,
    /// The main class of a jar.
    pub class: Option<String>,
    /// Executors (one worker task each).
    pub executors: u32,
    /// Cores of each executor.
    pub executor_cores: u32,
    /// Heap of each executor, MB.
    pub executor_memory_mb: u64,
    /// Heap of the driver, MB.
    pub driver_memory_mb: u64,
    /// Whole GPUs given to each worker task (`CUDA_VISIBLE_DEVICES`).
    pub gpus_per_executor: u32,
    /// `--conf k=v` pairs, in order.
    pub conf: Vec<(String, String)>,
    /// `--py-files`, absolute paths.
    pub py_files: Vec<String>,
    /// Where Spark, Java and Python are.
    pub install: SparkInstall,
}

/// Where a placed task listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The agent's advertised host.
    pub host: String,
    /// The ports its offer gave, in the order of its role's constants.
    pub ports: Vec<u64>,
}

impl Endpoint {
    fn port(&self, i: usize) -> u64 {
        self.ports.get(i).copied().unwrap_or(0)
    }
}

/// Parses a Spark memory size (`512m`, `2g`, `1.5g`, `1024` = MB) into MB.
pub fn parse_memory_mb(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, factor) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1.0 / 1024.0),
        Some('m') => (&t[..t.len() - 1], 1.0),
        Some('g') => (&t[..t.len() - 1], 1024.0),
        Some('t') => (&t[..t.len() - 1], 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let mb = number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
        .map(|n| (n * factor).round())
        .filter(|mb| *mb >= 1.0)
        .ok_or_else(|| format!("'{text}' is not a memory size; write e.g. 512m or 2g"))?;
    Ok(mb as u64)
}

impl AppSpec {
    /// The framework's name: how `mezz spark ls` and `kill` find it.
    pub fn framework_name(&self) -> String {
        format!("{FRAMEWORK_PREFIX}{}", self.id)
    }

    /// The task id of `role` (workers count their replacements in
    /// `attempt`).
    pub fn task_id(&self, role: Role, attempt: u32) -> String {
        match role {
            Role::Master => format!("{}.master", self.id),
            Role::Driver => format!("{}.driver", self.id),
            Role::Worker(i) => format!("{}.worker.{i}.{attempt}", self.id),
        }
    }

    /// The role and attempt of one of this application's task ids.
    pub fn role_of(&self, task_id: &str) -> Option<(Role, u32)> {
        let rest = task_id.strip_prefix(&self.id)?.strip_prefix('.')?;
        match rest {
            "master" => Some((Role::Master, 0)),
            "driver" => Some((Role::Driver, 0)),
            _ => {
                let (i, attempt) = rest.strip_prefix("worker.")?.split_once('.')?;
                Some((Role::Worker(i.parse().ok()?), attempt.parse().ok()?))
            }
        }
    }

    /// The resources of `role`'s task (ports are added by placement).
    pub fn resources(&self, role: Role) -> Resources {
        let (cpus, mem) = match role {
            Role::Master => (MASTER_CPUS, MASTER_MEM_MB),
            Role::Worker(_) => (
                f64::from(self.executor_cores),
                (self.executor_memory_mb + WORKER_OVERHEAD_MB) as f64,
            ),
            Role::Driver => (
                DRIVER_CPUS,
                (self.driver_memory_mb + DRIVER_OVERHEAD_MB) as f64,
            ),
        };
        Resources::new()
            .with_scalar(CPUS, cpus)
            .with_scalar(MEM, mem)
    }

    /// The placement request of `role`'s task.
    pub fn request(&self, role: Role, attempt: u32) -> TaskRequest {
        let r = TaskRequest::new(self.task_id(role, attempt), self.resources(role));
        match role {
            Role::Master => r.ports(MASTER_PORTS),
            Role::Worker(_) => r.ports(WORKER_PORTS).gpus(self.gpus_per_executor as usize),
            Role::Driver => r.ports(DRIVER_PORTS),
        }
    }

    /// The whole application's gang: workers first (so that spreading
    /// puts them on different agents before anything else), then the
    /// master, then the driver.
    pub fn gang(&self) -> Vec<TaskRequest> {
        (0..self.executors)
            .map(|i| self.request(Role::Worker(i), 0))
            .chain([self.request(Role::Master, 0), self.request(Role::Driver, 0)])
            .collect()
    }

    /// The role of the gang's request `index`.
    pub fn gang_role(&self, index: usize) -> Role {
        let n = self.executors as usize;
        if index < n {
            Role::Worker(index as u32)
        } else if index == n {
            Role::Master
        } else {
            Role::Driver
        }
    }

    fn bin(&self, program: &str) -> String {
        self.install
            .home
            .join("bin")
            .join(program)
            .display()
            .to_string()
    }

    /// The task of `role`, listening on `at`, with the master at `master`
    /// (host and its RPC port). Workers and the driver wait for the
    /// master's port first, so the whole gang can start at once.
    pub fn task(&self, role: Role, attempt: u32, at: &Endpoint, master: &Endpoint) -> TaskBuilder {
        let master_url = format!("spark://{}:{}", master.host, master.port(0));
        let mut program = vec![];
        let mut env: Vec<(String, String)> = vec![
            ("SPARK_HOME".into(), self.install.home.display().to_string()),
            // Daemons and the driver bind this address, never the wildcard.
            ("SPARK_LOCAL_IP".into(), at.host.clone()),
            ("SPARK_PUBLIC_DNS".into(), at.host.clone()),
            ("SPARK_DAEMON_MEMORY".into(), format!("{DAEMON_HEAP_MB}m")),
        ];
        if let Some(java) = &self.install.java_home {
            env.push(("JAVA_HOME".into(), java.display().to_string()));
        }
        if let Some(python) = &self.install.python {
            let p = python.display().to_string();
            env.push(("PYSPARK_PYTHON".into(), p.clone()));
            env.push(("PYSPARK_DRIVER_PYTHON".into(), p));
        }
        match role {
            Role::Master => {
                env.push((
                    "SPARK_MASTER_OPTS".into(),
                    "-Dspark.master.rest.enabled=false".into(),
                ));
                program.extend([
                    self.bin("spark-class"),
                    "org.apache.spark.deploy.master.Master".into(),
                    "--host".into(),
                    at.host.clone(),
                    "--port".into(),
                    at.port(0).to_string(),
                    "--webui-port".into(),
                    at.port(1).to_string(),
                ]);
            }
            Role::Worker(_) => {
                env.push(("MEZZ_SPARK_WAIT".into(), master_endpoint(master)));
                program.extend([
                    self.bin("spark-class"),
                    "org.apache.spark.deploy.worker.Worker".into(),
                    "--host".into(),
                    at.host.clone(),
                    "--port".into(),
                    at.port(0).to_string(),
                    "--webui-port".into(),
                    at.port(1).to_string(),
                    "--cores".into(),
                    self.executor_cores.to_string(),
                    "--memory".into(),
                    format!("{}m", self.executor_memory_mb),
                    master_url,
                ]);
            }
            Role::Driver => {
                env.push(("MEZZ_SPARK_WAIT".into(), master_endpoint(master)));
                program.extend(self.submit_args(&master_url, at));
            }
        }
        let mut b = TaskBuilder::exec(
            self.task_id(role, attempt),
            "bash",
            ["-c".to_string(), WRAPPER.to_string(), "mezz-spark".into()]
                .into_iter()
                .chain(program),
        )
        .name(format!("{}/{role}", self.id))
        .label(LABEL_APP, self.id.clone())
        .label(LABEL_ROLE, role.to_string())
        .kill_grace(KILL_GRACE);
        for (k, v) in env {
            b = b.env(k, v);
        }
        match role {
            Role::Master => b.label("url", ui_url(&at.host, at.port(1))),
            Role::Driver => b.label("url", ui_url(&at.host, at.port(2))),
            Role::Worker(_) => b,
        }
    }

    /// `spark-submit …`: the driver in client mode, on the offered ports.
    fn submit_args(&self, master_url: &str, at: &Endpoint) -> Vec<String> {
        let mut a = vec![
            self.bin("spark-submit"),
            "--master".into(),
            master_url.into(),
            "--deploy-mode".into(),
            "client".into(),
            "--name".into(),
            self.name.clone(),
            "--driver-memory".into(),
            format!("{}m", self.driver_memory_mb),
        ];
        let mut conf = |k: &str, v: String| {
            a.push("--conf".into());
            a.push(format!("{k}={v}"));
        };
        conf(
            "spark.executor.memory",
            format!("{}m", self.executor_memory_mb),
        );
        conf("spark.executor.cores", self.executor_cores.to_string());
        // One executor per worker, and no more than the workers asked for.
        conf(
            "spark.cores.max",
            (self.executors * self.executor_cores).to_string(),
        );
        if let Some(python) = &self.install.python {
            conf("spark.pyspark.python", python.display().to_string());
        }
        for (k, v) in &self.conf {
            conf(k, v.clone());
        }
        // Last, so that they win: the addresses and ports are the offer's.
        conf("spark.driver.host", at.host.clone());
        conf("spark.driver.bindAddress", at.host.clone());
        conf("spark.driver.port", at.port(0).to_string());
        conf("spark.driver.blockManager.port", at.port(1).to_string());
        conf("spark.ui.port", at.port(2).to_string());
        // A taken port is an error, not a reason to try the next one,
        // which the offer did not give.
        conf("spark.port.maxRetries", "0".into());
        conf("spark.master.rest.enabled", "false".into());
        if let Some(class) = &self.class {
            a.extend(["--class".into(), class.clone()]);
        }
        if !self.py_files.is_empty() {
            a.extend(["--py-files".into(), self.py_files.join(",")]);
        }
        a.push(self.app.display().to_string());
        a.extend(self.args.iter().cloned());
        a
    }
}

/// The prefix of every Spark application's framework name.
pub const FRAMEWORK_PREFIX: &str = "mezz-spark ";
/// Task label: the application's id.
pub const LABEL_APP: &str = "mezz-spark-app";
/// Task label: the task's role (`master`, `worker/0`, `driver`).
pub const LABEL_ROLE: &str = "mezz-spark-role";
/// Time between SIGTERM and SIGKILL: Spark's shutdown hooks get a moment
/// to clean up.
pub const KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

fn master_endpoint(master: &Endpoint) -> String {
    format!("{}:{}", master.host, master.port(0))
}

/// A web UI's URL on `host:port`.
pub fn ui_url(host: &str, port: u64) -> String {
    if host.contains(':') {
        format!("http://[{host}]:{port}/")
    } else {
        format!("http://{host}:{port}/")
    }
}

/// Run by `bash -c` around every Spark process. Spark's scratch space
/// (`TMPDIR`, `SPARK_LOCAL_DIRS`, the worker's directory, and the JVMs'
/// `java.io.tmpdir`: the daemons' through `SPARK_DAEMON_JAVA_OPTS`, the
/// driver's through `SPARK_SUBMIT_OPTS`) goes into the task's sandbox, so it is the agent's to clean; workers and the driver
/// wait (bounded) for the master's port, so the whole gang can be
/// launched at once and Spark's slow registration retries never happen.
const WRAPPER: &str = r#"
sb="${MEZZ_SANDBOX:-$PWD}"
mkdir -p "$sb/tmp" "$sb/spark-local" "$sb/work" || exit 1
export TMPDIR="$sb/tmp" SPARK_LOCAL_DIRS="$sb/spark-local" SPARK_WORKER_DIR="$sb/work"
export SPARK_DAEMON_JAVA_OPTS="-Djava.io.tmpdir=$sb/tmp $SPARK_DAEMON_JAVA_OPTS"
export SPARK_SUBMIT_OPTS="-Djava.io.tmpdir=$sb/tmp $SPARK_SUBMIT_OPTS"
if [ -n "$MEZZ_SPARK_WAIT" ]; then
  host="${MEZZ_SPARK_WAIT%:*}"; port="${MEZZ_SPARK_WAIT##*:}"; n=0
  until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
    n=$((n + 1))
    if [ "$n" -gt 1800 ]; then
      echo "mezz-spark: the Spark master at $MEZZ_SPARK_WAIT did not answer within 3 minutes" >&2
      exit 1
    fi
    sleep 0.1
  done
fi
exec "$@"
"#;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> AppSpec {
        AppSpec {
            id: "pi-1a2b".into(),
            name: "pi".into(),
            app: "/apps/pi.py".into(),
            args: vec!["10".into()],
            class: None,
            executors: 2,
            executor_cores: 1,
            executor_memory_mb: 1024,
            driver_memory_mb: 512,
            gpus_per_executor: 0,
            conf: vec![("spark.sql.shuffle.partitions".into(), "4".into())],
            py_files: vec![],
            install: SparkInstall {
                home: "/opt/spark".into(),
                java_home: None,
                python: Some("/venv/bin/python".into()),
            },
        }
    }

    #[test]
    fn memory_sizes_read_like_spark() {
        assert_eq!(parse_memory_mb("2g"), Ok(2048));
        assert_eq!(parse_memory_mb("512m"), Ok(512));
        assert_eq!(parse_memory_mb("1.5G"), Ok(1536));
        assert_eq!(parse_memory_mb("768"), Ok(768));
        assert_eq!(parse_memory_mb("2gb"), Ok(2048));
        for bad in ["", "g", "-1g", "0", "lots", "1k"] {
            assert!(parse_memory_mb(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn task_ids_name_their_role() {
        let s = spec();
        for (role, attempt) in [(Role::Master, 0), (Role::Driver, 0), (Role::Worker(1), 3)] {
            let id = s.task_id(role, attempt);
            assert_eq!(s.role_of(&id), Some((role, attempt)), "{id}");
        }
        assert_eq!(s.role_of("pi-1a2bx.master"), None);
        assert_eq!(s.role_of("other.driver"), None);
        let roles: Vec<Role> = (0..4).map(|i| s.gang_role(i)).collect();
        assert_eq!(
            roles,
            [Role::Worker(0), Role::Worker(1), Role::Master, Role::Driver]
        );
        assert_eq!(s.gang().len(), 4);
    }

    #[test]
    fn every_daemon_binds_the_agent_host_and_offered_ports() {
        let s = spec();
        let master = Endpoint {
            host: "10.0.0.5".into(),
            ports: vec![31000, 31001],
        };
        let at = Endpoint {
            host: "10.0.0.6".into(),
            ports: vec![32000, 32001, 32002],
        };
        let offer = mezz_sdk::proto::Offer::default();
        let driver = s.task(Role::Driver, 0, &at, &master).build(&offer);
        let cmd = driver.command.expect("command");
        assert_eq!(cmd.value, "bash");
        let args = cmd.arguments.join(" ");
        for want in [
            "--master spark://10.0.0.5:31000 --deploy-mode client",
            "spark.driver.host=10.0.0.6",
            "spark.driver.bindAddress=10.0.0.6",
            "spark.driver.port=32000",
            "spark.driver.blockManager.port=32001",
            "spark.ui.port=32002",
            "spark.cores.max=2",
            "spark.sql.shuffle.partitions=4",
            "/apps/pi.py 10",
        ] {
            assert!(args.contains(want), "{want} in {args}");
        }
        assert_eq!(cmd.environment["SPARK_LOCAL_IP"], "10.0.0.6");
        assert_eq!(cmd.environment["MEZZ_SPARK_WAIT"], "10.0.0.5:31000");
        assert_eq!(driver.labels["url"], "http://10.0.0.6:32002/");

        let m = s.task(Role::Master, 0, &master, &master).build(&offer);
        let cmd = m.command.expect("command");
        let args = cmd.arguments.join(" ");
        assert!(args.contains("--host 10.0.0.5 --port 31000 --webui-port 31001"));
        assert!(cmd.environment["SPARK_MASTER_OPTS"].contains("rest.enabled=false"));
        assert!(!cmd.environment.contains_key("MEZZ_SPARK_WAIT"));
        assert_eq!(m.labels["url"], "http://10.0.0.5:31001/");

        let w = s.task(Role::Worker(1), 2, &at, &master).build(&offer);
        assert_eq!(w.task_id, "pi-1a2b.worker.1.2");
        assert_eq!(w.name, "pi-1a2b/worker/1");
        let args = w.command.expect("command").arguments.join(" ");
        assert!(args.contains("--cores 1 --memory 1024m spark://10.0.0.5:31000"));
        assert_eq!(s.resources(Role::Worker(0)).to_string(), "cpus:1;mem:1792");
    }
}
