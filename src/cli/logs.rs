//! `mezz logs`: a task's stdout or stderr, read from its agent's sandbox,
//! optionally followed until the task ends. `mezz run` streams output with
//! the same `Tail`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use mezz_proto::v1::agent_files_client::AgentFilesClient;
use mezz_proto::v1::{ListFilesRequest, ReadFileRequest, TailFileRequest};
use mezz_proto::MAX_MESSAGE_BYTES;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The task id (see `mezz ps --all`), or its name (e.g. `JOB/worker/1`
    /// for a replica of a `mezz tf` job: its latest attempt).
    pub task: String,
    /// Print stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing new output until the task ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Print only the last N lines (found in the file's last MiB); with
    /// --follow, then keep printing from there.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// List the task's sandbox (or DIR inside it) instead of printing
    /// output: type, size, age and name of each entry.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "", conflicts_with_all = ["follow", "tail", "stderr"])]
    pub list: Option<String>,
}

/// A task's sandbox on its agent: one connection and one grant, shared
/// by the tails of its files (`mezz run` follows stdout and stderr over
/// them at once).
#[derive(Clone)]
pub struct Sandbox {
    client: AgentFilesClient<Channel>,
    framework_id: String,
    task_id: String,
    /// Held across a renewal, so that tails sharing it ask once.
    grant: Arc<tokio::sync::Mutex<Grant>>,
}

/// Reads one sandbox file of a task from its agent, from an offset on.
pub struct Tail {
    sandbox: Sandbox,
    path: String,
    offset: u64,
}

/// The master's grant to read this task's sandbox (see
/// `mezz_proto::grant`), renewed before it expires.
#[derive(Clone)]
enum Grant {
    /// Not asked yet, or due for renewal.
    Stale,
    /// This grant, until then (Unix seconds).
    Held(String, f64),
    /// The master asks for none (it authenticates nobody, or predates
    /// grants).
    NotNeeded,
}

/// Renew a grant this long before it expires.
const GRANT_MARGIN_SECS: f64 = 30.0;

/// Asks the leading master for a grant to read a task's sandbox; `None`
/// while no master answers (between leaders), so the caller can go on and
/// ask again later.
async fn fetch_grant(framework_id: &str, task_id: &str) -> Result<Option<Grant>> {
    let masters = client::known_masters()?;
    let Ok((mut op, addr)) = client::leader(&masters).await else {
        return Ok(None);
    };
    match op
        .grant_task_files(mezz_proto::v1::GrantTaskFilesRequest {
            framework_id: framework_id.to_string(),
            task_id: task_id.to_string(),
        })
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            Ok(Some(if r.grant.is_empty() {
                Grant::NotNeeded
            } else {
                Grant::Held(r.grant, r.expires_at)
            }))
        }
        Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Some(Grant::NotNeeded)),
        // The master went away mid-call, or is a new leader that has not
        // heard of the task yet (its agent re-registers after a failover):
        // as if none answered.
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::NotFound
                    | tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
            ) =>
        {
            Ok(None)
        }
        Err(s) => Err(anyhow!(
            "master {addr} refused to open the sandbox of task {task_id}: {}",
            s.message()
        )),
    }
}

/// `msg` as a request carrying `grant`, when there is one.
fn with_grant<T>(msg: T, grant: &Grant) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Grant::Held(g, _) = grant {
        if let Ok(v) = g.parse() {
            req.metadata_mut()
                .insert(mezz_proto::grant::GRANT_METADATA, v);
        }
    }
    req
}

/// Where `Tail` writes.
#[derive(Clone, Copy)]
pub enum Out {
    Stdout,
    Stderr,
}

/// Told once standard output's reader went away (`mezz run … | head`),
/// for commands that keep SIGPIPE ignored to act on it, as a local
/// program would die of it.
pub fn stdout_closed() -> &'static tokio::sync::Notify {
    static CLOSED: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    CLOSED.get_or_init(tokio::sync::Notify::new)
}

static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a write to standard output has met a closed pipe.
pub fn stdout_is_closed() -> bool {
    STDOUT_GONE.load(std::sync::atomic::Ordering::Relaxed)
}

impl Out {
    fn write(self, data: &[u8]) {
        // A closed pipe (e.g. `| head`) is not an error worth reporting;
        // on standard output it is news for whoever waits on it.
        let written = match self {
            Out::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(data).and_then(|_| o.flush())
            }
            Out::Stderr => {
                let mut o = std::io::stderr().lock();
                o.write_all(data).and_then(|_| o.flush())
            }
        };
        if let (Out::Stdout, Err(e)) = (self, written) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                STDOUT_GONE.store(true, std::sync::atomic::Ordering::Relaxed);
                stdout_closed().notify_one();
            }
        }
    }
}

