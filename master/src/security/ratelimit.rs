//! Rate limits per principal on scheduler calls and task launches, in the
//! manner of Mesos' framework rate limiting: each principal has a token
//! bucket that refills at `calls_per_sec` up to `burst`; a scheduler call
//! takes one token, an ACCEPT one per task it launches (at least one). A
//! call that finds too few is refused with RESOURCE_EXHAUSTED (HTTP 429
//! with `Retry-After`), naming the principal, the limit and when to retry.
//!
//! The configuration (`mezz master --rate-limits FILE`, or the flags
//! `--rate-limit-calls-per-sec` and `--rate-limit-burst` for the default):
//!
//! ```json
//! {
//!   "default":    {"calls_per_sec": 50, "burst": 100},
//!   "principals": {"batch": {"calls_per_sec": 5, "burst": 10}}
//! }
//! ```
//!
//! Without a default, principals not named are not limited. Pure but for
//! the lock: time is passed in.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Deserialize;

/// One principal's limit.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Tokens added per second.
    pub calls_per_sec: f64,
    /// The most tokens the bucket holds (a burst of calls after a pause).
    pub burst: f64,
}

impl Limit {
    /// As in the document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"calls_per_sec": self.calls_per_sec, "burst": self.burst})
    }

    fn validate(&self, at: &str) -> Result<(), String> {
        if !(self.calls_per_sec.is_finite() && self.calls_per_sec > 0.0) {
            return Err(format!(
                "{at}: calls_per_sec must be a positive number, not {}",
                self.calls_per_sec
            ));
        }
        if !(self.burst.is_finite() && self.burst >= 1.0) {
            return Err(format!(
                "{at}: burst must be at least 1, not {}",
                self.burst
            ));
        }
        Ok(())
    }
}

/// The limits of a master: a default and overrides per principal.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// For every principal not named; none: not limited.
    #[serde(default)]
    pub default: Option<Limit>,
    /// Principal → its limit.
    #[serde(default)]
    pub principals: BTreeMap<String, Limit>,
}

impl RateLimits {
    /// Parses and validates the JSON document; errors name the entry.
    pub fn parse(json: &str) -> Result<RateLimits, String> {
        let r: RateLimits =
            serde_json::from_str(json).map_err(|e| format!("the rate limits: {e}"))?;
        if let Some(d) = &r.default {
            d.validate("default")?;
        }
        for (p, l) in &r.principals {
            l.validate(&format!("principals.{p}"))?;
        }
        Ok(r)
    }

    /// Whether any principal is limited.
    pub fn any(&self) -> bool {
        self.default.is_some() || !self.principals.is_empty()
    }

    fn of(&self, principal: &str) -> Option<Limit> {
        self.principals.get(principal).copied().or(self.default)
    }
}

/// A token bucket: `tokens` at `at` (seconds, any monotonic origin).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: f64,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(limit: &Limit, now: f64) -> Bucket {
        Bucket {
            tokens: limit.burst,
            at: now,
        }
    }

    /// Takes `cost` tokens at `now`, or says how many seconds until there
    /// are enough. A cost above the burst is charged as the burst, so that
    /// a large launch waits instead of failing forever.
    pub fn take(&mut self, limit: &Limit, cost: f64, now: f64) -> Result<(), f64> {
        let elapsed = (now - self.at).max(0.0);
        self.tokens = (self.tokens + elapsed * limit.calls_per_sec).min(limit.burst);
        self.at = self.at.max(now);
        let cost = cost.min(limit.burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            Err((cost - self.tokens) / limit.calls_per_sec)
        }
    }
}

/// A refusal: who, which limit, when to retry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "principal '{principal}' is over its rate limit of {calls_per_sec} scheduler calls per second \
     (burst {burst}); retry in {retry_after_secs:.2} s"
)]
pub struct Limited {
    /// Who.
    pub principal: String,
    /// Its limit.
    pub calls_per_sec: f64,
    /// Its burst.
    pub burst: f64,
    /// Seconds until the call would pass.
    pub retry_after_secs: f64,
}

impl Limited {
    /// Whole seconds for `Retry-After` (at least 1).
    pub fn retry_after_header(&self) -> u64 {
        self.retry_after_secs.ceil().max(1.0) as u64
    }
}

