//! TLS for every Mezzanine connection: certificates and keys read from PEM
//! files, the server side that masters and agents put in their accept
//! loops, and the process-wide client side that [`crate::client::endpoint`]
//! uses for every outgoing connection (CLI, agents, frameworks, masters'
//! calls to peers and agents).
//!
//! One process has one client identity: a master or an agent presents its
//! own certificate when it calls out (mutual TLS between masters and
//! agents), a CLI or framework the one in `MEZZ_TLS_CERT`/`MEZZ_TLS_KEY`,
//! if any. Hence the process-wide setting rather than a parameter threaded
//! through every call site.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpStream;

/// Environment variable naming the CA file clients trust.
pub const ENV_CA: &str = "MEZZ_TLS_CA";
/// Environment variable naming the certificate a process presents.
pub const ENV_CERT: &str = "MEZZ_TLS_CERT";
/// Environment variable naming the key of [`ENV_CERT`].
pub const ENV_KEY: &str = "MEZZ_TLS_KEY";

/// How long a peer has to send its first byte and finish the handshake.
/// Handshakes run in the connection's own task, so a slow or silent peer
/// holds only itself up, never the accept loop.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS handshake record; anything else on a TLS port
/// is a plaintext client.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What is wrong with a TLS setting, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file that cannot be read.
    #[error("{what} {path}: cannot read it: {cause}")]
    Read {
        /// The flag that named the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A file whose content is not what the flag needs.
    #[error("{what} {path}: {message}")]
    Invalid {
        /// The flag that named the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Settings that do not go together.
    #[error("{0}")]
    Config(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|cause| TlsError::Read {
        what,
        path: path.to_path_buf(),
        cause,
    })
}

/// Every certificate in the PEM file at `path`; at least one.
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let invalid = |message: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            "holds no certificate (expected a PEM block 'BEGIN CERTIFICATE')".into(),
        ));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Invalid {
        what: "--tls-key",
        path: path.to_path_buf(),
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no private key (expected a PEM block 'BEGIN PRIVATE KEY', 'BEGIN EC PRIVATE KEY' or 'BEGIN RSA PRIVATE KEY')".into()
            }
            e => format!("not a valid PEM private key: {e}"),
        },
    })
}

/// The `ring` provider: it builds with a plain C compiler, where aws-lc-rs
/// needs cmake. (Deprecated in rustls only for lacking post-quantum key
/// exchange, which ring does not offer.)
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks that `key` is the private key of `certs[0]`, so a mismatch is
/// reported at start-up, not as every peer's handshake failure.
fn check_pair(
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TlsError> {
    let signer = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Invalid {
            what: "--tls-key",
            path: key_path.to_path_buf(),
            message: format!("unusable private key: {e}"),
        })?;
    rustls::sign::CertifiedKey::new(certs.to_vec(), signer)
        .keys_match()
        .map_err(|e| {
            TlsError::Config(format!(
                "--tls-key {} does not belong to the certificate in --tls-cert {} ({e}); give the key the certificate was made for",
                key_path.display(),
                cert_path.display()
            ))
        })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs("--tls-ca", path)? {
        store.add(cert).map_err(|e| TlsError::Invalid {
            what: "--tls-ca",
            path: path.to_path_buf(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// `--tls-client-auth`: whether a server asks callers for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificates (callers prove who they are otherwise).
    #[default]
    None,
    /// A certificate is checked against `--tls-ca` if one is presented.
    Optional,
    /// Only callers with a certificate signed by `--tls-ca` get through
    /// the handshake.
    Required,
}

impl FromStr for ClientAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(ClientAuth::None),
            "optional" => Ok(ClientAuth::Optional),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!("'{other}' is not one of none, optional, required")),
        }
    }
}

/// The files a TLS server is configured with.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Trusted for client certificates.
    pub ca: Option<PathBuf>,
    /// Whether callers must present a certificate.
    pub client_auth: ClientAuth,
}

/// A connection accepted on a TLS port.
pub enum Accepted {
    /// A finished handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The peer's first byte was not a TLS handshake: a plaintext client.
    /// The caller may answer it with an explanation, never with data.
    Plaintext(TcpStream),
}

/// The server side: the acceptor and a rate-limited log of failures.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    failures: Mutex<FailureLog>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

/// Logs failed handshakes at most every this often, with a count.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct FailureLog {
    since_log: u64,
    last_log: Option<Instant>,
}

