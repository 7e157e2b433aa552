//! `mezz token` and `mezz acl`: principals' bearer tokens and the access
//! control lists, kept in the masters' replicated state; and the master's
//! flags that turn authentication and ACLs on.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use mezz_master::security::{Acls, AuthClasses, SecurityConfig, DEFAULT_ADMIN};
use mezz_proto::v1::{
    AclDocument, CreateTokenRequest, GetAclsRequest, ListTokensRequest, RevokeTokenRequest,
};

use super::MasterArg;
use crate::client;

/// `mezz master` flags for authentication and authorization.
#[derive(Args, Debug, Clone, Default)]
pub struct MasterSecurityArgs {
    /// Which callers must present a bearer token: a list of frameworks,
    /// agents, operators (the CLI) and http (the status page, /api/*,
    /// /metrics; /health stays open), or `all`. Default: none. Raft
    /// between masters is not authenticated by token.
    #[arg(long, value_name = "KINDS")]
    pub authenticate: Option<String>,
    /// ACLs (JSON, see docs/security.md): seeded into the replicated state
    /// when the cluster has none, then changed with `mezz acl set`. Turns
    /// on authentication for every kind of caller; whatever no rule allows
    /// is denied.
    #[arg(long, value_name = "FILE")]
    pub acls: Option<PathBuf>,
    /// The first admin token: read from FILE (mode 0600), or made and
    /// written there when FILE does not exist. A leader of a cluster that
    /// holds no token yet adds it; once any token exists it is ignored.
    #[arg(long, value_name = "FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// The principal of the bootstrap token.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ADMIN)]
    pub bootstrap_principal: String,
}

/// Reads and validates an ACL file, naming the file in errors.
pub fn read_acls(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the ACL file {}", path.display()))?;
    Acls::canonical(&text).map_err(|e| anyhow!("ACL file {}: {e}", path.display()))
}

impl MasterSecurityArgs {
    /// The master's security configuration.
    pub fn config(&self) -> Result<SecurityConfig> {
        let mut classes = match &self.authenticate {
            Some(list) => AuthClasses::parse(list).map_err(|e| anyhow!(e))?,
            None => AuthClasses::default(),
        };
        let acls = self.acls.as_deref().map(read_acls).transpose()?;
        if acls.is_some() {
            classes = AuthClasses::ALL;
        }
        if self.bootstrap_token_file.is_some() && !classes.any() {
            tracing::warn!(
                "--bootstrap-token-file without --authenticate or --acls: the token is made, \
                 but no caller needs one"
            );
        }
        Ok(SecurityConfig {
            classes,
            bootstrap_token_file: self.bootstrap_token_file.clone(),
            bootstrap_principal: self.bootstrap_principal.clone(),
            acls,
            ..SecurityConfig::default()
        })
    }
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a bearer token for PRINCIPAL and print it, once: the masters
    /// keep only a salted hash of it. Give it to the principal, who sets
    /// $MEZZ_TOKEN or keeps it in a file of mode 0600 (`--credentials`).
    Create(TokenCreateArgs),
    /// Revoke one token (by id) or every token of a principal.
    Revoke(TokenRevokeArgs),
    /// List tokens: ids, principals, expiry, revocation. Never secrets.
    Ls(TokenLsArgs),
}

#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// Who the token is for (a person, a framework, an agent).
    pub principal: String,
    /// How long the token is valid, e.g. 12h or 30d. Default: until revoked.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub expires: Option<std::time::Duration>,
    #[command(flatten)]
    pub master: MasterArg,
}

#[derive(Args, Debug)]
pub struct TokenRevokeArgs {
    /// A token id (see `mezz token ls`) or a principal.
    pub id_or_principal: String,
    #[command(flatten)]
    pub master: MasterArg,
}

#[derive(Args, Debug)]
pub struct TokenLsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub master: MasterArg,
}

#[derive(Args, Debug)]
pub struct AclArgs {
    #[command(subcommand)]
    pub command: AclCommand,
}

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Print the ACLs in force (JSON), or say that they are off.
    Show(AclShowArgs),
    /// Replace the ACLs with those in FILE (JSON, see docs/security.md).
    /// Refused when they would deny you `manage_acls`, so that you cannot
    /// lock yourself out.
    Set(AclSetArgs),
}

#[derive(Args, Debug)]
pub struct AclShowArgs {
    #[command(flatten)]
    pub master: MasterArg,
}

#[derive(Args, Debug)]
pub struct AclSetArgs {
    /// The ACL file.
    pub file: PathBuf,
    #[command(flatten)]
    pub master: MasterArg,
}

