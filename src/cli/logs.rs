//! `mezz logs`: a task's stdout or stderr, read from its agent's sandbox,
//! optionally followed until the task ends. `mezz run` streams output with
//! the same `Tail`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use mezz_proto::v1::agent_files_client::AgentFilesClient;
use mezz_proto::v1::ReadFileRequest;
use mezz_proto::MAX_MESSAGE_BYTES;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The task id (see `mezz ps --all`).
    pub task: String,
    /// Print stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing new output until the task ends.
    #[arg(long, short)]
    pub follow: bool,
}

/// Reads one sandbox file of a task from its agent, from an offset on.
pub struct Tail {
    client: AgentFilesClient<Channel>,
    framework_id: String,
    task_id: String,
    path: String,
    offset: u64,
}

/// Where `Tail` writes.
#[derive(Clone, Copy)]
pub enum Out {
    Stdout,
    Stderr,
}

impl Out {
    fn write(self, data: &[u8]) {
        // A closed pipe (e.g. `| head`) is not an error worth reporting.
        let _ = match self {
            Out::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(data).and_then(|_| o.flush())
            }
            Out::Stderr => {
                let mut o = std::io::stderr().lock();
                o.write_all(data).and_then(|_| o.flush())
            }
        };
    }
}

impl Tail {
    /// Connects to the agent at `agent_addr`.
    pub async fn connect(
        agent_addr: &str,
        framework_id: &str,
        task_id: &str,
        path: &str,
    ) -> Result<Self> {
        let channel = mezz_proto::client::connect(agent_addr)
            .await
            .with_context(|| {
                format!("connecting to agent {agent_addr} for the output of task {task_id}")
            })?;
        Ok(Tail {
            client: AgentFilesClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            framework_id: framework_id.to_string(),
            task_id: task_id.to_string(),
            path: path.to_string(),
            offset: 0,
        })
    }

    /// Writes what is new; returns (bytes written, task is terminal).
    pub async fn step(&mut self, out: Out) -> Result<(usize, bool)> {
        let r = self
            .client
            .read_file(ReadFileRequest {
                framework_id: self.framework_id.clone(),
                task_id: self.task_id.clone(),
                path: self.path.clone(),
                offset: self.offset,
                length: 0,
            })
            .await
            .map_err(|s| {
                anyhow!(
                    "reading {} of task {}: {}",
                    self.path,
                    self.task_id,
                    s.message()
                )
            })?
            .into_inner();
        if !r.data.is_empty() {
            out.write(&r.data);
            self.offset += r.data.len() as u64;
        }
        Ok((r.data.len(), r.task_terminal))
    }

    /// Prints everything until the task ends and the file is drained.
    /// `finished` turning true wakes the loop at once (the caller learned
    /// the task ended), so the last output is not behind a poll interval.
    pub async fn follow(mut self, out: Out, mut finished: watch::Receiver<bool>) -> Result<()> {
        let mut idle = Duration::from_millis(10);
        loop {
            let (n, terminal) = self.step(out).await?;
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

pub async fn main(args: LogsArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, true).await?;
    let task = state
        .tasks
        .iter()
        .find(|t| t.id == args.task)
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
    let path = if args.stderr { "stderr" } else { "stdout" };
    let out = if args.stderr {
        Out::Stderr
    } else {
        Out::Stdout
    };
    let mut tail = Tail::connect(&task.agent_address, &task.framework_id, &task.id, path).await?;
    if args.follow {
        let (_keep, never) = watch::channel(false);
        tail.follow(out, never).await?;
    } else {
        while tail.step(out).await?.0 > 0 {}
    }
    Ok(ExitCode::SUCCESS)
}