impl ServerTls {
    /// Reads and checks the files; ALPN offers h2 and http/1.1 so gRPC
    /// clients, browsers and curl all get through.
    pub fn load(files: &ServerTlsFiles) -> Result<ServerTls, TlsError> {
        let certs = load_certs("--tls-cert", &files.cert)?;
        let key = load_key(&files.key)?;
        check_pair(&certs, &key, &files.cert, &files.key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(format!("TLS protocol versions: {e}")))?;
        let builder = match (files.client_auth, &files.ca) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (auth, None) => {
                return Err(TlsError::Config(format!(
                    "--tls-client-auth {}: needs --tls-ca, the CA that signs client certificates",
                    if auth == ClientAuth::Required {
                        "required"
                    } else {
                        "optional"
                    }
                )))
            }
            (auth, Some(ca)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
                let verifier = if auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::Config(format!("--tls-ca {}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(format!("--tls-cert/--tls-key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            failures: Mutex::new(FailureLog::default()),
        })
    }

    /// Runs the handshake on `tcp` (call it in the connection's own task),
    /// within [`HANDSHAKE_TIMEOUT`]. `None`: the peer went away or failed
    /// the handshake, which is logged at a bounded rate.
    pub async fn accept(&self, tcp: TcpStream, peer: SocketAddr) -> Option<Accepted> {
        let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let mut first = [0u8; 1];
            match tcp.peek(&mut first).await {
                Ok(0) => return Err(None),
                Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
                    return Ok(Accepted::Plaintext(tcp));
                }
                Ok(_) => {}
                Err(e) => return Err(Some(format!("reading the handshake: {e}"))),
            }
            match self.acceptor.accept(tcp).await {
                Ok(s) => Ok(Accepted::Tls(Box::new(s))),
                Err(e) => Err(Some(e.to_string())),
            }
        })
        .await;
        match outcome {
            Ok(Ok(Accepted::Plaintext(tcp))) => {
                self.note_failure(
                    peer,
                    "a plaintext client (it did not start a TLS handshake)",
                );
                Some(Accepted::Plaintext(tcp))
            }
            Ok(Ok(a)) => Some(a),
            Ok(Err(None)) => None,
            Ok(Err(Some(why))) => {
                self.note_failure(peer, &why);
                None
            }
            Err(_) => {
                self.note_failure(
                    peer,
                    &format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                );
                None
            }
        }
    }

    fn note_failure(&self, peer: SocketAddr, why: &str) {
        let Ok(mut log) = self.failures.lock() else {
            return;
        };
        log.since_log += 1;
        let now = Instant::now();
        if log
            .last_log
            .is_none_or(|t| now.duration_since(t) >= FAILURE_LOG_EVERY)
        {
            tracing::warn!(
                failed = log.since_log,
                %peer,
                "TLS handshake failed: {why} (counting since the last such line)"
            );
            log.since_log = 0;
            log.last_log = Some(now);
        }
    }
}

/// What a client trusts and presents.
#[derive(Clone)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Never the key's bytes, not even in a debug print.
impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads and checks the CA file and, if given, the certificate and key
    /// this process presents.
    pub fn load(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<ClientTls, TlsError> {
        roots(ca)?;
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let certs = load_certs("--tls-cert", cert)?;
                let k = load_key(key)?;
                check_pair(&certs, &k, cert, key)?;
                Some((read("--tls-cert", cert)?, read("--tls-key", key)?))
            }
            (Some(_), None) => {
                return Err(TlsError::Config(format!(
                    "--tls-cert ({ENV_CERT}) needs --tls-key ({ENV_KEY})"
                )))
            }
            (None, Some(_)) => {
                return Err(TlsError::Config(format!(
                    "--tls-key ({ENV_KEY}) needs --tls-cert ({ENV_CERT})"
                )))
            }
        };
        Ok(ClientTls {
            ca_pem: read("--tls-ca", ca)?,
            identity,
        })
    }

    /// From `MEZZ_TLS_CA` (and `MEZZ_TLS_CERT`/`MEZZ_TLS_KEY`); `None`
    /// without `MEZZ_TLS_CA`.
    pub fn from_env() -> Result<Option<ClientTls>, TlsError> {
        let var = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        match var(ENV_CA) {
            None => Ok(None),
            Some(ca) => {
                ClientTls::load(&ca, var(ENV_CERT).as_deref(), var(ENV_KEY).as_deref()).map(Some)
            }
        }
    }

    /// The tonic configuration for one endpoint.
    pub fn tonic_config(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => config.identity(tonic::transport::Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

static CLIENT_TLS: OnceLock<Option<ClientTls>> = OnceLock::new();

/// Sets this process's client TLS (`None`: plaintext). Call it before the
/// first connection; false if the setting was already made (by an earlier
/// call, or taken from the environment by a connection).
pub fn set_client_tls(tls: Option<ClientTls>) -> bool {
    CLIENT_TLS.set(tls).is_ok()
}

/// Takes this process's client TLS from the environment unless it is set
/// already; an error (a missing or unreadable file, a key that does not
/// match) is returned, not logged, so a program can refuse to start.
pub fn init_client_tls_from_env() -> Result<(), TlsError> {
    if CLIENT_TLS.get().is_none() {
        let _ = CLIENT_TLS.set(ClientTls::from_env()?);
    }
    Ok(())
}

/// This process's client TLS. Unless [`set_client_tls`] was called, taken
/// from the environment on first use; a broken setting there is logged
/// and connections stay plaintext (the CLI and the SDK check it first and
/// refuse to start instead).
pub fn client_tls() -> Option<&'static ClientTls> {
    CLIENT_TLS
        .get_or_init(|| {
            ClientTls::from_env().unwrap_or_else(|e| {
                tracing::error!("{ENV_CA}: {e}; connecting without TLS");
                None
            })
        })
        .as_ref()
}

/// `https` when this process connects with TLS, else `http`: for the
/// addresses it hands out (redirects, links).
pub fn scheme() -> &'static str {
    if client_tls().is_some() {
        "https"
    } else {
        "http"
    }
}

