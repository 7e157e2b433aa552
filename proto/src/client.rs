//! Connecting to masters: address lists, channels with sane timeouts, and the
//! leader hint a follower answers with. Agents, the SDK and the CLI all find
//! the leader through this one module.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// The environment variable every command reads for the masters' addresses
/// when no `--master` is given.
pub const MASTER_ENV: &str = "MEZZ_MASTER";

/// gRPC metadata key a non-leading master sets to the leader's address when
/// it refuses a call with `UNAVAILABLE`. Clients reconnect there.
pub const LEADER_HINT_KEY: &str = "mezz-leader";

/// gRPC metadata key an agent's attach and a framework's subscription
/// carry: the master (`host:port`) the caller could not reach last. A
/// follower whose leader is that master holds the call until it knows of
/// another leader, for a moment, instead of sending the caller straight
/// back: when a leader dies, its agents and frameworks wait on the
/// followers for the election instead of polling them (see
/// [`unreachable_header`]).
pub const UNREACHABLE_KEY: &str = "mezz-unreachable";

/// Adds [`UNREACHABLE_KEY`] to `request` when there is a master the
/// caller could not reach last.
pub fn unreachable_header<T>(request: &mut tonic::Request<T>, unreachable: Option<&str>) {
    if let Some(v) = unreachable.and_then(|u| normalize(u).parse().ok()) {
        request.metadata_mut().insert(UNREACHABLE_KEY, v);
    }
}

/// Splits `ADDR[,ADDR…]` into addresses, trimming blanks. An address is
/// `host:port`; an `http://` or `https://` prefix is accepted and dropped
/// (whether to use TLS is this process's setting, see [`crate::tls`]).
pub fn parse_master_list(list: &str) -> Result<Vec<String>, String> {
    let addrs: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| normalize(a).to_string())
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "no master address in '{list}'; expected HOST:PORT[,HOST:PORT…]"
        ));
    }
    for a in &addrs {
        let ok = a
            .rsplit_once(':')
            .map(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            .unwrap_or(false);
        if !ok {
            return Err(format!("master address '{a}' is not HOST:PORT"));
        }
    }
    Ok(addrs)
}

/// How long clients wait between rounds over the master list. A leader that
/// dies is replaced within about a second, so for the first
/// [`Backoff::QUICK_ROUNDS`] rounds clients retry every 100 ms; only a
/// longer outage backs off, doubling up to 2 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    rounds: u32,
    next: Duration,
}

impl Backoff {
    /// Delay of the quick rounds, and the first slow one.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(2);
    /// Rounds retried at [`Backoff::FIRST`] before backing off (1.5 s).
    pub const QUICK_ROUNDS: u32 = 15;

    /// A fresh backoff.
    pub fn new() -> Self {
        Backoff {
            rounds: 0,
            next: Self::FIRST,
        }
    }

    /// The delay to wait now.
    pub fn next_delay(&mut self) -> Duration {
        self.rounds += 1;
        if self.rounds <= Self::QUICK_ROUNDS {
            return Self::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// Back to quick retries (after a success).
    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// One pass over the masters in search of the leader, shared by every
/// client (the SDK, agents, the CLI): the preferred address (the last one
/// that worked) first, then the configured ones in order, each at most
/// once. A follower's leader hint jumps the queue; hints are bounded so two
/// confused masters cannot bounce a client forever. When
/// [`LeaderSearch::next_address`] runs dry the round is over: the caller
/// waits its [`Backoff`] delay and starts a new one.
#[derive(Debug, Clone)]
pub struct LeaderSearch {
    queue: VecDeque<String>,
    tried: HashSet<String>,
    redirects_left: usize,
}

impl LeaderSearch {
    /// A round over `masters`, `preferred` first when given.
    pub fn new(masters: &[String], preferred: Option<&str>) -> Self {
        let mut queue = VecDeque::new();
        for addr in preferred
            .into_iter()
            .chain(masters.iter().map(String::as_str))
        {
            if !queue.iter().any(|a| a == addr) {
                queue.push_back(addr.to_string());
            }
        }
        LeaderSearch {
            queue,
            tried: HashSet::new(),
            redirects_left: masters.len() + 2,
        }
    }

    /// A round that tries the masters after `last` first and `last` at the
    /// end: what a client does when the leader it was connected to goes
    /// away (another is probably being elected; the old one may come back).
    pub fn after(masters: &[String], last: &str) -> Self {
        let mut order: Vec<String> = match masters.iter().position(|m| m == last) {
            Some(i) => masters[i + 1..]
                .iter()
                .chain(&masters[..i])
                .cloned()
                .collect(),
            None => masters.to_vec(),
        };
        order.push(last.to_string());
        Self::new(&order, None)
    }

    /// The next address to try, or `None` when the round is over.
    pub fn next_address(&mut self) -> Option<String> {
        while let Some(addr) = self.queue.pop_front() {
            if self.tried.insert(addr.clone()) {
                return Some(addr);
            }
        }
        None
    }

    /// A master named `leader` as the leader (a hint as [`leader_hint`]
    /// gives it, a scheme or a trailing slash allowed): try it next, unless
    /// it was already tried in this round or the round followed enough
    /// hints. Returns whether it was queued.
    pub fn redirect(&mut self, leader: &str) -> bool {
        let leader = normalize(leader);
        if leader.is_empty() || self.redirects_left == 0 || self.tried.contains(leader) {
            return false;
        }
        self.redirects_left -= 1;
        self.queue.push_front(leader.to_string());
        true
    }
}

/// `host:port` from an address that may carry a scheme or a trailing slash.
pub fn normalize(addr: &str) -> &str {
    addr.trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
}

/// An endpoint for `addr` (`host:port`) with the timeouts every Mezzanine
/// client uses: a short connect timeout so a dead address is reported fast,
/// TCP_NODELAY for latency, and HTTP/2 keep-alives so a silent peer is
/// noticed on long-lived streams.
///
/// With this process's client TLS set (see [`crate::tls::client_tls`]),
/// the endpoint is `https://` and trusts only the configured CA.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let tls = crate::tls::client_tls();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    match tls {
        Some(tls) => endpoint.tls_config(tls.tonic_config()),
        None => Ok(endpoint),
    }
}

/// Connects to `addr`, failing within the connect timeout when nobody
/// listens there.
pub async fn connect(addr: &str) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr)?.connect().await
}

