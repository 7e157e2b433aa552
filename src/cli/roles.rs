//! `mezz quota`, `mezz weight` and `mezz roles`: the operator's view and
//! control of role weights and quotas. Changes go through the master's
//! replicated state and survive a restart.

use mezz_proto::resources::{CPUS, DISK, GPUS, MEM};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use mezz_proto::v1::{ListRolesRequest, RoleView, SetQuotaRequest, SetWeightRequest};
use mezz_proto::Resources;

use super::MasterArg;
use crate::client;

#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set a role's quota: a guarantee (kept available for the role, never
    /// offered to others while unmet) and optionally a limit (the most the
    /// role may hold). Giving nothing removes the role's quota.
    Set(QuotaSetArgs),
    /// List roles with a quota, and what they use against it.
    Ls(ListArgs),
}

#[derive(Args, Debug)]
pub struct QuotaArgs {
    #[command(subcommand)]
    pub command: QuotaCommand,
}

#[derive(Args, Debug)]
pub struct QuotaSetArgs {
    /// The role (hierarchical names like eng/ml work).
    pub role: String,
    /// Guaranteed CPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Guaranteed memory, MB.
    #[arg(long)]
    pub mem: Option<f64>,
    /// Guaranteed disk, MB.
    #[arg(long)]
    pub disk: Option<f64>,
    /// Guaranteed GPUs (whole devices).
    #[arg(long)]
    pub gpus: Option<u32>,
    /// The limit, in --resources syntax: 'cpus:16;mem:65536;gpus:2'.
    #[arg(long, value_name = "RESOURCES")]
    pub limit: Option<String>,
    #[command(flatten)]
    pub master: MasterArg,
}

#[derive(Args, Debug)]
pub struct WeightArgs {
    #[command(subcommand)]
    pub command: WeightCommand,
}

#[derive(Subcommand, Debug)]
pub enum WeightCommand {
    /// Set a role's DRF weight: a role of weight 2 gets twice the share of
    /// a role of weight 1 when both want more.
    Set(WeightSetArgs),
}

#[derive(Args, Debug)]
pub struct WeightSetArgs {
    /// The role.
    pub role: String,
    /// The weight, above 0 (default of every role: 1).
    pub weight: f64,
    #[command(flatten)]
    pub master: MasterArg,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub master: MasterArg,
}

pub async fn quota(a: QuotaArgs) -> Result<ExitCode> {
    match a.command {
        QuotaCommand::Set(s) => quota_set(s).await,
        QuotaCommand::Ls(l) => list(l, true).await,
    }
}

async fn quota_set(a: QuotaSetArgs) -> Result<ExitCode> {
    let mut g = Resources::new();
    for (name, v) in [(CPUS, a.cpus), (MEM, a.mem), (DISK, a.disk)] {
        if let Some(v) = v {
            if !v.is_finite() || v < 0.0 {
                return Err(anyhow!("--{name} {v}: give a number of 0 or more"));
            }
            g.set_scalar(name, v);
        }
    }
    if let Some(n) = a.gpus.filter(|&n| n > 0) {
        g.set_scalar(GPUS, n as f64);
    }
    let limit = match &a.limit {
        Some(l) => Resources::parse(l).with_context(|| format!("--limit '{l}'"))?,
        None => Resources::new(),
    };
    let masters = client::masters(a.master.master.as_deref())?;
    let (mut op, _) = client::leader(&masters).await?;
    op.set_quota(SetQuotaRequest {
        role: a.role.clone(),
        guarantee: g.to_proto(),
        limit: limit.to_proto(),
    })
    .await
    .map_err(|s| anyhow!("setting the quota of role '{}': {}", a.role, s.message()))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn weight(a: WeightArgs) -> Result<ExitCode> {
    let WeightCommand::Set(a) = a.command;
    let masters = client::masters(a.master.master.as_deref())?;
    let (mut op, _) = client::leader(&masters).await?;
    op.set_weight(SetWeightRequest {
        role: a.role.clone(),
        weight: a.weight,
    })
    .await
    .map_err(|s| anyhow!("setting the weight of role '{}': {}", a.role, s.message()))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn roles(a: ListArgs) -> Result<ExitCode> {
    list(a, false).await
}

fn fmt_map(m: &std::collections::BTreeMap<String, f64>) -> String {
    let v: Vec<(&String, &f64)> = m
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "cpus" | "mem" | "disk" | "gpus"))
        .collect();
    let s: Vec<String> = v.iter().map(|(k, x)| format!("{k}:{x}")).collect();
    if s.is_empty() {
        "-".into()
    } else {
        s.join(";")
    }
}

async fn list(a: ListArgs, quota_only: bool) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let (mut op, _) = client::leader(&masters).await?;
    let mut roles: Vec<RoleView> = op
        .list_roles(ListRolesRequest {})
        .await
        .map_err(|s| anyhow!("listing roles: {}", s.message()))?
        .into_inner()
        .roles;
    if quota_only {
        roles.retain(|r| !r.guarantee.is_empty() || !r.limit.is_empty());
    }
    if a.json {
        let v: Vec<serde_json::Value> = roles
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "weight": r.weight, "frameworks": r.frameworks,
                    "used": r.used, "offered": r.offered, "guarantee": r.guarantee,
                    "limit": r.limit, "reserved": r.reserved,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:>6} {:>10}  {:<28} {:<28} {:<28}",
        "ROLE", "WEIGHT", "FRAMEWORKS", "USED", "GUARANTEE", "LIMIT"
    );
    for r in &roles {
        println!(
            "{:<16} {:>6} {:>10}  {:<28} {:<28} {:<28}",
            r.name,
            r.weight,
            r.frameworks,
            fmt_map(&r.used),
            fmt_map(&r.guarantee),
            fmt_map(&r.limit)
        );
    }
    Ok(ExitCode::SUCCESS)
}
