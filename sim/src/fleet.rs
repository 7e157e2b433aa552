//! The simulated agents' shell (`mezz sim agents`): thousands of
//! [`SimAgent`] cores in one process, each with its own `AgentGateway.Attach`
//! stream to the leading master, exactly as `mezz-agent`'s master link
//! keeps one: register, heartbeat at the interval the master names, send
//! status updates in order, re-send the unacknowledged ones on a new stream
//! and when overdue, follow a follower's leader hint, and register again
//! after a failover.
//!
//! Everything the master says to an agent rides on that stream (launch,
//! kill, acknowledgements), so a simulated agent needs no listening
//! endpoint of its own. Streams are HTTP/2 streams: up to
//! `agents_per_connection` agents share one TCP connection (the master
//! allows 200 concurrent streams on one), so ten thousand agents need a
//! hundred file descriptors, not ten thousand. Tasks are timers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mezz_proto::client::LeaderSearch;
use mezz_proto::v1::{
    agent_gateway_client::AgentGatewayClient, agent_message, master_message, AgentHeartbeat,
    AgentInfo, AgentMessage, MasterMessage, StatusUpdate, TaskStatus,
};
use mezz_proto::Resources;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::agent_core::{Key, Launched, SimAgent};
use crate::dist::{Rng, TaskTime};

// The real agent's timings (agent/src/master_link.rs).
const REFUSED_RETRY: Duration = Duration::from_secs(5);
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
const RESEND_AFTER: Duration = Duration::from_secs(5);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// What the fleet looks like.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Master addresses (`host:port`), tried in order as a real agent does.
    pub masters: Vec<String>,
    /// How many agents.
    pub count: usize,
    /// Each agent's cpus.
    pub cpus: f64,
    /// Each agent's memory, MB.
    pub mem: f64,
    /// Each agent's disk, MB.
    pub disk: f64,
    /// Each agent's GPUs (named `GPU-<agent id>-<n>`).
    pub gpus_per_agent: usize,
    /// How long a task runs when its launch does not say
    /// ([`crate::agent_core::RUN_MS_LABEL`]).
    pub task_time: TaskTime,
    /// Seeds the run times.
    pub seed: u64,
    /// Agents whose streams share one HTTP/2 connection.
    pub agents_per_connection: usize,
    /// Agent ids are `<name>-<n>`; the same name gives the same ids, so a
    /// restarted simulator would need the same secrets (it makes new ones:
    /// use a new name for a new fleet against the same masters).
    pub name: String,
    /// The agents start evenly spread over this time.
    pub ramp: Duration,
    /// Presented on every stream when the masters authenticate.
    pub token: Option<mezz_proto::auth::Token>,
}

/// Live counters of a running fleet.
#[derive(Debug, Default)]
pub struct FleetCounters {
    registered: AtomicU64,
    registrations: AtomicU64,
    launches: AtomicU64,
    running: AtomicU64,
    finished: AtomicU64,
    killed: AtomicU64,
    updates_sent: AtomicU64,
    resent: AtomicU64,
    acks: AtomicU64,
    refusals: AtomicU64,
}

/// A reading of [`FleetCounters`] (what `mezz sim agents --json` prints).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FleetSnapshot {
    /// Agents registered with a master right now.
    pub registered: u64,
    /// Registrations completed, re-registrations after a failover included.
    pub registrations: u64,
    /// Launches received.
    pub launches: u64,
    /// Tasks running right now.
    pub running: u64,
    /// Runs whose timer ran out.
    pub finished: u64,
    /// Runs killed by the master.
    pub killed: u64,
    /// Status updates sent (re-sends included).
    pub updates_sent: u64,
    /// Status updates sent again (a new stream or no acknowledgement).
    pub resent: u64,
    /// Acknowledgements received.
    pub acks: u64,
    /// Registrations a master refused.
    pub refusals: u64,
}

impl FleetCounters {
    /// The counters now.
    pub fn snapshot(&self) -> FleetSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FleetSnapshot {
            registered: r(&self.registered),
            registrations: r(&self.registrations),
            launches: r(&self.launches),
            running: r(&self.running),
            finished: r(&self.finished),
            killed: r(&self.killed),
            updates_sent: r(&self.updates_sent),
            resent: r(&self.resent),
            acks: r(&self.acks),
            refusals: r(&self.refusals),
        }
    }
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// One HTTP/2 connection per (master, shard of agents), made on first use.
/// A tonic channel reconnects by itself, so a master that comes back is
/// reached again through the same entry.
struct Pool {
    channels: Mutex<HashMap<(String, usize), Channel>>,
}

