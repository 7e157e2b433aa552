//! `mezz sizes`: the cluster's menu of named sizes (`--size gpu-large`),
//! kept in the masters' replicated state so every user of a cluster sees
//! the same menu and it survives failovers and restarts. Every submitting
//! command (`mezz run`, `mezz tf run`, `mezz spark submit`, `mezz jupyter
//! start`, `mezz serve deploy`, `mezz job submit`) reads it through
//! [`menu`].

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use mezz_proto::v1::{ListSizesRequest, RemoveSizeRequest, SetSizeRequest, SizeView};
use mezz_sdk::sizes::Sizes;

use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  mezz sizes\n  mezz sizes set gpu-large --cpus 8 --mem 64G --gpus 2 --gpu-model A100\n  mezz sizes rm gpu-large\n  mezz run --size cpu-large -- python train.py\n\nA cluster starts with the built-in menu: cpu-small (1 CPU, 2 GB),\ncpu-medium (2, 4 GB), cpu-large (4, 8 GB), gpu-small (4 CPUs, 16 GB, 1 GPU),\ngpu-large (8 CPUs, 32 GB, 2 GPUs). Changing it needs the manage_sizes\npermission where ACLs are on."
)]
pub struct SizesArgs {
    #[command(subcommand)]
    pub command: Option<SizesCommand>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Subcommand, Debug)]
pub enum SizesCommand {
    /// List the menu (the same as `mezz sizes`).
    Ls(ListArgs),
    /// Add a size, or replace the one of the same name.
    Set(SetArgs),
    /// Take a size off the menu.
    Rm(RmArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub master: MasterArg,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// The size's name: lowercase letters, digits, '-' and '_'.
    pub name: String,
    /// CPUs each task of this size gets.
    #[arg(long)]
    pub cpus: f64,
    /// Memory each task gets: MB, or with a unit (512M, 64G, 1T).
    #[arg(long, value_parser = parse_mem)]
    pub mem: f64,
    /// Whole GPUs each task gets.
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// The GPU model the size stands for (the agents' gpu_model
    /// attribute), shown with the menu.
    #[arg(long, value_name = "MODEL")]
    pub gpu_model: Option<String>,
    #[command(flatten)]
    pub master: MasterArg,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// The size to remove.
    pub name: String,
    #[command(flatten)]
    pub master: MasterArg,
}

/// A memory amount in MB: a plain number is MB; `M`, `G` and `T` (with
/// an optional `B` or `iB`, any case) are binary multiples, as Spark and
/// the JVM read them.
pub fn parse_mem(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let stripped = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, factor) = match stripped.chars().last() {
        Some('m') => (&stripped[..stripped.len() - 1], 1.0),
        Some('g') => (&stripped[..stripped.len() - 1], 1024.0),
        Some('t') => (&stripped[..stripped.len() - 1], 1024.0 * 1024.0),
        _ if stripped.len() == lower.len() => (stripped, 1.0),
        _ => {
            return Err(format!(
                "'{s}' is not a memory amount (use MB, or 512M, 64G, 1T)"
            ))
        }
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * factor),
        _ => Err(format!(
            "'{s}' is not a memory amount: give a positive number of MB, or 512M, 64G, 1T"
        )),
    }
}

/// The cluster's menu, from the leading master. A master too old to keep
/// one (it does not know the call) leaves the menu to this machine: the
/// built-in sizes, with `$MEZZ_SIZES` or `~/.config/mezz/sizes.toml` on
/// top, as before sizes were replicated. So does a cluster that does not
/// answer at all: the command then fails at its next step, naming the
/// masters it tried, and a mistyped size is still named first.
pub async fn menu(masters: &[String]) -> Result<Sizes> {
    let local = || Ok(Sizes::load(Sizes::default_path().as_deref())?);
    let Ok((mut op, addr)) = client::leader(masters).await else {
        return local();
    };
    match op.list_sizes(ListSizesRequest {}).await {
        Ok(r) => Ok(Sizes::from_views(&r.into_inner().sizes)),
        Err(s) if s.code() == tonic::Code::Unimplemented => local(),
        Err(s) => Err(anyhow!(
            "reading the sizes menu from {addr}: {}",
            s.message()
        )),
    }
}

pub async fn main(a: SizesArgs) -> Result<ExitCode> {
    match a.command {
        None => list(a.list).await,
        Some(SizesCommand::Ls(l)) => list(l).await,
        Some(SizesCommand::Set(s)) => set(s).await,
        Some(SizesCommand::Rm(r)) => rm(r).await,
    }
}

async fn list(a: ListArgs) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let (mut op, addr) = client::leader(&masters).await?;
    let sizes = op
        .list_sizes(ListSizesRequest {})
        .await
        .map_err(|s| anyhow!("reading the sizes menu from {addr}: {}", s.message()))?
        .into_inner()
        .sizes;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&sizes)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<20} {:>6} {:>10} {:>5}  GPU MODEL",
        "NAME",
        "CPUS",
        "MEM",
        "GPUS"
    );
    for s in &sizes {
        outln!(
            "{:<20} {:>6} {:>10} {:>5}  {}",
            s.name,
            s.cpus,
            mem_text(s.mem),
            s.gpus,
            if s.gpu_model.is_empty() {
                "-"
            } else {
                &s.gpu_model
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `64G` for whole gigabytes, else MB.
fn mem_text(mb: f64) -> String {
    if mb >= 1024.0 && (mb / 1024.0).fract() == 0.0 {
        format!("{}G", mb / 1024.0)
    } else {
        format!("{mb}M")
    }
}

async fn set(a: SetArgs) -> Result<ExitCode> {
    let size = SizeView {
        name: a.name.clone(),
        cpus: a.cpus,
        mem: a.mem,
        gpus: a.gpus,
        gpu_model: a.gpu_model.unwrap_or_default(),
    };
    // Checked here too, so a typo is answered without a round trip; the
    // master checks again before it stores anything.
    mezz_proto::sizes::check(&size).map_err(|e| anyhow!(e))?;
    let masters = client::masters(a.master.master.as_deref())?;
    let (mut op, _) = client::leader(&masters).await?;
    op.set_size(SetSizeRequest { size: Some(size) })
        .await
        .map_err(|s| anyhow!("setting size '{}': {}", a.name, s.message()))?;
    Ok(ExitCode::SUCCESS)
}

async fn rm(a: RmArgs) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let (mut op, _) = client::leader(&masters).await?;
    op.remove_size(RemoveSizeRequest {
        name: a.name.clone(),
    })
    .await
    .map_err(|s| anyhow!("removing size '{}': {}", a.name, s.message()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_mb_or_units() {
        assert_eq!(parse_mem("512"), Ok(512.0));
        assert_eq!(parse_mem("64G"), Ok(65536.0));
        assert_eq!(parse_mem("64GiB"), Ok(65536.0));
        assert_eq!(parse_mem("1.5g"), Ok(1536.0));
        assert_eq!(parse_mem("300m"), Ok(300.0));
        assert_eq!(parse_mem("1T"), Ok(1048576.0));
        for bad in ["", "G", "-1G", "0", "12Q", "lots"] {
            assert!(parse_mem(bad).is_err(), "{bad}");
        }
        assert_eq!(mem_text(65536.0), "64G");
        assert_eq!(mem_text(1536.0), "1536M");
    }
}
