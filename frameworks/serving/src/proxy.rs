//! A service's reverse proxy on 127.0.0.1 (HTTP/1.1, and HTTP/2 by prior
//! knowledge, towards replicas in HTTP/1.1): each request goes to
//! the healthy replica with the fewest requests outstanding through this
//! proxy; a GET or HEAD whose replica cannot be reached, or drops the
//! connection before answering, is tried once more on another replica.
//! Connections to replicas are kept open and reused (a new connection per
//! request would cost a handshake each, and leave thousands of loopback
//! ports waiting out TIME_WAIT under load). Bodies are read whole before
//! forwarding (so a retry can send one again) and answers are read whole
//! before being passed on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::metrics::Registry;

/// Connecting to a replica past this is a connection failure.
const CONNECT: Duration = Duration::from_secs(5);
/// A replica's whole answer past this is a failure (not retried).
const ANSWER: Duration = Duration::from_secs(300);

/// Idle connections kept per replica.
const IDLE_PER_REPLICA: usize = 64;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Requests in flight per replica address, where the next tie is broken,
/// and the idle connections to each replica.
#[derive(Default)]
struct Outstanding {
    counts: crate::metrics::InFlight,
    turn: AtomicUsize,
    split: AtomicUsize,
    idle: Mutex<HashMap<String, Vec<Sender>>>,
}

impl Outstanding {
    /// An idle connection to `address` that is still open.
    fn take_idle(&self, address: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(address)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        idle.remove(address);
        None
    }

    fn put_idle(&self, address: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(address.to_string()).or_default();
        if list.len() < IDLE_PER_REPLICA {
            list.push(sender);
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The candidate with the fewest requests in flight, counted as one
    /// more until the guard drops. Ties go round: one client asking one
    /// request at a time still reaches every replica.
    fn pick(self: &Arc<Self>, candidates: &[String]) -> Option<InFlight> {
        if candidates.is_empty() {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % candidates.len();
        let mut counts = self.counts();
        let best = candidates[start..]
            .iter()
            .chain(&candidates[..start])
            .min_by_key(|a| counts.get(*a).copied().unwrap_or(0))?
            .clone();
        *counts.entry(best.clone()).or_default() += 1;
        Some(InFlight {
            table: self.clone(),
            address: best,
        })
    }
}

struct InFlight {
    table: Arc<Outstanding>,
    address: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self.table.counts();
        if let Some(n) = counts.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// Where a proxy may send requests.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Backends {
    /// The healthy replicas of the service's command.
    pub stable: Vec<String>,
    /// The healthy canary replicas.
    pub canary: Vec<String>,
    /// The canary's share of the requests, in percent.
    pub weight: u32,
}

impl Backends {
    /// Every healthy replica.
    pub fn all(&self) -> Vec<String> {
        self.stable.iter().chain(&self.canary).cloned().collect()
    }
}

/// Every service's backends, as the proxies read them on each request;
/// cheap to clone. Whoever knows the replicas' health (the serving daemon)
/// sets them; between two settings the proxies keep the last ones.
#[derive(Clone, Default)]
pub struct Routes {
    table: Arc<std::sync::RwLock<HashMap<String, Arc<Backends>>>>,
}

impl Routes {
    /// The backends of `service`; none when it is unknown.
    pub fn get(&self, service: &str) -> Arc<Backends> {
        let t = self.table.read().unwrap_or_else(|p| p.into_inner());
        t.get(service).cloned().unwrap_or_default()
    }

    /// Sets the backends of `service`.
    pub fn set(&self, service: &str, backends: Backends) {
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        if t.get(service).map(|b| **b != backends).unwrap_or(true) {
            t.insert(service.to_string(), Arc::new(backends));
        }
    }

    /// Forgets `service`.
    pub fn remove(&self, service: &str) {
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        t.remove(service);
    }
}

/// Why forwarding failed.
enum Failure {
    /// The replica could not be reached, or closed before answering: safe
    /// to try another for an idempotent request.
    Connection(String),
    /// Anything else.
    Other(String),
}

/// Serves `service`'s proxy on `listener`, to the backends `routes` holds
/// for it, until the task is aborted. Requests are counted in `metrics`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: String,
    routes: Routes,
    registry: Registry,
) {
    let table = Arc::new(Outstanding {
        counts: registry.in_flight(),
        ..Default::default()
    });
    let metrics = registry.service(&service);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(%service, "proxy accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (service, routes, table, metrics) = (
            service.clone(),
            routes.clone(),
            table.clone(),
            metrics.clone(),
        );
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req| {
                let (service, routes, table, metrics) = (
                    service.clone(),
                    routes.clone(),
                    table.clone(),
                    metrics.clone(),
                );
                async move {
                    let start = std::time::Instant::now();
                    let (answer, own) = handle(req, &service, &routes, &table, &metrics).await;
                    metrics.record(start.elapsed(), own);
                    Ok::<_, Infallible>(answer)
                }
            });
            // HTTP/1.1, or HTTP/2 without TLS (prior knowledge), as the
            // client speaks; replicas are asked in HTTP/1.1 either way.
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text + "\n")));
    *r.status_mut() = status;
    r
}

