//! The command line's side of a framework daemon (see `mezz_sdk::daemon`):
//! find the daemon that answers for a state directory, or start one in the
//! background (`mezz FRAMEWORK daemon`, in its own session, its output in
//! the directory's `daemon.log`) and wait until it answers. Shared by the
//! framework commands that keep a daemon (`mezz jupyter`, `mezz serve`); what "answers"
//! means is the framework's health probe.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use mezz_sdk::daemon::{DaemonInfo, StateDir};

/// How long a daemon started in the background has to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many lines of the log a failed start shows.
const LOG_TAIL_LINES: usize = 10;

/// A framework whose commands talk to its daemon.
#[derive(Clone, Copy, Debug)]
pub struct FrameworkDaemon<'a> {
    /// The `mezz` sub-command whose `daemon` sub-command runs the daemon
    /// ("jupyter" for `mezz jupyter daemon`).
    pub command: &'a str,
    /// The framework's name in messages ("the jupyter daemon …").
    pub name: &'a str,
    /// Its kind in the default state directory's path (see
    /// `mezz_sdk::daemon::default_dir`).
    pub kind: &'a str,
}

impl FrameworkDaemon<'_> {
    /// The masters (`--master`, else the environment's) and the state
    /// directory (`--state-dir` made absolute, else the default for the
    /// masters) of a command.
    pub fn resolve(
        &self,
        master: Option<&str>,
        state_dir: Option<&Path>,
    ) -> Result<(Vec<String>, PathBuf)> {
        let masters = crate::client::masters(master)?;
        let dir = match state_dir {
            Some(d) => absolute(d)?,
            None => mezz_sdk::daemon::default_dir(self.kind, &masters)?,
        };
        Ok((masters, dir))
    }

    /// A client of the daemon of `state` that answers `probe` (given what
    /// `daemon.json` says, it returns a client once the daemon answers),
    /// starting one for `masters` in the background when none does.
    pub async fn client<C, P, F>(&self, masters: &[String], state: &StateDir, probe: P) -> Result<C>
    where
        P: Fn(DaemonInfo) -> F,
        F: Future<Output = Option<C>>,
    {
        if let Some(c) = live(state, &probe).await {
            return Ok(c);
        }
        let log = state.open_log()?;
        let exe = std::env::current_exe().context("locating the mezz binary")?;
        let mut cmd = Command::new(exe);
        cmd.args([
            self.command,
            "daemon",
            "--master",
            &masters.join(","),
            "--state-dir",
        ])
        .arg(state.path());
        if let Some((key, path)) = crate::client::credentials_env() {
            cmd.env(key, path);
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(super::tls::child_env())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("opening the daemon log")?)
        .stderr(log);
        // Its own session: no terminal, and Ctrl-C in this one does not reach it.
        // SAFETY: setsid is async-signal-safe and touches no memory of ours.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        let name = self.name;
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {name} daemon"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(c) = live(state, &probe).await {
                return Ok(c);
            }
            // Exit 0: another daemon won the lock; it will answer soon.
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    return Err(anyhow!(
                        "the {name} daemon exited ({status}); its log: {}\n{}",
                        state.log_file().display(),
                        log_tail(&state.log_file())
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "the {name} daemon did not come up within {} s; see {}",
                    START_TIMEOUT.as_secs(),
                    state.log_file().display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `p`, relative to the current directory when it is relative: the
/// daemon runs elsewhere and later.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("reading the current directory")?
        .join(p))
}

/// The daemon that answers, if any.
async fn live<C, P, F>(state: &StateDir, probe: &P) -> Option<C>
where
    P: Fn(DaemonInfo) -> F,
    F: Future<Output = Option<C>>,
{
    probe(state.daemon().ok()??).await
}

/// The last lines of the log at `path`.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_tail_is_its_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("daemon.log");
        let text: String = (1..=15).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path);
        assert!(
            tail.starts_with("line 6\n") && tail.ends_with("line 15"),
            "{tail}"
        );
        assert_eq!(log_tail(&tmp.path().join("none")), "");
    }

    #[tokio::test]
    async fn a_daemon_that_answers_is_used_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path().join("s"), "x").unwrap();
        let info = DaemonInfo {
            pid: 1,
            address: "127.0.0.1:1".into(),
            secret: "s".into(),
            masters: vec![],
        };
        state.set_daemon(&info).unwrap();
        let fw = FrameworkDaemon {
            command: "none",
            name: "none",
            kind: "none",
        };
        let got = fw
            .client(&[], &state, |i| async move { Some(i.pid) })
            .await
            .unwrap();
        assert_eq!(got, 1);
        // Nothing was started: no log was opened.
        assert!(!state.log_file().exists());
    }
}
