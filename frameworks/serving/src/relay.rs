//! The proxy process (`mezz serve proxy`): every service's reverse proxy,
//! in a process of its own so that services keep answering while the
//! daemon restarts, crashes or is upgraded. The daemon is the control
//! plane (it knows the replicas and their health); this process is the
//! data plane (it holds the services' ports and forwards requests). Between
//! two words from the daemon it keeps serving the last routes it was given:
//! a replica that went away meanwhile costs an idempotent request a retry
//! on another replica, nothing more.
//!
//! One proxy process per state directory (a lock file says so). It
//! publishes its admin address and a fresh secret in `proxy.json` (0600)
//! and answers, on 127.0.0.1 only and to the secret only:
//! `GET /v1/health`; `POST /v1/listen/NAME` (opens a new port for a new
//! service and says which); `PUT /v1/routes` (the whole table: ports and
//! healthy replicas of every service; services left out are closed; the
//! answer says which ports could not be opened again, and how many
//! requests are in flight per replica, for draining); `GET /metrics`.
//!
//! It ends by itself when no daemon has spoken to it for the framework's
//! failover timeout (by then the master has ended the replicas), or when
//! its state directory no longer names it.
//!
//! The daemon's side, [`Link`], starts the process when none answers and
//! pushes the routes; the same code runs the proxies inside the daemon
//! when no command to start a process is given (a library user's choice).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::metrics::Registry;
use crate::proxy::{Backends, Routes};
use crate::store::{self, random_hex, StateDir};
use crate::{http, Error};

/// Where the proxy process's admin API listens and its secret.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProxyInfo {
    /// The proxy process's id.
    pub pid: u32,
    /// `127.0.0.1:PORT` of the admin API.
    pub address: String,
    /// The bearer secret every admin request carries.
    pub secret: String,
}

/// One service's entry in the routes table.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Route {
    /// The service's port on 127.0.0.1.
    pub port: u16,
    /// Where its requests may go.
    pub backends: Backends,
}

/// The whole routes table, as the daemon pushes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RouteTable {
    /// Every service, by name.
    pub services: BTreeMap<String, Route>,
}

/// The proxy's answer to a push.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PushAnswer {
    /// Services whose port could not be opened, with why.
    pub failed: BTreeMap<String, String>,
    /// Requests in flight per replica address, after the push took effect.
    pub in_flight: HashMap<String, usize>,
}

#[derive(Serialize, Deserialize)]
struct Listened {
    port: u16,
}

#[derive(Serialize, Deserialize)]
struct Pid {
    pid: u32,
}

struct Listening {
    port: u16,
    task: tokio::task::AbortHandle,
}

/// The proxies of one state directory.
#[derive(Clone)]
struct Relay {
    routes: Routes,
    registry: Registry,
    listening: Arc<tokio::sync::Mutex<HashMap<String, Listening>>>,
    last_word: Arc<Mutex<Instant>>,
    /// The ports that could not be opened at the last push: said once in
    /// the log, not at every push.
    failing: Arc<Mutex<BTreeMap<String, String>>>,
    secret: String,
}

impl Relay {
    fn new(secret: String) -> Relay {
        Relay {
            routes: Routes::default(),
            registry: Registry::default(),
            listening: Default::default(),
            last_word: Arc::new(Mutex::new(Instant::now())),
            failing: Default::default(),
            secret,
        }
    }