/// The leader address carried by a status from a non-leading master.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_HINT_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_quick_through_a_failover_then_doubles() {
        let mut b = Backoff::new();
        let ms: Vec<u128> = (0..20).map(|_| b.next_delay().as_millis()).collect();
        assert!(ms[..15].iter().all(|&d| d == 100), "{ms:?}");
        assert_eq!(&ms[15..], &[100, 200, 400, 800, 1600]);
        assert_eq!(b.next_delay().as_millis(), 2000);
        b.reset();
        assert_eq!(b.next_delay(), Backoff::FIRST);
    }

    fn masters() -> Vec<String> {
        vec!["m1:1".into(), "m2:2".into(), "m3:3".into()]
    }

    fn drain(search: &mut LeaderSearch) -> Vec<String> {
        std::iter::from_fn(|| search.next_address()).collect()
    }

    #[test]
    fn masters_are_tried_in_order_preferred_first() {
        assert_eq!(
            drain(&mut LeaderSearch::new(&masters(), None)),
            ["m1:1", "m2:2", "m3:3"]
        );
        assert_eq!(
            drain(&mut LeaderSearch::new(&masters(), Some("m2:2"))),
            ["m2:2", "m1:1", "m3:3"]
        );
        assert_eq!(
            drain(&mut LeaderSearch::new(&masters(), Some("other:9"))),
            ["other:9", "m1:1", "m2:2", "m3:3"]
        );
    }

    #[test]
    fn after_a_lost_leader_the_others_come_first() {
        assert_eq!(
            drain(&mut LeaderSearch::after(&masters(), "m2:2")),
            ["m3:3", "m1:1", "m2:2"]
        );
        assert_eq!(
            drain(&mut LeaderSearch::after(&masters(), "m3:3")),
            ["m1:1", "m2:2", "m3:3"]
        );
        assert_eq!(
            drain(&mut LeaderSearch::after(&masters(), "gone:1")),
            ["m1:1", "m2:2", "m3:3", "gone:1"]
        );
    }

    #[test]
    fn a_leader_hint_is_followed_next_and_only_once() {
        let mut s = LeaderSearch::new(&masters(), None);
        assert_eq!(s.next_address().as_deref(), Some("m1:1"));
        assert!(s.redirect("http://m3:3/"));
        assert_eq!(s.next_address().as_deref(), Some("m3:3"));
        // Already tried in this round: not again.
        assert!(!s.redirect("m3:3"));
        assert!(!s.redirect(""));
        assert_eq!(drain(&mut s), ["m2:2"]);
    }

    #[test]
    fn hints_are_bounded() {
        let mut s = LeaderSearch::new(&masters(), None);
        let mut followed = 0;
        for i in 0..100 {
            if s.redirect(&format!("x{i}:1")) {
                followed += 1;
                s.next_address();
            }
        }
        assert_eq!(followed, masters().len() + 2);
    }

    #[test]
    fn master_lists() {
        assert_eq!(
            parse_master_list("127.0.0.1:5050, http://h:1/").unwrap(),
            vec!["127.0.0.1:5050", "h:1"]
        );
        assert!(parse_master_list("").is_err());
        assert!(parse_master_list("nohost")
            .unwrap_err()
            .contains("'nohost'"));
        assert!(parse_master_list("h:notaport").is_err());
    }
}