impl Pool {
    fn channel(&self, addr: &str, shard: usize) -> Result<Channel, String> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&(addr.to_string(), shard)) {
            return Ok(c.clone());
        }
        let channel = mezz_proto::client::endpoint(addr)
            .map_err(|e| format!("bad master address {addr}: {e}"))?
            .connect_lazy();
        map.insert((addr.to_string(), shard), channel.clone());
        Ok(channel)
    }
}

struct Shared {
    config: FleetConfig,
    pool: Pool,
    counters: Arc<FleetCounters>,
}

/// Runs `config.count` agents until `shutdown` turns true; `counters`
/// follow them live.
pub async fn run(
    config: FleetConfig,
    counters: Arc<FleetCounters>,
    shutdown: watch::Receiver<bool>,
) {
    let count = config.count;
    let gap = config
        .ramp
        .checked_div(count.max(1) as u32)
        .unwrap_or_default();
    let shared = Arc::new(Shared {
        config,
        pool: Pool {
            channels: Mutex::new(HashMap::new()),
        },
        counters,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for idx in 0..count {
        let core = SimAgent::new(agent_info(&shared.config, idx), secret());
        let shared = Arc::clone(&shared);
        let mut shutdown = shutdown.clone();
        let delay = gap * idx as u32;
        tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut shutdown) => return,
            }
            agent_loop(core, idx, shared, shutdown).await
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The id, resources and attributes of agent `idx`.
pub fn agent_info(config: &FleetConfig, idx: usize) -> AgentInfo {
    let id = format!("{}-{idx:05}", config.name);
    let mut res = Resources::new()
        .with_scalar(mezz_proto::resources::CPUS, config.cpus)
        .with_scalar(mezz_proto::resources::MEM, config.mem)
        .with_scalar(mezz_proto::resources::DISK, config.disk)
        .with_ranges(mezz_proto::resources::PORTS, &[(31000, 32000)]);
    if config.gpus_per_agent > 0 {
        res = res.with_set(
            mezz_proto::resources::GPUS,
            (0..config.gpus_per_agent).map(|g| format!("GPU-{id}-{g}")),
        );
    }
    AgentInfo {
        hostname: format!("{id}.sim"),
        // No sandbox files to serve: nothing listens here, and a read of
        // a simulated task's files fails at once (connection refused).
        address: "127.0.0.1:1".into(),
        resources: res.to_proto(),
        attributes: [("simulated".to_string(), "true".to_string())].into(),
        version: env!("CARGO_PKG_VERSION").into(),
        id,
        gpu_reserve: Vec::new(),
    }
}

/// 32 random bytes, hex: what a real agent makes on its first start.
fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

enum SessionEnd {
    Shutdown,
    Refused(String),
    Redirect(String),
    Failed { registered: bool, why: String },
}

/// The agent's timers and clocks, kept across sessions.
struct Life {
    core: SimAgent,
    shard: usize,
    rng: Rng,
    /// Timers that ran out, to be turned into FINISHED updates.
    done_tx: mpsc::UnboundedSender<Key>,
    done_rx: mpsc::UnboundedReceiver<Key>,
    gen: u64,
}

async fn agent_loop(
    core: SimAgent,
    idx: usize,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let masters = shared.config.masters.clone();
    if masters.is_empty() {
        return;
    }
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut life = Life {
        core,
        shard: idx / shared.config.agents_per_connection.max(1),
        rng: Rng::new(shared.config.seed ^ (idx as u64).wrapping_mul(0x9E37_79B9)),
        done_tx,
        done_rx,
        gen: 0,
    };
    // As the real agent (`mezz_agent`'s master link): one search over the
    // masters per round, hints followed, a pause between rounds, and the
    // master it could not reach last named on the next attach.
    let mut search = LeaderSearch::new(&masters, None);
    let mut backoff = mezz_proto::client::Backoff::new();
    let mut unreachable: Option<String> = None;
    loop {
        let Some(addr) = search.next_address() else {
            search = LeaderSearch::new(&masters, None);
            let pause = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped(&mut shutdown) => return,
            }
            continue;
        };
        let pause = match session(&mut life, &addr, &mut unreachable, &shared, &mut shutdown).await
        {
            SessionEnd::Shutdown => return,
            SessionEnd::Refused(msg) => {
                bump(&shared.counters.refusals, 1);
                tracing::warn!(
                    agent_id = life.core.id(),
                    "master {addr} refused the agent: {msg}"
                );
                search = LeaderSearch::new(&masters, Some(&addr));
                REFUSED_RETRY
            }
            SessionEnd::Redirect(leader) => {
                if search.redirect(&leader) {
                    Duration::ZERO
                } else {
                    search = LeaderSearch::new(&masters, Some(&leader));
                    backoff.next_delay()
                }
            }
            SessionEnd::Failed { registered, why } => {
                unreachable = Some(addr.clone());
                if registered {
                    backoff.reset();
                    search = LeaderSearch::after(&masters, &addr);
                    tracing::debug!(agent_id = life.core.id(), "lost master {addr}: {why}");
                }
                Duration::ZERO
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped(&mut shutdown) => return,
            }
        }
    }
}

fn end_from_status(status: &tonic::Status, registered: bool) -> SessionEnd {
    if let Some(leader) = mezz_proto::client::leader_hint(status) {
        return SessionEnd::Redirect(mezz_proto::client::normalize(&leader).to_string());
    }
    if status.code() == tonic::Code::PermissionDenied {
        return SessionEnd::Refused(status.message().to_string());
    }
    SessionEnd::Failed {
        registered,
        why: format!("{}: {}", status.code(), status.message()),
    }
}

/// Counts a session as registered while it lives.
struct Registered<'a>(&'a FleetCounters);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.registered.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn send_all(
    tx: &mpsc::Sender<AgentMessage>,
    updates: Vec<TaskStatus>,
    counters: &FleetCounters,
) -> Result<(), ()> {
    bump(&counters.updates_sent, updates.len() as u64);
    for status in updates {
        let msg = AgentMessage {
            message: Some(agent_message::Message::StatusUpdate(StatusUpdate {
                status: Some(status),
            })),
        };
        tx.send(msg).await.map_err(|_| ())?;
    }
    Ok(())
}