/// The answer, and whether the proxy gave it itself (no replica could).
async fn handle(
    req: Request<Incoming>,
    service: &str,
    routes: &Routes,
    table: &Arc<Outstanding>,
    metrics: &crate::metrics::ServiceMetrics,
) -> (Response<Full<Bytes>>, bool) {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let r = plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request: {e}"),
            );
            return (r, false);
        }
    };
    let idempotent = parts.method == Method::GET || parts.method == Method::HEAD;
    let mut tried: Vec<String> = Vec::new();
    let mut last = String::new();
    for attempt in 0..2 {
        let backends = routes.get(service);
        // The canary's share by count: of every 100 requests, `weight` go
        // to the canary while it is healthy.
        let to_canary = !backends.canary.is_empty()
            && (table.split.fetch_add(1, Ordering::Relaxed) % 100) < backends.weight as usize;
        let healthy = if to_canary {
            backends.canary.clone()
        } else if backends.stable.is_empty() {
            backends.all()
        } else {
            backends.stable.clone()
        };
        let fresh: Vec<String> = healthy
            .iter()
            .filter(|a| !tried.contains(a))
            .cloned()
            .collect();
        // A retry goes to any other healthy replica; with one left, to it
        // again.
        let candidates = if !fresh.is_empty() {
            fresh
        } else {
            let others: Vec<String> = backends
                .all()
                .into_iter()
                .filter(|a| !tried.contains(a))
                .collect();
            if others.is_empty() {
                healthy
            } else {
                others
            }
        };
        let Some(slot) = table.pick(&candidates) else {
            let r = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("service '{service}' has no healthy replica right now"),
            );
            return (r, true);
        };
        tried.push(slot.address.clone());
        match forward(table, &slot.address, &parts, body.clone(), idempotent).await {
            Ok(r) => return (r, false),
            Err(Failure::Connection(e)) if idempotent && attempt == 0 => {
                tracing::debug!(%service, address = %slot.address, "retrying after: {e}");
                metrics.retried();
                last = e;
            }
            Err(Failure::Connection(e)) | Err(Failure::Other(e)) => {
                last = e;
                break;
            }
        }
    }
    let r = plain(
        StatusCode::BAD_GATEWAY,
        format!("service '{service}': {last}"),
    );
    (r, true)
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !hop_by_hop(k) {
            to.append(k.clone(), v.clone());
        }
    }
}

async fn connect(address: &str) -> Result<Sender, Failure> {
    let stream = tokio::time::timeout(CONNECT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| Failure::Connection(format!("{address} did not accept within {CONNECT:?}")))?
        .map_err(|e| Failure::Connection(format!("cannot connect to {address}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Connection(format!("{address}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn outgoing(
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, Failure> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = Request::new(Full::new(body));
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = path
        .parse()
        .map_err(|e| Failure::Other(format!("bad request path: {e}")))?;
    copy_headers(&parts.headers, out.headers_mut());
    // An HTTP/2 request names its host in the URI, not in a header.
    if !out.headers().contains_key(hyper::header::HOST) {
        if let Some(host) = parts.uri.authority().and_then(|a| a.as_str().parse().ok()) {
            out.headers_mut().insert(hyper::header::HOST, host);
        }
    }
    Ok(out)
}

async fn forward(
    table: &Outstanding,
    address: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
    idempotent: bool,
) -> Result<Response<Full<Bytes>>, Failure> {
    let exchange = async {
        let mut kept = table.take_idle(address);
        let (sender, answer) = loop {
            let reused = kept.is_some();
            let mut sender = match kept.take() {
                Some(s) => s,
                None => connect(address).await?,
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(Failure::Connection(format!(
                    "{address} closed the connection"
                )));
            }
            match sender.send_request(outgoing(parts, body.clone())?).await {
                Ok(a) => break (sender, a),
                // A kept connection the replica closed meanwhile: once
                // more on a new one, when sending again is safe.
                Err(e) if reused && (idempotent || e.is_canceled()) => continue,
                // No answer arrived (refused, reset, closed): the replica
                // went away, or is going.
                Err(e) => return Err(Failure::Connection(format!("{address}: {e}"))),
            }
        };
        let (head, body) = answer.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| Failure::Other(format!("{address} broke off its answer: {e}")))?
            .to_bytes();
        // The connection is free again once the whole answer is read
        // (whether it is ready is checked when it is taken again).
        table.put_idle(address, sender);
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = head.status;
        copy_headers(&head.headers, r.headers_mut());
        Ok(r)
    };
    tokio::time::timeout(ANSWER, exchange)
        .await
        .map_err(|_| Failure::Other(format!("{address} did not answer within {ANSWER:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_outstanding_wins_and_guards_release() {
        let t = Arc::new(Outstanding::default());
        let all = vec!["a:1".to_string(), "b:1".to_string()];
        let first = t.pick(&all).unwrap();
        let second = t.pick(&all).unwrap();
        assert_ne!(first.address, second.address);
        drop(first);
        let third = t.pick(&all).unwrap();
        assert_ne!(third.address, second.address);
        assert!(t.pick(&[]).is_none());
        drop((second, third));
        assert!(t.counts().is_empty());
        // Nothing in flight: one request at a time goes round.
        let a = t.pick(&all).unwrap().address.clone();
        let b = t.pick(&all).unwrap().address.clone();
        assert_ne!(a, b);
    }
}
