//! Accepting and keeping the master's connections (gRPC and HTTP on one
//! port): a bound on how many are open at once, an idle timeout for those
//! that carry no request, HTTP/2 keepalive pings for those that do, and a
//! graceful drain at shutdown. What runs on a connection is the router's
//! business; this module only decides how long a connection may live.
//!
//! A connection is idle while it has no request in flight: one that never
//! sends a request, an HTTP/1.1 keep-alive connection between requests, an
//! HTTP/2 connection with no open stream. Idle for the idle timeout, it is
//! closed. A long-lived stream (an agent's Attach, a framework's
//! Subscribe, raft traffic) is a request in flight for as long as it lasts,
//! so it is never cut for being quiet; a peer that died under it is found
//! by HTTP/2 keepalive pings (and by the heartbeats those streams carry).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mezz_proto::tls::{Accepted, ServerTls, PLAINTEXT_REFUSAL};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

/// How the master treats connections.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Connections open at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 keepalive: a ping after this long without a frame from the
    /// peer, and the connection closed if the answer takes longer again.
    pub keepalive: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(20),
        }
    }
}

/// Connections open at once unless configured otherwise; lowered to what
/// the process's open-file limit allows (see [`effective_max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// File descriptors kept out of the connection budget: the raft log, sled,
/// outgoing connections to peers and agents, the listener itself.
const RESERVED_FDS: u64 = 128;

/// How long a drain at shutdown waits for connections to finish.
const DRAIN: Duration = Duration::from_secs(10);

/// The connection bound actually used: `configured`, but never so many that
/// the open-file limit would be reached first (the master would then fail
/// to open its own files, or stop accepting without saying why).
pub fn effective_max_connections(configured: usize) -> usize {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != RLIM_INFINITY => soft,
        _ => return configured.max(1),
    };
    let budget = soft.saturating_sub(RESERVED_FDS).max(16);
    configured.clamp(1, usize::try_from(budget).unwrap_or(usize::MAX))
}

/// Logs refusals at most every this often, with a count.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts refused connections and logs them, rate-limited.
struct Refusals {
    since_log: u64,
    last_log: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, limit: usize, peer: Option<SocketAddr>, why: &str) {
        self.since_log += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_EVERY)
        {
            tracing::warn!(
                refused = self.since_log,
                limit,
                peer = peer.map(|p| p.to_string()).unwrap_or_default(),
                "refusing connections: {why} (counting since the last such line)"
            );
            self.since_log = 0;
            self.last_log = Some(now);
        }
    }
}

/// What a connection's watchdog needs to know.
struct Activity {
    /// Requests in flight (a streaming response counts until it ends).
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened), in
    /// milliseconds since `epoch`.
    idle_since: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Decrements the in-flight count when the response (or the request, if
/// it never got one) is done with.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(a))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, asks every connection to finish (HTTP/2 GOAWAY, HTTP/1 close
/// after the current response) and waits for them, at most 10 s (`DRAIN`).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_with_tls(listener, router, limits, None, shutdown).await
}