/// Carries out a master message on the core; `Some` ends the session.
fn dispatch(
    life: &mut Life,
    msg: MasterMessage,
    counters: &FleetCounters,
    config: &FleetConfig,
) -> Option<SessionEnd> {
    let now = mezz_proto::unix_now();
    match msg.message {
        Some(master_message::Message::Launch(l)) => {
            bump(&counters.launches, 1);
            if let Launched::Timer(key, run_for) = life.core.launch(l, now) {
                bump(&counters.running, 1);
                let run_for = run_for.unwrap_or_else(|| config.task_time.sample(&mut life.rng));
                let done = life.done_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(run_for).await;
                    let _ = done.send(key);
                });
            }
        }
        Some(master_message::Message::Kill(k)) => {
            let before = life.core.active();
            life.core.kill(&k, now);
            let ended = before.saturating_sub(life.core.active()) as u64;
            counters.running.fetch_sub(ended, Ordering::Relaxed);
            bump(&counters.killed, ended);
        }
        Some(master_message::Message::Ack(a)) => {
            bump(&counters.acks, 1);
            life.core.ack(&a);
        }
        Some(master_message::Message::ShutdownFramework(s)) => {
            let before = life.core.active();
            life.core.shutdown_framework(&s.framework_id, now);
            let ended = before.saturating_sub(life.core.active()) as u64;
            counters.running.fetch_sub(ended, Ordering::Relaxed);
            bump(&counters.killed, ended);
        }
        Some(master_message::Message::Refused(r)) => return Some(SessionEnd::Refused(r.message)),
        Some(master_message::Message::Registered(_)) | None => {}
    }
    None
}

/// The timer of `key` ran out: FINISHED, unless the run was killed first.
fn finish_one(life: &mut Life, key: &Key, counters: &FleetCounters) {
    let before = life.core.active();
    life.core.finish(key, mezz_proto::unix_now());
    if life.core.active() < before {
        counters.running.fetch_sub(1, Ordering::Relaxed);
        bump(&counters.finished, 1);
    }
}

