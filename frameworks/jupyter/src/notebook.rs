//! What a notebook is: its persisted record (the desired state), the
//! request that creates one, the Jupyter server command line, its URLs and
//! the idle clock. Pure: no sockets, no files, no clocks of its own.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The longest notebook name (it becomes part of task ids).
pub const MAX_NAME_LEN: usize = 40;

/// Checks a notebook name: 1 to 40 of `a-z`, `0-9`, `-`, `_`, starting
/// with a letter or digit. Task ids and directory names are made from it.
///
/// ```
/// use mezz_jupyter::notebook::validate_name;
/// assert!(validate_name("t1").is_ok());
/// assert!(validate_name("my_notebook-2").is_ok());
/// assert!(validate_name("../etc").is_err());
/// assert!(validate_name("").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > MAX_NAME_LEN || !starts_well || !name.chars().all(ok_char) {
        return Err(Error::BadRequest(format!(
            "notebook name '{name}' is not valid: use 1 to {MAX_NAME_LEN} lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// What `mezz jupyter start` asks the framework for.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StartRequest {
    /// The notebook's name; the framework picks `nb-N` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// CPUs of the server (its kernels share them).
    pub cpus: f64,
    /// Memory of the server in MB.
    pub mem: f64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// Stop the server after this long without activity; `None`: never.
    #[serde(default)]
    pub idle_timeout_secs: Option<f64>,
    /// The notebook directory (absolute, on the agent's host); when absent
    /// it is `notebook_root/NAME`.
    #[serde(default)]
    pub notebook_dir: Option<String>,
    /// Where per-notebook directories go when `notebook_dir` is absent.
    pub notebook_root: String,
    /// The Python that runs the server.
    pub python: String,
    /// Run JupyterLab (`python -m jupyterlab`) rather than the bare
    /// `jupyter_server`.
    #[serde(default)]
    pub lab: bool,
}

/// One notebook the framework keeps: the desired state, persisted in the
/// state directory (so the token is there too: the directory is the
/// owner's alone).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Notebook {
    /// Its name.
    pub name: String,
    /// Which incarnation of the name this is: task ids are
    /// `jupyter-NAME-SERIAL.ATTEMPT`, so a name used again never meets
    /// the tasks of its predecessor.
    pub serial: u64,
    /// CPUs.
    pub cpus: f64,
    /// Memory in MB.
    pub mem: f64,
    /// Whole GPUs.
    pub gpus: u32,
    /// The server's token (256 random bits, hex).
    pub token: String,
    /// Idle timeout; `None`: never stopped for idleness.
    pub idle_timeout_secs: Option<f64>,
    /// Where the notebooks live on the agent's host.
    pub notebook_dir: String,
    /// The Python that runs the server.
    pub python: String,
    /// JupyterLab rather than the bare server.
    pub lab: bool,
    /// The agent it runs on once placed: restarts go back there, to the
    /// same files.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// That agent's host, as clients reach it.
    #[serde(default)]
    pub host: Option<String>,
    /// The port it listens on; a restart asks for the same one first, so
    /// the URL stays.
    #[serde(default)]
    pub port: Option<u16>,
}

impl Notebook {
    /// The task tracker's key for this notebook.
    pub fn key(&self) -> String {
        format!("jupyter-{}-{}", self.name, self.serial)
    }

    /// The URL without the token (what the status page shows).
    pub fn url(&self) -> Option<String> {
        Some(server_url(self.host.as_deref()?, self.port?, self.lab))
    }

    /// The URL with the token (for the owner only).
    pub fn url_with_token(&self) -> Option<String> {
        Some(format!("{}?token={}", self.url()?, self.token))
    }

    /// The server's address, `HOST:PORT`.
    pub fn address(&self) -> Option<String> {
        let host = self.host.as_deref()?;
        let port = self.port?;
        Some(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        })
    }
}

