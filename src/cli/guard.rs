//! The master's flags for the audit log and rate limits.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use mezz_master::security::ratelimit::Limit;
use mezz_master::security::{RateLimits, SecurityConfig};

/// `mezz master` flags: the audit log and rate limits.
#[derive(Args, Debug, Clone, Default)]
pub struct MasterGuardArgs {
    /// Append the audit log here, one JSON object per line: every operator
    /// action, every kill, the first use of a token from a new address,
    /// every denial and rate-limit refusal. Token ids only, never secrets.
    /// The latest entries are also at GET /api/audit (`read_audit`).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Rate limits of scheduler calls per principal (JSON, see
    /// docs/security.md): {"default": {"calls_per_sec": R, "burst": B},
    /// "principals": {"NAME": {...}}}. A launch costs one per task.
    #[arg(long, value_name = "FILE")]
    pub rate_limits: Option<PathBuf>,
    /// The default rate limit: scheduler calls per second per principal
    /// (overrides the file's default).
    #[arg(long, value_name = "R")]
    pub rate_limit_calls_per_sec: Option<f64>,
    /// The default burst (with --rate-limit-calls-per-sec; default: twice
    /// the rate, at least 1).
    #[arg(long, value_name = "N", requires = "rate_limit_calls_per_sec")]
    pub rate_limit_burst: Option<f64>,
}

impl MasterGuardArgs {
    /// `config` with the audit log and rate limits of these flags.
    pub fn apply(&self, mut config: SecurityConfig) -> Result<SecurityConfig> {
        config.audit_log = self.audit_log.clone();
        let mut limits = match &self.rate_limits {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the rate limits {}", path.display()))?;
                RateLimits::parse(&text)
                    .map_err(|e| anyhow!("rate-limit file {}: {e}", path.display()))?
            }
            None => RateLimits::default(),
        };
        if let Some(rate) = self.rate_limit_calls_per_sec {
            let burst = self.rate_limit_burst.unwrap_or((rate * 2.0).max(1.0));
            let doc =
                serde_json::json!({"default": Limit { calls_per_sec: rate, burst }.to_json()});
            limits.default = RateLimits::parse(&doc.to_string())
                .map_err(|e| anyhow!("--rate-limit-calls-per-sec/--rate-limit-burst: {e}"))?
                .default;
        }
        config.rate_limits = limits;
        Ok(config)
    }
}