/// On a plaintext port: `Some(true)` when the peer opened with a TLS
/// handshake, `Some(false)` for anything else, `None` when it sent
/// nothing within `wait` or went away.
pub async fn opens_with_tls(tcp: &TcpStream, wait: Duration) -> Option<bool> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, tcp.peek(&mut first)).await {
        Ok(Ok(1..)) => Some(first[0] == TLS_HANDSHAKE_RECORD),
        _ => None,
    }
}

/// Answers a TLS client of a plaintext port with bytes its TLS library
/// reports as "not TLS", then lets it send its alert and close before
/// closing: a client whose alert hits a closed socket dies of SIGPIPE
/// (as `mezz` commands do) instead of saying what went wrong.
pub async fn refuse_tls_client(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = "this server does not speak TLS; connect without --tls-ca/MEZZ_TLS_CA\n";
    let resp = format!(
        "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        tcp.write_all(resp.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 1024];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// What a plaintext client hears from a TLS server.
pub const PLAINTEXT_REFUSAL: &str =
    "this master speaks TLS; pass --tls-ca (or set MEZZ_TLS_CA) with the cluster's CA certificate";

/// A connection error with every cause in its chain and, where the cause
/// is a TLS mismatch, what to do about it.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    match hint(&text, client_tls().is_some()) {
        Some(h) => format!("{text} ({h})"),
        None => text,
    }
}

/// A failed call's status as text: its message, every cause under it
/// (a refused handshake shows up only there) and, for a TLS mismatch,
/// what to do.
pub fn describe_status(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut cause = std::error::Error::source(status);
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    match hint(&text, client_tls().is_some()) {
        Some(h) => format!("{text} ({h})"),
        None => text,
    }
}

fn hint(text: &str, tls: bool) -> Option<&'static str> {
    if tls && (text.contains("InvalidContentType") || text.contains("corrupt message")) {
        return Some(
            "the peer does not speak TLS; start it with --tls-cert and --tls-key, or connect without --tls-ca/MEZZ_TLS_CA",
        );
    }
    if text.contains("UnknownIssuer") {
        return Some("the peer's certificate is not signed by the CA in --tls-ca/MEZZ_TLS_CA");
    }
    if text.contains("NotValidForName") {
        return Some("the peer's certificate does not name the address connected to");
    }
    if text.contains("CertificateRequired") || text.contains("certificate required") {
        return Some(
            "the peer requires a client certificate: pass --tls-cert and --tls-key (MEZZ_TLS_CERT, MEZZ_TLS_KEY)",
        );
    }
    if text.contains("BadCertificate") || text.contains("UnknownCA") {
        return Some("the peer refused this client's certificate (not signed by its CA)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_auth_parses_and_names_the_choices() {
        assert_eq!("required".parse(), Ok(ClientAuth::Required));
        assert_eq!("none".parse(), Ok(ClientAuth::None));
        assert!("yes"
            .parse::<ClientAuth>()
            .unwrap_err()
            .contains("none, optional, required"));
    }

    #[test]
    fn hints_name_the_mismatch() {
        assert!(
            hint("received corrupt message of type InvalidContentType", true)
                .unwrap()
                .contains("does not speak TLS")
        );
        assert_eq!(hint("received corrupt message", false), None);
        assert!(hint("invalid peer certificate: UnknownIssuer", false)
            .unwrap()
            .contains("not signed by the CA"));
        assert_eq!(hint("connection refused", true), None);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let e = load_certs("--tls-ca", &missing).unwrap_err().to_string();
        assert!(
            e.starts_with("--tls-ca ") && e.contains("cannot read it"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "hello\n").expect("write");
        let e = load_certs("--tls-ca", &empty).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let e = load_key(&empty).unwrap_err().to_string();
        assert!(e.contains("holds no private key"), "{e}");
    }
}
