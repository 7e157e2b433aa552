//! `mezz masters`: the masters of the raft group, who leads, and how far
//! each has applied the replicated log.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct MastersArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn main(args: MastersArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, false).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state.masters)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = state
        .masters
        .iter()
        .map(|m| {
            let known = |v: u64| {
                if v == 0 {
                    "-".to_string()
                } else {
                    v.to_string()
                }
            };
            vec![
                m.id.to_string(),
                m.address.clone(),
                if m.role.is_empty() {
                    "unknown".into()
                } else {
                    m.role.clone()
                },
                known(m.term),
                known(m.applied_index),
            ]
        })
        .collect();
    super::inspect::table(&["ID", "ADDRESS", "ROLE", "TERM", "APPLIED"], rows);
    Ok(ExitCode::SUCCESS)
}
