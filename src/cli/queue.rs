//! `mezz queue ls`: the cluster-wide queue of waiting demand, in the order
//! the master serves it.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::inspect::{table, ListArgs};
use crate::client;

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List waiting work: position, priority class, attained GPU-seconds,
    /// what it waits for and why it is not placed yet.
    Ls(ListArgs),
}

pub async fn main(args: QueueArgs) -> Result<ExitCode> {
    let QueueCommand::Ls(args) = args.command;
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, false).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state.queue)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = mezz_proto::unix_now();
    let rows = state
        .queue
        .iter()
        .map(|q| {
            vec![
                q.position.to_string(),
                q.demand_id.clone(),
                q.framework_name.clone(),
                q.priority.clone(),
                format!("{:.0}", q.attained_gpu_seconds),
                format!("{}×{}", q.tasks, q.resources),
                format!("{:.0}s", (now - q.waiting_since).max(0.0)),
                if q.start_deadline > 0.0 {
                    format!("{:.0}s", (q.start_deadline - now).max(0.0))
                } else {
                    "-".into()
                },
                q.why.clone(),
            ]
        })
        .collect();
    table(
        &[
            "POS",
            "DEMAND",
            "FRAMEWORK",
            "PRIORITY",
            "GPU-SECS",
            "WAITS FOR",
            "WAITED",
            "DEADLINE IN",
            "WHY",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}