/// `http://HOST:PORT/lab` (or `/tree`-less `/` for the bare server, which
/// has no user interface of its own).
pub fn server_url(host: &str, port: u16, lab: bool) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!("http://{host}:{port}/{}", if lab { "lab" } else { "" })
}

/// The server's command line: `/bin/sh` makes the notebook directory and
/// enters it, then execs Python, so the server is the task's process. The token is not on
/// the command line (the status page and `ps` show command lines); it goes
/// in `JUPYTER_TOKEN`, read by every jupyter_server since 1.x.
///
/// ```
/// use mezz_jupyter::notebook::server_argv;
/// let argv = server_argv("python3", false, "10.0.0.5", 31000, "/home/u/nb");
/// assert_eq!(argv[0], "/bin/sh");
/// assert!(argv.contains(&"--ServerApp.ip=10.0.0.5".to_string()));
/// assert!(argv.contains(&"--ServerApp.port=31000".to_string()));
/// assert!(argv.contains(&"jupyter_server".to_string()));
/// assert!(!argv.iter().any(|a| a.contains("token")));
/// ```
pub fn server_argv(python: &str, lab: bool, host: &str, port: u16, dir: &str) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "/bin/sh".into(),
        "-c".into(),
        // In the notebook directory: kernels started without a path (the
        // REST API's default) work there too, not in the sandbox.
        r#"mkdir -p -- "$MEZZ_NOTEBOOK_DIR" && cd -- "$MEZZ_NOTEBOOK_DIR" && exec "$@""#.into(),
        "jupyter".into(),
        python.into(),
        "-m".into(),
        if lab { "jupyterlab" } else { "jupyter_server" }.into(),
        format!("--ServerApp.ip={host}"),
        format!("--ServerApp.port={port}"),
        // The port is the one the offer gave: never wander to another.
        "--ServerApp.port_retries=0".into(),
        "--ServerApp.open_browser=False".into(),
        format!("--ServerApp.root_dir={dir}"),
        // The agent decides whom tasks run as; where that is root (as in
        // `mezz dev` started by root), Jupyter would refuse to start.
        "--ServerApp.allow_root=True".into(),
    ];
    if lab {
        // No calls home from a cluster machine: no news feed, no update
        // checks.
        argv.push("--LabApp.news_url=None".into());
        argv.push("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate".into());
    }
    argv
}

/// The server's environment besides what the agent gives every task.
pub fn server_env(nb: &Notebook) -> Vec<(String, String)> {
    vec![
        ("JUPYTER_TOKEN".into(), nb.token.clone()),
        ("MEZZ_NOTEBOOK_DIR".into(), nb.notebook_dir.clone()),
        // Jupyter's own directories in the sandbox ($HOME there), without
        // the deprecation warning of the old layout.
        ("JUPYTER_PLATFORM_DIRS".into(), "1".into()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ]
}

/// What a server reported about its activity: `/api/status`'s
/// `last_activity` and every kernel's `last_activity` and
/// `execution_state` from `/api/kernels`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// A digest of the reported stamps: when it changes, something
    /// happened.
    pub stamps: String,
    /// A kernel is executing right now.
    pub busy: bool,
}

impl Activity {
    /// Reads the two JSON answers.
    ///
    /// ```
    /// use mezz_jupyter::notebook::Activity;
    /// let status = serde_json::json!({"last_activity": "2026-01-01T00:00:00Z"});
    /// let kernels = serde_json::json!([{"id": "k", "last_activity": "2026-01-01T00:00:05Z", "execution_state": "busy"}]);
    /// let a = Activity::from_api(&status, &kernels);
    /// assert!(a.busy);
    /// assert!(a.stamps.contains("00:00:05"));
    /// ```
    pub fn from_api(status: &serde_json::Value, kernels: &serde_json::Value) -> Activity {
        let mut stamps = status["last_activity"].as_str().unwrap_or("").to_string();
        let mut busy = false;
        for k in kernels.as_array().into_iter().flatten() {
            stamps.push('|');
            stamps.push_str(k["id"].as_str().unwrap_or(""));
            stamps.push('@');
            stamps.push_str(k["last_activity"].as_str().unwrap_or(""));
            busy |= k["execution_state"].as_str() == Some("busy");
        }
        Activity { stamps, busy }
    }
}