impl Sandbox {
    /// Connects to the agent at `agent_addr` that holds the task's sandbox.
    pub async fn connect(agent_addr: &str, framework_id: &str, task_id: &str) -> Result<Self> {
        let channel = mezz_proto::client::connect(agent_addr)
            .await
            .with_context(|| {
                format!("connecting to agent {agent_addr} for the output of task {task_id}")
            })?;
        Ok(Sandbox {
            client: AgentFilesClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            framework_id: framework_id.to_string(),
            task_id: task_id.to_string(),
            grant: Arc::new(tokio::sync::Mutex::new(Grant::Stale)),
        })
    }

    /// A reader of the sandbox file `path`, from its start.
    pub fn tail(&self, path: &str) -> Tail {
        Tail {
            sandbox: self.clone(),
            path: path.to_string(),
            offset: 0,
        }
    }

    /// A grant that is good for a while yet (or none needed), asked for
    /// now if the one held is not. Asking early (as a launch goes out)
    /// takes the master's round trips off the output's path; a master
    /// that does not know the task yet leaves it to the first read.
    pub async fn fresh_grant(&self) -> Result<()> {
        let mut grant = self.grant.lock().await;
        let due = match &*grant {
            Grant::Stale => true,
            Grant::Held(_, until) => *until - mezz_proto::unix_now() < GRANT_MARGIN_SECS,
            Grant::NotNeeded => false,
        };
        if due {
            // While no master answers, keep what there is (nothing, or a
            // grant still valid for a while): an agent whose master
            // authenticates nobody needs none, and the next step asks again.
            if let Some(g) = fetch_grant(&self.framework_id, &self.task_id).await? {
                *grant = g;
            }
        }
        Ok(())
    }

    /// The grant held now, renewed first when due.
    async fn current_grant(&self) -> Result<Grant> {
        self.fresh_grant().await?;
        Ok(self.grant.lock().await.clone())
    }

    /// Forgets the grant held (the agent refused it: a new leader gave
    /// the agent a new key), unless another tail renewed it already.
    async fn drop_grant(&self, refused: &Grant) {
        let mut grant = self.grant.lock().await;
        if let (Grant::Held(a, _), Grant::Held(b, _)) = (&*grant, refused) {
            if a == b {
                *grant = Grant::Stale;
            }
        }
    }
}

impl Tail {
    /// Connects to the agent at `agent_addr` for the file `path` of a
    /// task's sandbox.
    pub async fn connect(
        agent_addr: &str,
        framework_id: &str,
        task_id: &str,
        path: &str,
    ) -> Result<Self> {
        Ok(Sandbox::connect(agent_addr, framework_id, task_id)
            .await?
            .tail(path))
    }

    /// Writes the last `lines` lines (within the file's last MiB) and moves
    /// the offset to the end of what it wrote.
    pub async fn last_lines(&mut self, lines: usize, out: Out) -> Result<()> {
        let grant = self.sandbox.current_grant().await?;
        let sb = &self.sandbox;
        let r = sb
            .client
            .clone()
            .tail_file(with_grant(
                TailFileRequest {
                    framework_id: sb.framework_id.clone(),
                    task_id: sb.task_id.clone(),
                    path: self.path.clone(),
                    length: 0,
                },
                &grant,
            ))
            .await
            .map_err(|s| {
                anyhow!(
                    "reading the end of {} of task {}: {}",
                    self.path,
                    sb.task_id,
                    s.message()
                )
            })?
            .into_inner();
        out.write(last_lines(&r.data, lines));
        self.offset = r.offset + r.data.len() as u64;
        Ok(())
    }

    /// Writes what is new; returns (bytes written, task is terminal).
    pub async fn step(&mut self, out: Out) -> Result<(usize, bool)> {
        self.step_with(&mut |data| out.write(data)).await
    }

    /// Hands what is new to `sink`; returns (bytes, task is terminal).
    pub async fn step_with(&mut self, sink: &mut impl FnMut(&[u8])) -> Result<(usize, bool)> {
        let sb = &self.sandbox;
        let grant = sb.current_grant().await?;
        let request = ReadFileRequest {
            framework_id: sb.framework_id.clone(),
            task_id: sb.task_id.clone(),
            path: self.path.clone(),
            offset: self.offset,
            length: 0,
        };
        let mut client = sb.client.clone();
        let r = match client.read_file(with_grant(request.clone(), &grant)).await {
            // No grant yet because no master answered: try again later.
            Err(s)
                if s.code() == tonic::Code::PermissionDenied && matches!(grant, Grant::Stale) =>
            {
                return Ok((0, false));
            }
            // A new leader gave the agent a new key (after a failover):
            // ask it for a grant once more.
            Err(s)
                if s.code() == tonic::Code::PermissionDenied
                    && matches!(grant, Grant::Held(..)) =>
            {
                sb.drop_grant(&grant).await;
                let grant = sb.current_grant().await?;
                client.read_file(with_grant(request, &grant)).await
            }
            other => other,
        };
        let r = r
            .map_err(|s| {
                anyhow!(
                    "reading {} of task {}: {}",
                    self.path,
                    sb.task_id,
                    s.message()
                )
            })?
            .into_inner();
        if !r.data.is_empty() {
            sink(&r.data);
            self.offset += r.data.len() as u64;
        }
        Ok((r.data.len(), r.task_terminal))
    }