    fn heard(&self) {
        *self.last_word.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn silent_for(&self) -> Duration {
        self.last_word
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    fn start(&self, name: &str, listener: tokio::net::TcpListener) -> tokio::task::AbortHandle {
        tokio::spawn(crate::proxy::serve(
            listener,
            name.to_string(),
            self.routes.clone(),
            self.registry.clone(),
        ))
        .abort_handle()
    }

    async fn listen(&self, name: &str) -> Result<u16, Error> {
        let mut listening = self.listening.lock().await;
        if let Some(l) = listening.get(name) {
            return Err(Error::Conflict(format!(
                "the proxy of '{name}' already listens on port {}",
                l.port
            )));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Daemon(format!("cannot listen on 127.0.0.1 for a proxy: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::Daemon(format!("cannot read a proxy's port: {e}")))?
            .port();
        // A service of this name deployed before starts its counts anew.
        self.registry.remove(name);
        let task = self.start(name, listener);
        listening.insert(name.to_string(), Listening { port, task });
        tracing::info!(service = %name, port, "proxy listening");
        Ok(port)
    }

    async fn apply(&self, table: RouteTable) -> PushAnswer {
        let mut listening = self.listening.lock().await;
        let mut failed = BTreeMap::new();
        for (name, route) in &table.services {
            self.routes.set(name, route.backends.clone());
            if listening.get(name).is_some_and(|l| l.port == route.port) {
                continue;
            }
            if let Some(old) = listening.remove(name) {
                old.task.abort();
            }
            match tokio::net::TcpListener::bind(("127.0.0.1", route.port)).await {
                Ok(listener) => {
                    let task = self.start(name, listener);
                    listening.insert(
                        name.clone(),
                        Listening {
                            port: route.port,
                            task,
                        },
                    );
                    tracing::info!(service = %name, port = route.port, "proxy listening again");
                }
                Err(e) => {
                    let why = format!(
                        "the proxy cannot listen on 127.0.0.1:{} again ({e}): another program holds the port; stop it, or `mezz serve rm {name}` and deploy the service anew",
                        route.port
                    );
                    failed.insert(name.clone(), why);
                }
            }
        }
        let gone: Vec<String> = listening
            .keys()
            .filter(|n| !table.services.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(l) = listening.remove(&name) {
                l.task.abort();
                tracing::info!(service = %name, port = l.port, "proxy closed");
            }
            self.routes.remove(&name);
            self.registry.remove(&name);
        }
        {
            let mut before = self.failing.lock().unwrap_or_else(|p| p.into_inner());
            for (name, why) in &failed {
                if before.get(name) != Some(why) {
                    tracing::warn!(service = %name, "{why}");
                }
            }
            before.clone_from(&failed);
        }
        let in_flight = self
            .registry
            .in_flight()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        PushAnswer { failed, in_flight }
    }

    async fn render(&self) -> String {
        let names: Vec<String> = self.listening.lock().await.keys().cloned().collect();
        let counts = self
            .registry
            .in_flight()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let gauges: Vec<(String, u32, usize)> = names
            .into_iter()
            .map(|n| {
                let b = self.routes.get(&n);
                let all = b.all();
                let busy = all
                    .iter()
                    .map(|a| counts.get(a).copied().unwrap_or(0))
                    .sum();
                (n, all.len() as u32, busy)
            })
            .collect();
        self.registry.render(&gauges)
    }

    fn refused(&self, headers: &HeaderMap) -> Option<Response> {
        (!crate::api::carries_secret(headers, &self.secret))
            .then(|| (StatusCode::UNAUTHORIZED, "missing or wrong secret").into_response())
    }
}

async fn health(State(r): State<Relay>, headers: HeaderMap) -> Response {
    if let Some(no) = r.refused(&headers) {
        return no;
    }
    Json(Pid {
        pid: std::process::id(),
    })
    .into_response()
}

async fn listen(State(r): State<Relay>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(no) = r.refused(&headers) {
        return no;
    }
    r.heard();
    match r.listen(&name).await {
        Ok(port) => Json(Listened { port }).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn routes(
    State(r): State<Relay>,
    headers: HeaderMap,
    Json(table): Json<RouteTable>,
) -> Response {
    if let Some(no) = r.refused(&headers) {
        return no;
    }
    r.heard();
    Json(r.apply(table).await).into_response()
}

async fn metrics(State(r): State<Relay>, headers: HeaderMap) -> Response {
    if let Some(no) = r.refused(&headers) {
        return no;
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        r.render().await,
    )
        .into_response()
}

/// The largest routes table taken: far above any real cluster's services.
const MAX_TABLE: usize = 8 << 20;

/// Serves the admin API of `relay` on `listener`.
async fn serve_admin(listener: tokio::net::TcpListener, relay: Relay) {
    let app = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/listen/{name}", post(listen))
        .route("/v1/routes", put(routes))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_TABLE))
        .with_state(relay);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the proxy's admin API stopped: {e}");
    }
}

/// How the proxy process runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The state directory it shares with the daemon.
    pub state_dir: std::path::PathBuf,
    /// It ends after this long without a word from a daemon.
    pub orphan_timeout: Duration,
}

/// Runs the proxy process until `shutdown` resolves, no daemon has spoken
/// for the orphan timeout, or the state directory stops naming it.
/// Returns `Ok(false)` at once when another proxy process holds the
/// directory.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<bool, Error> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let dir = store::open(&config.state_dir)?;
    let Some(_lock) = dir.lock_named(store::PROXY_LOCK)? else {
        tracing::info!(dir = %dir.path().display(), "another proxy process serves this state directory");
        return Ok(false);
    };
    let (relay, info) = start_admin().await?;
    store::set_proxy(&dir, &info)?;
    tracing::info!(address = %info.address, dir = %dir.path().display(), "proxy process ready");
    let pid = info.pid;
    let watch = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if relay.silent_for() > config.orphan_timeout {
                tracing::info!(
                    "no daemon has spoken for {:?}: ending",
                    config.orphan_timeout
                );
                return;
            }
            match store::proxy(&dir) {
                Ok(Some(p)) if p.pid == pid => {}
                _ => {
                    tracing::info!("the state directory no longer names this process: ending");
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = watch => {}
        _ = shutdown => tracing::info!("stopping"),
    }
    store::clear_proxy(&dir, pid);
    Ok(true)
}

/// Binds the admin API of a new relay on 127.0.0.1.
async fn start_admin() -> Result<(Relay, ProxyInfo), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::State(format!("cannot listen on 127.0.0.1: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::State(format!("cannot read the admin address: {e}")))?
        .to_string();
    let relay = Relay::new(random_hex()?);
    let info = ProxyInfo {
        pid: std::process::id(),
        address,
        secret: relay.secret.clone(),
    };
    tokio::spawn(serve_admin(listener, relay.clone()));
    Ok((relay, info))
}

/// A client of a proxy process's admin API.
#[derive(Clone, Debug)]
pub struct ProxyClient {
    info: ProxyInfo,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl ProxyClient {
    /// A client of the proxy described by `info`.
    pub fn new(info: ProxyInfo) -> ProxyClient {
        ProxyClient { info }
    }

    /// The proxy process's id.
    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response, Error> {
        let auth = format!("Bearer {}", self.info.secret);
        let r = http::request(
            &self.info.address,
            method,
            path,
            &[("Authorization", &auth)],
            body.as_deref(),
            TIMEOUT,
        )
        .await
        .map_err(|e| Error::Daemon(format!("the proxy process: {e}")))?;
        if r.status >= 400 {
            let text = serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or_else(|| r.text());
            return Err(match r.status {
                409 => Error::Conflict(text),
                _ => Error::Daemon(format!("the proxy process answered {}: {text}", r.status)),
            });
        }
        Ok(r)
    }

    fn decode<T: serde::de::DeserializeOwned>(r: http::Response) -> Result<T, Error> {
        serde_json::from_slice(&r.body).map_err(|e| {
            Error::Daemon(format!("the proxy process's answer is not understood: {e}"))
        })
    }

    /// Whether it answers, and as the process it says it is.
    pub async fn alive(&self) -> bool {
        match self.call("GET", "/v1/health", None).await {
            Ok(r) => Self::decode::<Pid>(r).is_ok_and(|p| p.pid == self.info.pid),
            Err(_) => false,
        }
    }

    /// Opens a new port for service `name`.
    pub async fn listen(&self, name: &str) -> Result<u16, Error> {
        let r = self
            .call("POST", &format!("/v1/listen/{name}"), None)
            .await?;
        Ok(Self::decode::<Listened>(r)?.port)
    }

    /// Pushes the whole routes table.
    pub async fn push(&self, table: &RouteTable) -> Result<PushAnswer, Error> {
        let body = serde_json::to_vec(table)
            .map_err(|e| Error::Daemon(format!("cannot encode the routes: {e}")))?;
        Self::decode(self.call("PUT", "/v1/routes", Some(body)).await?)
    }

    /// The proxies' metrics, in the Prometheus text format.
    pub async fn metrics(&self) -> Result<String, Error> {
        Ok(self.call("GET", "/metrics", None).await?.text())
    }
}

/// How long the daemon waits for a proxy process it started to answer.
const START: Duration = Duration::from_secs(15);

/// The daemon's side: finds the proxy process of its state directory, or
/// starts one, and talks to it one call at a time (so that a deploy's new
/// port and the next push of routes cannot cross).
pub struct Link {
    dir: StateDir,
    command: Option<Vec<OsString>>,
    orphan_timeout: Duration,
    client: tokio::sync::Mutex<Option<ProxyClient>>,
}

/// The link, held: one conversation with the proxy at a time.
pub struct Held<'a> {
    link: &'a Link,
    client: tokio::sync::MutexGuard<'a, Option<ProxyClient>>,
}

impl Link {
    /// A link for `store`'s proxy. `command` is the program and leading
    /// arguments that run `mezz serve proxy` (the link adds
    /// `--state-dir DIR --orphan-timeout SECS`); without one, the proxies
    /// run inside this process.
    pub fn new(dir: StateDir, command: Option<Vec<OsString>>, orphan_timeout: Duration) -> Link {
        Link {
            dir,
            command,
            orphan_timeout,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// Holds the link for one conversation.
    pub async fn hold(&self) -> Held<'_> {
        Held {
            link: self,
            client: self.client.lock().await,
        }
    }

    /// The proxy process's metrics.
    pub async fn metrics(&self) -> Result<String, Error> {
        self.hold().await.client().await?.metrics().await
    }

    async fn find(&self) -> Option<ProxyClient> {
        let info = store::proxy(&self.dir).ok()??;
        let c = ProxyClient::new(info);
        c.alive().await.then_some(c)
    }

    async fn start(&self) -> Result<ProxyClient, Error> {
        if let Some(c) = self.find().await {
            return Ok(c);
        }
        let Some(command) = &self.command else {
            // In this process: the proxies end with it.
            let (relay, info) = start_admin().await?;
            let _ = relay;
            return Ok(ProxyClient::new(info));
        };
        let log = self.dir.open_log_named(store::PROXY_LOG)?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::State(format!("cannot open the proxy log: {e}")))?;
        let mut cmd = tokio::process::Command::new(&command[0]);
        cmd.args(&command[1..])
            .arg("--state-dir")
            .arg(self.dir.path())
            .arg("--orphan-timeout")
            .arg(format!("{}s", self.orphan_timeout.as_secs().max(1)))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Its own session: a signal to the daemon's group (Ctrl-C, a
        // service manager stopping the daemon) does not stop the traffic.
        // SAFETY: setsid is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        // Dropped without waiting: tokio reaps it when it ends.
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Daemon(format!("cannot start the proxy process: {e}")))?;
        let deadline = Instant::now() + START;
        loop {
            if let Some(c) = self.find().await {
                tracing::info!(pid = c.pid(), "proxy process started");
                return Ok(c);
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Exit 0: another proxy won the lock; it answers soon.
                if !status.success() {
                    return Err(Error::Daemon(format!(
                        "the proxy process exited ({status}); see {}",
                        self.dir.path().join(store::PROXY_LOG).display()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Daemon(format!(
                    "the proxy process did not answer within {START:?}; see {}",
                    self.dir.path().join(store::PROXY_LOG).display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Held<'_> {
    /// The proxy, started when none answers.
    pub async fn client(&mut self) -> Result<ProxyClient, Error> {
        if let Some(c) = self.client.as_ref() {
            return Ok(c.clone());
        }
        let c = self.link.start().await?;
        *self.client = Some(c.clone());
        Ok(c)
    }

    /// Forgets the proxy after a failed call: the next call looks for it
    /// again, and starts another when it is gone.
    pub fn forget(&mut self) {
        *self.client = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica that answers every request with `hi`.
    async fn replica() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = l.local_addr().unwrap().to_string();
        let app = Router::new().fallback(|| async { "hi" });
        tokio::spawn(async move { axum::serve(l, app).await });
        address
    }

    #[tokio::test]
    async fn ports_open_route_report_conflicts_and_close() {
        let (_relay, info) = start_admin().await.unwrap();
        let c = ProxyClient::new(info.clone());
        assert!(c.alive().await);
        // The secret is required.
        let wrong = ProxyClient::new(ProxyInfo {
            secret: "0".repeat(64),
            ..info
        });
        assert!(!wrong.alive().await);
        assert!(wrong.listen("m").await.is_err());

        let port = c.listen("m").await.unwrap();
        assert!(matches!(c.listen("m").await, Err(Error::Conflict(_))));
        let proxy = format!("127.0.0.1:{port}");
        // No backends yet: the proxy answers 503 itself.
        let r = http::request(&proxy, "GET", "/", &[], None, TIMEOUT)
            .await
            .unwrap();
        assert_eq!(r.status, 503, "{}", r.text());

        let backend = replica().await;
        let mut table = RouteTable::default();
        table.services.insert(
            "m".into(),
            Route {
                port,
                backends: Backends {
                    stable: vec![backend],
                    ..Default::default()
                },
            },
        );
        // A port someone else holds is reported by name, the rest served.
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = squatter.local_addr().unwrap().port();
        table.services.insert(
            "n".into(),
            Route {
                port: taken,
                backends: Backends::default(),
            },
        );
        let answer = c.push(&table).await.unwrap();
        assert_eq!(answer.failed.keys().collect::<Vec<_>>(), vec!["n"]);
        assert!(answer.failed["n"].contains(&format!("127.0.0.1:{taken}")));
        let r = http::request(&proxy, "GET", "/", &[], None, TIMEOUT)
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hi"));
        let metrics = c.metrics().await.unwrap();
        assert!(
            metrics.contains("mezz_serve_requests_total{service=\"m\"} 2"),
            "{metrics}"
        );
        // Freed, the port is taken at the next push.
        drop(squatter);
        let answer = c.push(&table).await.unwrap();
        assert!(answer.failed.is_empty(), "{answer:?}");

        // Left out of the table: closed.
        table.services.clear();
        c.push(&table).await.unwrap();
        let gone = async {
            while tokio::net::TcpStream::connect(&proxy).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the proxy's port closed");
    }
}
