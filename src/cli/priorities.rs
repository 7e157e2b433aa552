//! `mezz priorities`: the cluster's priority classes; and the master's
//! flags that define them and limit preemption (shared by `mezz master`
//! and `mezz dev`).

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Args;
use mezz_master::scheduling::{PriorityClass, SchedulingConfig};

use super::inspect::{table, ListArgs};
use crate::{client, duration};

/// Priority classes and preemption limits of a master.
#[derive(Args, Debug, Clone)]
pub struct SchedulingArgs {
    /// A priority class: NAME=VALUE, then optionally ",preemptible" and
    /// ",no-preempt"; repeat for each. Work of a higher value is queued first and may preempt tasks
    /// of a lower, preemptible class (unless its class says no-preempt).
    /// Default: production=1000, batch=500,preemptible and
    /// best-effort=0,preemptible.
    #[arg(long = "priority-class", value_name = "CLASS", value_parser = PriorityClass::parse)]
    pub priority_classes: Vec<PriorityClass>,
    /// The class of work that names none.
    #[arg(long, default_value = "batch", value_name = "CLASS")]
    pub default_priority: String,
    /// Tasks the whole cluster may preempt per minute; 0 turns preemption
    /// off.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub max_preemptions_per_minute: u32,
    /// The grace period (SIGTERM, then SIGKILL) of a preempted task;
    /// default: the task's own kill grace period.
    #[arg(long, value_parser = duration::parse, value_name = "DUR")]
    pub preemption_grace: Option<std::time::Duration>,
}

impl SchedulingArgs {
    /// The master's configuration from the flags.
    pub fn config(&self) -> Result<SchedulingConfig> {
        let mut config = SchedulingConfig::default();
        if !self.priority_classes.is_empty() {
            config.classes = self.priority_classes.clone();
        }
        config.default_class = self.default_priority.clone();
        config.max_preemptions_per_minute = self.max_preemptions_per_minute;
        config.grace_secs = self.preemption_grace.map(|d| d.as_secs_f64());
        config
            .validate()
            .map_err(|e| anyhow!("--priority-class / --default-priority: {e}"))?;
        Ok(config)
    }
}

/// `mezz priorities`.
pub async fn main(args: ListArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, false).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state.priority_classes)?);
        return Ok(ExitCode::SUCCESS);
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let rows = state
        .priority_classes
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.value.to_string(),
                yes_no(c.preemptible),
                yes_no(c.preempts),
                if c.default { "default" } else { "" }.to_string(),
            ]
        })
        .collect();
    table(&["CLASS", "VALUE", "PREEMPTIBLE", "PREEMPTS", ""], rows);
    Ok(ExitCode::SUCCESS)
}