/// Turns every timer that ran out into a FINISHED update.
fn finish_done(life: &mut Life, counters: &FleetCounters) {
    while let Ok(key) = life.done_rx.try_recv() {
        finish_one(life, &key, counters);
    }
}

async fn session(
    life: &mut Life,
    addr: &str,
    unreachable: &mut Option<String>,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let counters = &*shared.counters;
    let config = &shared.config;
    let failed = |why: String| SessionEnd::Failed {
        registered: false,
        why,
    };
    let channel = match shared.pool.channel(addr, life.shard) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let mut client =
        AgentGatewayClient::new(mezz_proto::auth::authed(channel, config.token.as_ref()))
            .max_decoding_message_size(mezz_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(mezz_proto::MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<AgentMessage>(1024);
    // Timers that ran out while no master was there: the registration
    // reports those runs as they are now.
    finish_done(life, counters);
    let register = AgentMessage {
        message: Some(agent_message::Message::Register(
            life.core.register_message(),
        )),
    };
    if tx.send(register).await.is_err() {
        return failed("internal: outgoing queue closed".into());
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    mezz_proto::client::unreachable_header(&mut request, unreachable.as_deref());
    let registered = async {
        let mut inbound = client
            .attach(request)
            .await
            .map_err(|s| end_from_status(&s, false))?
            .into_inner();
        loop {
            match inbound.message().await {
                Ok(Some(MasterMessage {
                    message: Some(master_message::Message::Registered(r)),
                })) => return Ok((inbound, r)),
                Ok(Some(MasterMessage {
                    message: Some(master_message::Message::Refused(r)),
                })) => return Err(SessionEnd::Refused(r.message)),
                // As the real agent: nothing counts before AgentRegistered.
                Ok(Some(_)) => {}
                Ok(None) => return Err(failed("the stream ended before registration".into())),
                Err(s) => return Err(end_from_status(&s, false)),
            }
        }
    };
    let (mut inbound, reg) = tokio::select! {
        r = tokio::time::timeout(REGISTER_TIMEOUT, registered) => match r {
            Ok(Ok(x)) => x,
            Ok(Err(end)) => return end,
            Err(_) => return failed(format!("no AgentRegistered within {REGISTER_TIMEOUT:?}")),
        },
        _ = stopped(shutdown) => return SessionEnd::Shutdown,
    };
    *unreachable = None;
    bump(&counters.registered, 1);
    bump(&counters.registrations, 1);
    let _registered = Registered(counters);
    let heartbeat_every = Duration::try_from_secs_f64(reg.heartbeat_interval_secs)
        .ok()
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_HEARTBEAT)
        .max(Duration::from_millis(100));
    life.gen += 1;
    let gen = life.gen;
    let broken = || SessionEnd::Failed {
        registered: true,
        why: "the stream to the master closed".into(),
    };
    let unsent = life.core.take_unsent(gen, Instant::now());
    bump(&counters.resent, unsent.len() as u64);
    if send_all(&tx, unsent, counters).await.is_err() {
        return broken();
    }
    // Spread the fleet's heartbeats and re-send checks over the interval
    // instead of firing them all in the same instant.
    let jitter = heartbeat_every.mul_f64(life.rng.next_f64());
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + jitter, heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resend = tokio::time::interval_at(
        tokio::time::Instant::now() + jitter.min(Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(shutdown) => return SessionEnd::Shutdown,
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    if let Some(end) = dispatch(life, m, counters, config) {
                        return end;
                    }
                }
                Ok(None) => return broken(),
                Err(s) => return end_from_status(&s, true),
            },
            Some(key) = life.done_rx.recv() => {
                finish_one(life, &key, counters);
                finish_done(life, counters);
            }
            _ = resend.tick() => {
                let overdue = life.core.take_overdue(gen, RESEND_AFTER, Instant::now());
                bump(&counters.resent, overdue.len() as u64);
                if send_all(&tx, overdue, counters).await.is_err() {
                    return broken();
                }
                continue;
            }
            _ = heartbeat.tick() => {
                let hb = AgentMessage { message: Some(agent_message::Message::Heartbeat(AgentHeartbeat::default())) };
                if tx.send(hb).await.is_err() {
                    return broken();
                }
                continue;
            }
        }
        let unsent = life.core.take_unsent(gen, Instant::now());
        if send_all(&tx, unsent, counters).await.is_err() {
            return broken();
        }
    }
}