/// [`serve`], with TLS when `tls` is given: each connection's handshake
/// runs in that connection's task (bounded by
/// [`mezz_proto::tls::HANDSHAKE_TIMEOUT`]), so a slow or failing peer
/// never holds up the accept loop; failures are logged at a bounded rate.
/// A plaintext client gets no data, only a refusal that says to use TLS
/// (see [`plaintext_refusal`]).
pub async fn serve_with_tls(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnLimits,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max = effective_max_connections(limits.max_connections);
    if max < limits.max_connections {
        tracing::info!(
            max,
            "at most {max} connections at once (the open-file limit allows no more)"
        );
    }
    let open = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut refusals = Refusals {
        since_log: 0,
        last_log: None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
            // Reap finished connection tasks as they end.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, typically: say so, and give
                // connections a moment to close rather than spin.
                refusals.note(max, None, &format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::SeqCst) >= max {
            refusals.note(max, Some(peer), "too many open connections");
            drop(tcp);
            continue;
        }
        // Small gRPC frames must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        open.fetch_add(1, Ordering::SeqCst);
        let open = Arc::clone(&open);
        let router = router.clone();
        let limits = limits.clone();
        let stop = stop_rx.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            // Until the first byte (and the handshake) a connection is not
            // yet served: a shutdown drops it rather than wait for it.
            let mut stopping = stop.clone();
            let stopped = async move {
                let _ = stopping.wait_for(|s| *s).await;
            };
            let first = async {
                match tls {
                    // A TLS client of this plaintext port is told so (and
                    // not left to die of a broken pipe); the peek costs
                    // nothing to a client that speaks first, as HTTP and
                    // gRPC do.
                    None => {
                        match mezz_proto::tls::opens_with_tls(&tcp, limits.idle_timeout).await {
                            Some(false) => Some(Accepted::Plaintext(tcp)),
                            Some(true) => {
                                mezz_proto::tls::refuse_tls_client(tcp).await;
                                None
                            }
                            None => None,
                        }
                    }
                    Some(tls) => match tls.accept(tcp, peer).await {
                        Some(Accepted::Plaintext(tcp)) => {
                            // Served, but only with the refusal.
                            serve_one(tcp, peer, plaintext_refusal(), &limits, stop.clone()).await;
                            None
                        }
                        tls => tls,
                    },
                }
            };
            let accepted = tokio::select! {
                a = first => a,
                _ = stopped => None,
            };
            match accepted {
                // Plaintext on a plaintext port (a TLS port's plaintext
                // clients got their refusal above).
                Some(Accepted::Plaintext(tcp)) => serve_one(tcp, peer, router, &limits, stop).await,
                Some(Accepted::Tls(stream)) => {
                    serve_one(*stream, peer, router, &limits, stop).await
                }
                None => {}
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "connections still open {DRAIN:?} after shutdown; closing them"
        );
        tasks.abort_all();
    }
}

/// What a plaintext client of a TLS port gets, whatever it asks: gRPC
/// callers a FAILED_PRECONDITION status, browsers and curl a 400, both
/// saying to use TLS. Nothing of the cluster's is served without it.
pub fn plaintext_refusal() -> axum::Router {
    axum::Router::new().fallback(|req: Request<Body>| async move {
        let grpc = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/grpc"));
        if grpc {
            tonic::Status::failed_precondition(PLAINTEXT_REFUSAL).into_http::<Body>()
        } else {
            let mut resp = Response::new(Body::from(format!(
                "{PLAINTEXT_REFUSAL}; in a browser or with curl, use https://\n"
            )));
            *resp.status_mut() = axum::http::StatusCode::BAD_REQUEST;
            resp
        }
    })
}

async fn serve_one<IO>(
    tcp: IO,
    peer: SocketAddr,
    router: axum::Router,
    limits: &ConnLimits,
    mut stop: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        idle_since: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let svc_activity = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let guard = InFlight::start(&svc_activity);
        let mut router = router.clone();
        // The peer's address, for handlers that log who called.
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        async move {
            let resp = tower_service::Service::call(&mut router, req).await;
            Ok::<_, std::convert::Infallible>(resp.map_or_else(
                |never| match never {},
                |resp: Response<Body>| {
                    // The request stays in flight until its body is done:
                    // for a stream, until the stream ends.
                    resp.map(|body| {
                        Body::new(body.map_frame(move |frame| {
                            let _ = &guard;
                            frame
                        }))
                    })
                },
            ))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive)
        .keep_alive_timeout(limits.keepalive);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let check_every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(check_every) => {
                let quiet_ms = activity
                    .now_ms()
                    .saturating_sub(activity.idle_since.load(Ordering::SeqCst));
                if activity.in_flight.load(Ordering::SeqCst) == 0
                    && quiet_ms >= idle.as_millis() as u64
                {
                    tracing::debug!(%peer, "closing a connection idle for {idle:?}");
                    return;
                }
            }
        }
    }
}
