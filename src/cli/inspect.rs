//! `mezz ps`, `mezz kill`, `mezz agents`, `mezz frameworks`: what the
//! cluster holds, as tables for people or JSON for scripts.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use mezz_proto::v1::{OperatorKillRequest, TaskView};

use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// Include finished tasks (the master keeps the latest 1000).
    #[arg(long, short)]
    pub all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The task id (see `mezz ps`).
    pub task: String,
    /// The framework, when two frameworks use the same task id.
    #[arg(long)]
    pub framework: Option<String>,
}

/// Prints rows as left-aligned columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let s: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn outcome(t: &TaskView) -> String {
    match (t.exit_code, t.signal, t.healthy) {
        (Some(c), _, _) => format!("exit {c}"),
        (None, Some(s), _) => format!("signal {s}"),
        (None, None, Some(true)) if t.state == "RUNNING" => "healthy".into(),
        (None, None, Some(false)) if t.state == "RUNNING" => "unhealthy".into(),
        _ => t.reason.to_lowercase().replace('_', " "),
    }
}

fn age(since: f64) -> String {
    mezz_proto::age_text(mezz_proto::unix_now() - since)
}

/// GPUs' latest utilization, `87% 0%(idle)`; `-` when none was sampled.
fn gpu_use_text(usage: &[mezz_proto::v1::GpuUsageView]) -> String {
    if usage.is_empty() {
        return "-".into();
    }
    usage
        .iter()
        .map(|u| {
            format!(
                "{}%{}",
                u.utilization_pct,
                if u.idle { "(idle)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn ps(args: PsArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, args.all).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state.tasks)?);
        return Ok(ExitCode::SUCCESS);
    }
    // A GPU column only where some task has GPUs.
    let gpu_column = state.tasks.iter().any(|t| !t.gpus.is_empty());
    let rows = state
        .tasks
        .iter()
        .map(|t| {
            let mut row = vec![
                t.id.clone(),
                t.state.clone(),
                outcome(t),
                t.framework_name.clone(),
                t.hostname.clone(),
                age(t.launched_at),
            ];
            if gpu_column {
                row.push(gpu_use_text(&t.gpu_usage));
            }
            row.push(t.command.clone());
            row
        })
        .collect();
    let mut head = vec!["ID", "STATE", "OUTCOME", "FRAMEWORK", "HOST", "AGE"];
    if gpu_column {
        head.push("GPU USE");
    }
    head.push("COMMAND");
    table(&head, rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn kill(args: KillArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let (mut c, addr) = client::leader(&masters).await?;
    let r = c
        .kill_task(OperatorKillRequest {
            task_id: args.task.clone(),
            framework_id: args.framework.unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .with_context(|| format!("killing task {} through {addr}", args.task))?
        .into_inner();
    println!("killing task {} of framework {}", r.task_id, r.framework_id);
    Ok(ExitCode::SUCCESS)
}

pub async fn agents(args: ListArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, false).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state.agents)?);
        return Ok(ExitCode::SUCCESS);
    }
    let g = |m: &std::collections::BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let rows = state
        .agents
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.hostname.clone(),
                a.address.clone(),
                a.status.clone(),
                format!("{}/{}", g(&a.used, "cpus"), g(&a.total, "cpus")),
                format!("{}/{}", g(&a.used, "mem"), g(&a.total, "mem")),
                format!("{}", a.gpus.len()),
                gpu_use_text(&a.gpu_usage),
            ]
        })
        .collect();
    table(
        &[
            "ID", "HOST", "ADDRESS", "STATUS", "CPUS", "MEM(MB)", "GPUS", "GPU USE",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn frameworks(args: ListArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, false).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state.frameworks)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = state
        .frameworks
        .iter()
        .map(|f| {
            vec![
                f.id.clone(),
                f.name.clone(),
                f.role.clone(),
                f.status.clone(),
                f.active_tasks.to_string(),
                f.user.clone(),
            ]
        })
        .collect();
    table(&["ID", "NAME", "ROLE", "STATUS", "TASKS", "USER"], rows);
    Ok(ExitCode::SUCCESS)
}