/// Unix seconds as a UTC date and time, or `never` for 0.
fn when(secs: f64) -> String {
    if secs <= 0.0 {
        return "never".into();
    }
    let s = secs as i64;
    let (days, rest) = (s.div_euclid(86400), s.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}Z",
        rest / 3600,
        (rest % 3600) / 60
    )
}

pub async fn token(args: TokenArgs) -> Result<ExitCode> {
    match args.command {
        TokenCommand::Create(a) => {
            let masters = client::masters(a.master.master.as_deref())?;
            let (mut c, addr) = client::leader(&masters).await?;
            let r = c
                .create_token(CreateTokenRequest {
                    principal: a.principal.clone(),
                    expires_in_secs: a.expires.map(|d| d.as_secs_f64()).unwrap_or(0.0),
                })
                .await
                .map_err(|s| anyhow!("{addr}: {}", s.message()))?
                .into_inner();
            println!("{}", r.token);
            eprintln!(
                "token {} for {} (expires: {}). It is shown only now: keep it in a file of \
                 mode 0600 (`--credentials FILE`) or in $MEZZ_TOKEN.",
                r.id,
                a.principal,
                when(r.expires_at)
            );
        }
        TokenCommand::Revoke(a) => {
            let masters = client::masters(a.master.master.as_deref())?;
            let (mut c, addr) = client::leader(&masters).await?;
            let r = c
                .revoke_token(RevokeTokenRequest {
                    id_or_principal: a.id_or_principal,
                })
                .await
                .map_err(|s| anyhow!("{addr}: {}", s.message()))?
                .into_inner();
            println!("revoked {}", r.ids.join(", "));
        }
        TokenCommand::Ls(a) => {
            let masters = client::masters(a.master.master.as_deref())?;
            let (mut c, addr) = client::leader(&masters).await?;
            let r = c
                .list_tokens(ListTokensRequest {})
                .await
                .map_err(|s| anyhow!("{addr}: {}", s.message()))?
                .into_inner();
            if a.json {
                let rows: Vec<serde_json::Value> = r
                    .tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id,
                            "principal": t.principal,
                            "created_at": t.created_at,
                            "expires_at": t.expires_at,
                            "revoked_at": t.revoked_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let now = mezz_proto::unix_now();
                super::inspect::table(
                    &["ID", "PRINCIPAL", "CREATED", "EXPIRES", "STATE"],
                    r.tokens
                        .iter()
                        .map(|t| {
                            let state = if t.revoked_at > 0.0 {
                                format!("revoked {}", when(t.revoked_at))
                            } else if t.expires_at > 0.0 && now >= t.expires_at {
                                "expired".into()
                            } else {
                                "valid".into()
                            };
                            vec![
                                t.id.clone(),
                                t.principal.clone(),
                                when(t.created_at),
                                when(t.expires_at),
                                state,
                            ]
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn acl(args: AclArgs) -> Result<ExitCode> {
    match args.command {
        AclCommand::Show(a) => {
            let masters = client::masters(a.master.master.as_deref())?;
            let (mut c, addr) = client::leader(&masters).await?;
            let r = c
                .get_acls(GetAclsRequest {})
                .await
                .map_err(|s| anyhow!("{addr}: {}", s.message()))?
                .into_inner();
            if r.json.is_empty() {
                println!("ACLs are off: every authenticated caller may do everything.");
            } else {
                println!("{}", r.json);
            }
        }
        AclCommand::Set(a) => {
            let json = read_acls(&a.file)?;
            let masters = client::masters(a.master.master.as_deref())?;
            let (mut c, addr) = client::leader(&masters).await?;
            c.set_acls(AclDocument { json, seed: false })
                .await
                .map_err(|s| anyhow!("{addr}: {}", s.message()))?;
            println!("ACLs set from {}", a.file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(when(0.0), "never");
        assert_eq!(when(1_700_000_000.0), "2023-11-14 22:13Z");
        assert_eq!(when(951_782_400.0), "2000-02-29 00:00Z");
    }

    #[test]
    fn acl_files_are_validated_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("acls.json");
        std::fs::write(&f, r#"{"view": [{"principals": "ANY"}]}"#).unwrap();
        let e = read_acls(&f).unwrap_err().to_string();
        assert!(
            e.contains("acls.json") && e.contains("view[0]: 'roles' is missing"),
            "{e}"
        );
        let args = MasterSecurityArgs {
            acls: Some(f.clone()),
            ..Default::default()
        };
        assert!(args.config().is_err());
        std::fs::write(&f, r#"{"view": [{"principals": "ANY", "roles": "ANY"}]}"#).unwrap();
        let c = args.config().unwrap();
        assert_eq!(c.classes, AuthClasses::ALL, "--acls turns every class on");
    }
}