    /// Prints everything until the task ends and the file is drained.
    /// `finished` turning true wakes the loop at once (the caller learned
    /// the task ended), so the last output is not behind a poll interval.
    pub async fn follow(self, out: Out, finished: watch::Receiver<bool>) -> Result<()> {
        self.follow_with(move |data| out.write(data), finished)
            .await
    }

    /// [`Tail::follow`], handing the output to `sink` (e.g. to prefix its
    /// lines, as `mezz tf run` does).
    pub async fn follow_with(
        mut self,
        mut sink: impl FnMut(&[u8]),
        mut finished: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut idle = Duration::from_millis(10);
        loop {
            let (n, terminal) = self.step_with(&mut sink).await?;
            if n > 0 {
                idle = Duration::from_millis(10);
                continue;
            }
            if terminal {
                return Ok(());
            }
            if *finished.borrow_and_update() {
                // The agent may take a moment to mark the run terminal.
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = finished.changed() => {}
            }
            idle = (idle * 2).min(Duration::from_millis(200));
        }
    }
}

/// The suffix of `data` holding its last `n` lines (a last line without a
/// newline counts).
fn last_lines(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    match body
        .iter()
        .rev()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
    {
        Some((i, _)) => &data[body.len() - i..],
        None => data,
    }
}

/// `mezz logs --list`: the entries of a sandbox directory.
async fn list(agent_addr: &str, framework_id: &str, task_id: &str, dir: &str) -> Result<()> {
    let channel = mezz_proto::client::connect(agent_addr)
        .await
        .with_context(|| {
            format!("connecting to agent {agent_addr} for the sandbox of task {task_id}")
        })?;
    // No master answering: list without a grant (an agent that needs one
    // says so).
    let grant = fetch_grant(framework_id, task_id)
        .await?
        .unwrap_or(Grant::Stale);
    let r = AgentFilesClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .list_files(with_grant(
            ListFilesRequest {
                framework_id: framework_id.to_string(),
                task_id: task_id.to_string(),
                path: dir.to_string(),
            },
            &grant,
        ))
        .await
        .map_err(|s| anyhow!("listing the sandbox of task {task_id}: {}", s.message()))?
        .into_inner();
    let now = mezz_proto::unix_now();
    let mut out = String::from("TYPE  SIZE      MODIFIED  NAME\n");
    for e in &r.entries {
        let kind = match (e.is_dir, e.is_symlink) {
            (_, true) => "link",
            (true, _) => "dir",
            _ => "file",
        };
        let age = format!("{} ago", mezz_proto::age_text(now - e.mtime));
        let slash = if e.is_dir { "/" } else { "" };
        out.push_str(&format!(
            "{kind:<5} {:<9} {age:<9} {}{slash}\n",
            e.size, e.name
        ));
    }
    Out::Stdout.write(out.as_bytes());
    Ok(())
}

pub async fn main(args: LogsArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, true).await?;
    let task = state
        .tasks
        .iter()
        .find(|t| t.id == args.task)
        // Tasks come active first, then newest first: a name finds the
        // latest attempt.
        .or_else(|| state.tasks.iter().find(|t| t.name == args.task))
        .ok_or_else(|| {
            anyhow!(
                "no task '{}' known to the master; see `mezz ps --all`",
                args.task
            )
        })?;
    if task.agent_address.is_empty() {
        return Err(anyhow!(
            "task '{}' never reached an agent (state {}: {})",
            task.id,
            task.state,
            task.message
        ));
    }
    if let Some(dir) = &args.list {
        list(&task.agent_address, &task.framework_id, &task.id, dir).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = if args.stderr { "stderr" } else { "stdout" };
    let out = if args.stderr {
        Out::Stderr
    } else {
        Out::Stdout
    };
    let mut tail = Tail::connect(&task.agent_address, &task.framework_id, &task.id, path).await?;
    if let Some(n) = args.tail {
        tail.last_lines(n, out).await?;
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if args.follow {
        let (_keep, never) = watch::channel(false);
        tail.follow(out, never).await?;
    } else {
        while tail.step(out).await?.0 > 0 {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits (up to 10 s each) for the output streams of a job's tasks to
/// drain after the job ended, reporting a stream that failed as `who`.
pub async fn drain(tails: Vec<tokio::task::JoinHandle<Result<()>>>, who: &str) {
    for t in tails {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(Err(e))) => eprintln!("{who}: {e:#}"),
            Ok(Err(e)) => eprintln!("{who}: output stream failed: {e}"),
            Ok(Ok(Ok(()))) | Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_of_a_chunk() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
        assert_eq!(last_lines(b"", 3), b"");
    }
}
