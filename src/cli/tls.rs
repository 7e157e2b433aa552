//! `--tls-ca`, `--tls-cert`, `--tls-key` (every command) and
//! `--tls-client-auth` (`mezz master`, `mezz agent`): TLS on every
//! connection. See docs/tls.md.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use clap::Args;
use mezz_proto::tls::{ClientAuth, ClientTls, ServerTls, ServerTlsFiles};

/// What every command may be given: the CA it trusts, and the
/// certificate it presents (a server's own, which masters and agents also
/// present as clients).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// CA certificate (PEM) to trust: connect to masters and agents over
    /// TLS and accept only certificates it signed. Servers also check
    /// client certificates against it (see --tls-client-auth).
    #[arg(long, global = true, value_name = "FILE", env = "MEZZ_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Certificate (PEM) this process presents: a master's or an agent's
    /// server certificate, also used as its client certificate; for other
    /// commands, a client certificate (mutual TLS).
    #[arg(long, global = true, value_name = "FILE", env = "MEZZ_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", env = "MEZZ_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// `mezz master` and `mezz agent`: whether callers must show a certificate.
#[derive(Args, Debug, Clone)]
pub struct ServerTlsArgs {
    /// With TLS on (--tls-cert, --tls-key): `required` refuses, during the
    /// handshake, every caller without a certificate signed by --tls-ca
    /// (mutual TLS); `optional` checks one if shown; `none` asks for none.
    #[arg(long, value_name = "none|optional|required", default_value = "none", value_parser = parse_client_auth)]
    pub tls_client_auth: ClientAuth,
}

fn parse_client_auth(s: &str) -> Result<ClientAuth, String> {
    s.parse()
}

impl TlsArgs {
    /// The client side: `None` without --tls-ca.
    pub fn client(&self) -> Result<Option<ClientTls>> {
        match &self.tls_ca {
            None => Ok(None),
            Some(ca) => Ok(Some(ClientTls::load(
                ca,
                self.tls_cert.as_deref(),
                self.tls_key.as_deref(),
            )?)),
        }
    }

    /// The server side of `mezz master`/`mezz agent`: `None` without
    /// --tls-cert.
    pub fn server(&self, auth: &ServerTlsArgs) -> Result<Option<Arc<ServerTls>>> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => {
                if auth.tls_client_auth != ClientAuth::None {
                    return Err(anyhow!(
                        "--tls-client-auth needs TLS on: pass --tls-cert and --tls-key"
                    ));
                }
                return Ok(None);
            }
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            (Some(_), None) => return Err(anyhow!("--tls-cert needs --tls-key")),
            (None, Some(_)) => return Err(anyhow!("--tls-key needs --tls-cert")),
        };
        let tls = ServerTls::load(&ServerTlsFiles {
            cert,
            key,
            ca: self.tls_ca.clone(),
            client_auth: auth.tls_client_auth,
        })?;
        Ok(Some(Arc::new(tls)))
    }

    /// Makes this process's client TLS the flags' (or the environment's),
    /// and remembers them for the processes it starts ([`child_env`]).
    pub fn install_client(&self) -> Result<()> {
        mezz_proto::tls::set_client_tls(self.client()?);
        let env: Vec<(&'static str, PathBuf)> = [
            (mezz_proto::tls::ENV_CA, &self.tls_ca),
            (mezz_proto::tls::ENV_CERT, &self.tls_cert),
            (mezz_proto::tls::ENV_KEY, &self.tls_key),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            let v = v.as_ref()?;
            Some((k, std::path::absolute(v).unwrap_or_else(|_| v.clone())))
        })
        .collect();
        let _ = CHILD_ENV.set(env);
        Ok(())
    }
}

static CHILD_ENV: std::sync::OnceLock<Vec<(&'static str, PathBuf)>> = std::sync::OnceLock::new();

/// `MEZZ_TLS_*` for a `mezz` process this one starts (a framework
/// daemon), so that it connects as this one does, also when the files
/// were given as flags.
pub fn child_env() -> Vec<(&'static str, PathBuf)> {
    CHILD_ENV.get().cloned().unwrap_or_default()
}