/// The buckets of every principal that has called.
#[derive(Debug, Default)]
pub struct Limiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: RateLimits) -> Limiter {
        Limiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `cost` to `principal` at `now` (monotonic seconds).
    pub fn take(&self, principal: &str, cost: f64, now: f64) -> Result<(), Limited> {
        let Some(limit) = self.limits.of(principal) else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry(principal.to_string())
            .or_insert_with(|| Bucket::full(&limit, now));
        bucket.take(&limit, cost, now).map_err(|wait| Limited {
            principal: principal.to_string(),
            calls_per_sec: limit.calls_per_sec,
            burst: limit.burst,
            retry_after_secs: wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limit = Limit {
        calls_per_sec: 2.0,
        burst: 4.0,
    };

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = Bucket::full(&L, 100.0);
        for _ in 0..4 {
            assert_eq!(b.take(&L, 1.0, 100.0), Ok(()));
        }
        let wait = b.take(&L, 1.0, 100.0).unwrap_err();
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        // Half a second later: one more token, exactly.
        assert_eq!(b.take(&L, 1.0, 100.5), Ok(()));
        assert!(b.take(&L, 1.0, 100.5).is_err());
        // A long pause refills to the burst, no further.
        for _ in 0..4 {
            assert_eq!(b.take(&L, 1.0, 1000.0), Ok(()));
        }
        assert!(b.take(&L, 1.0, 1000.0).is_err());
        // A clock that steps back refills nothing and breaks nothing.
        assert!(b.take(&L, 1.0, 999.0).is_err());
    }

    #[test]
    fn costs_above_the_burst_wait_for_a_full_bucket() {
        let mut b = Bucket::full(&L, 0.0);
        assert_eq!(b.take(&L, 10.0, 0.0), Ok(()), "charged as the burst");
        let wait = b.take(&L, 10.0, 0.0).unwrap_err();
        assert!((wait - 2.0).abs() < 1e-9, "{wait}");
        assert_eq!(b.take(&L, 3.0, 2.0), Ok(()));
    }

    #[test]
    fn principals_have_their_own_buckets_and_limits() {
        let limits = RateLimits::parse(
            r#"{"default": {"calls_per_sec": 1, "burst": 1},
                "principals": {"big": {"calls_per_sec": 100, "burst": 50}}}"#,
        )
        .unwrap();
        let l = Limiter::new(limits);
        assert!(l.take("a", 1.0, 0.0).is_ok());
        let e = l.take("a", 1.0, 0.0).unwrap_err();
        assert_eq!(e.principal, "a");
        assert_eq!(e.retry_after_header(), 1);
        let msg = e.to_string();
        assert!(
            msg.contains("'a'") && msg.contains("1 scheduler calls per second"),
            "{msg}"
        );
        assert!(l.take("b", 1.0, 0.0).is_ok(), "b has its own bucket");
        for _ in 0..50 {
            assert!(l.take("big", 1.0, 0.0).is_ok());
        }
        assert!(l.take("big", 1.0, 0.0).is_err());
        // No default: only the named are limited.
        let only = Limiter::new(
            RateLimits::parse(r#"{"principals": {"x": {"calls_per_sec": 1, "burst": 1}}}"#)
                .unwrap(),
        );
        for _ in 0..100 {
            assert!(only.take("y", 1.0, 0.0).is_ok());
        }
    }

    #[test]
    fn bad_documents_name_the_problem() {
        for (doc, want) in [
            (
                r#"{"default": {"calls_per_sec": 0, "burst": 1}}"#,
                "default: calls_per_sec",
            ),
            (
                r#"{"principals": {"p": {"calls_per_sec": 1, "burst": 0.5}}}"#,
                "principals.p: burst",
            ),
            (r#"{"defaults": {}}"#, "unknown field"),
            (
                r#"{"default": {"calls_per_sec": 1}}"#,
                "missing field `burst`",
            ),
        ] {
            let e = RateLimits::parse(doc).unwrap_err();
            assert!(e.contains(want), "{doc}: {e}");
        }
        assert!(!RateLimits::parse("{}").unwrap().any());
    }
}