/// The idle clock of one server. Jupyter's timestamps come from the agent's
/// clock; rather than compare clocks, the framework notes when the reported
/// stamps last changed on its own clock.
#[derive(Clone, Debug)]
pub struct IdleClock {
    last: Option<Activity>,
    active_at: Instant,
}

impl IdleClock {
    /// A clock that counts from `now`.
    pub fn new(now: Instant) -> Self {
        IdleClock {
            last: None,
            active_at: now,
        }
    }

    /// Takes a report; returns how long the server has been idle.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use mezz_jupyter::notebook::{Activity, IdleClock};
    /// let t0 = Instant::now();
    /// let mut clock = IdleClock::new(t0);
    /// let quiet = Activity { stamps: "a".into(), busy: false };
    /// assert_eq!(clock.observe(quiet.clone(), t0 + Duration::from_secs(5)), Duration::from_secs(5));
    /// let typed = Activity { stamps: "b".into(), busy: false };
    /// assert_eq!(clock.observe(typed, t0 + Duration::from_secs(6)), Duration::ZERO);
    /// ```
    pub fn observe(&mut self, activity: Activity, now: Instant) -> Duration {
        let changed = self
            .last
            .as_ref()
            .is_some_and(|l| l.stamps != activity.stamps);
        if changed || activity.busy {
            self.active_at = now;
        }
        self.last = Some(activity);
        self.idle(now)
    }

    /// How long since the last activity seen.
    pub fn idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.active_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nb() -> Notebook {
        Notebook {
            name: "t1".into(),
            serial: 3,
            cpus: 1.0,
            mem: 512.0,
            gpus: 0,
            token: "ab".into(),
            idle_timeout_secs: None,
            notebook_dir: "/n/t1".into(),
            python: "python3".into(),
            lab: true,
            agent_id: None,
            host: Some("10.1.2.3".into()),
            port: Some(31000),
        }
    }

    #[test]
    fn urls_carry_the_token_only_when_asked() {
        let n = nb();
        assert_eq!(n.url().unwrap(), "http://10.1.2.3:31000/lab");
        assert_eq!(
            n.url_with_token().unwrap(),
            "http://10.1.2.3:31000/lab?token=ab"
        );
        assert_eq!(n.key(), "jupyter-t1-3");
        let bare = Notebook { lab: false, ..nb() };
        assert_eq!(bare.url().unwrap(), "http://10.1.2.3:31000/");
        let v6 = Notebook {
            host: Some("::1".into()),
            ..nb()
        };
        assert_eq!(v6.address().unwrap(), "[::1]:31000");
        assert_eq!(Notebook { port: None, ..nb() }.url(), None);
    }

    #[test]
    fn lab_servers_are_told_not_to_call_home() {
        let argv = server_argv("py", true, "h", 1, "/d");
        assert!(argv.contains(&"jupyterlab".to_string()));
        assert!(argv.iter().any(|a| a.starts_with("--LabApp.news_url")));
        assert!(argv.contains(&"--ServerApp.root_dir=/d".to_string()));
        assert!(argv.contains(&"--ServerApp.port_retries=0".to_string()));
    }

    #[test]
    fn names_that_would_escape_a_directory_are_refused() {
        for bad in ["a/b", "a.b", "-a", "A", &"x".repeat(41)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_busy_kernel_is_activity() {
        let t0 = Instant::now();
        let mut c = IdleClock::new(t0);
        let same = Activity {
            stamps: "s".into(),
            busy: true,
        };
        let later = t0 + Duration::from_secs(9);
        assert_eq!(c.observe(same.clone(), later), Duration::ZERO);
        let idle = Activity {
            busy: false,
            ..same
        };
        assert_eq!(
            c.observe(idle, later + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
