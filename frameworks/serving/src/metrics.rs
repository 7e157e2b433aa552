//! Per-service proxy metrics, in the Prometheus text format: requests,
//! answers the proxy gave itself because no replica could (502, 503),
//! retries, and a latency histogram of whole requests through the proxy.
//! Counters are atomics: the proxy records without a lock.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One service's counters.
#[derive(Default)]
pub struct ServiceMetrics {
    requests: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    /// Per bucket (not cumulative), the last one past every bound.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    micros: AtomicU64,
}

impl ServiceMetrics {
    /// Records one request through the proxy: how long it took, and
    /// whether the proxy had to answer it itself.
    pub fn record(&self, took: Duration, proxy_error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if proxy_error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(
            took.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Records a retry on another replica.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// Requests in flight per replica address (`HOST:PORT`), counted by the
/// proxies: what a replica being stopped is drained of first.
pub type InFlight = Arc<Mutex<std::collections::HashMap<String, usize>>>;

/// Every service's metrics; cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    services: Arc<Mutex<BTreeMap<String, Arc<ServiceMetrics>>>>,
    in_flight: InFlight,
}

impl Registry {
    /// The table of requests in flight per replica address.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.clone()
    }

    /// The metrics of `service`, made on first use.
    pub fn service(&self, service: &str) -> Arc<ServiceMetrics> {
        let mut m = self.services.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(service.to_string()).or_default().clone()
    }

    /// Forgets a removed service.
    pub fn remove(&self, service: &str) {
        let mut m = self.services.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(service);
    }

    /// The Prometheus text of every service, with `(service, healthy
    /// replicas, requests in flight)` as gauges.
    pub fn render(&self, gauges: &[(String, u32, usize)]) -> String {
        // Only the services there are: a removed one's counters are left
        // behind by its proxy, not shown.
        let services: Vec<(String, Arc<ServiceMetrics>)> = {
            let m = self.services.lock().unwrap_or_else(|p| p.into_inner());
            m.iter()
                .filter(|(k, _)| gauges.iter().any(|(g, _, _)| g == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut out = String::new();
        let counter =
            |out: &mut String, name: &str, help: &str, get: &dyn Fn(&ServiceMetrics) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (s, m) in &services {
                    let _ = writeln!(out, "{name}{{service=\"{s}\"}} {}", get(m));
                }
            };
        counter(
            &mut out,
            "mezz_serve_requests_total",
            "Requests through the service's proxy.",
            &|m| m.requests.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mezz_serve_errors_total",
            "Requests the proxy answered itself (502, 503): no replica could.",
            &|m| m.errors.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mezz_serve_retries_total",
            "Idempotent requests sent again to another replica after a connection failure.",
            &|m| m.retries.load(Ordering::Relaxed),
        );
        let name = "mezz_serve_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a request's arrival at the proxy to its answer.\n# TYPE {name} histogram"
        );
        for (s, m) in &services {
            let mut total = 0;
            for (i, bound) in BOUNDS.iter().enumerate() {
                total += m.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{service=\"{s}\",le=\"{bound}\"}} {total}"
                );
            }
            total += m.buckets[BOUNDS.len()].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{service=\"{s}\",le=\"+Inf\"}} {total}");
            let sum = m.micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{service=\"{s}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{service=\"{s}\"}} {total}");
        }
        let name = "mezz_serve_replicas_healthy";
        let _ = writeln!(
            out,
            "# HELP {name} Replicas taking traffic.\n# TYPE {name} gauge"
        );
        for (s, n, _) in gauges {
            let _ = writeln!(out, "{name}{{service=\"{s}\"}} {n}");
        }
        let name = "mezz_serve_requests_in_flight";
        let _ = writeln!(
            out,
            "# HELP {name} Requests the proxy is waiting on replicas for.\n# TYPE {name} gauge"
        );
        for (s, _, n) in gauges {
            let _ = writeln!(out, "{name}{{service=\"{s}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_render() {
        let r = Registry::default();
        let m = r.service("m");
        m.record(Duration::from_micros(300), false);
        m.record(Duration::from_millis(3), false);
        m.record(Duration::from_secs(20), true);
        m.retried();
        let text = r.render(&[("m".into(), 2, 1)]);
        assert!(
            text.contains("mezz_serve_requests_total{service=\"m\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("mezz_serve_errors_total{service=\"m\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mezz_serve_retries_total{service=\"m\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3\n"), "{text}");
        assert!(
            text.contains("mezz_serve_replicas_healthy{service=\"m\"} 2\n"),
            "{text}"
        );
        assert!(!r.render(&[]).contains("service=\"m\""));
        r.remove("m");
        assert!(!r
            .render(&[("m".into(), 0, 0)])
            .contains("requests_total{service=\"m\"} 3"));
    }
}
