//! The agent's one connection to the leading master (`AgentGateway.Attach`):
//! find the leader, register, heartbeat, send status updates in order and
//! re-send the unacknowledged ones, and hand master messages to the agent.
//! Reconnects on its own; an unreachable master is never fatal.

use std::sync::Arc;
use std::time::Duration;

use mezz_proto::client::LeaderSearch;
use mezz_proto::v1::{
    agent_gateway_client::AgentGatewayClient, agent_message, master_message, AgentHeartbeat,
    AgentMessage, MasterMessage, StatusUpdate, TaskStatus,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::agent::Agent;

const REFUSED_RETRY: Duration = Duration::from_secs(5);
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Unacknowledged updates older than this are sent again.
const RESEND_AFTER: Duration = Duration::from_secs(5);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// How one session with a master ended.
enum SessionEnd {
    Shutdown,
    /// The master refused the agent; retry slowly.
    Refused(String),
    /// Not the leader; the leader is (probably) there.
    Redirect(String),
    /// Could not connect or the stream broke. `registered` says whether the
    /// session got as far as registration.
    Failed {
        registered: bool,
        why: String,
    },
}

/// Runs until `shutdown` turns true. Every registration presents `secret`,
/// which proves to the masters that this agent owns its id.
pub async fn run(
    agent: Arc<Agent>,
    masters: Vec<String>,
    secret: String,
    token: Option<mezz_proto::auth::Token>,
    mut shutdown: watch::Receiver<bool>,
) {
    if masters.is_empty() {
        tracing::error!("no master address given; the agent cannot register");
        crate::stopped(&mut shutdown).await;
        return;
    }
    let mut search = LeaderSearch::new(&masters, None);
    let mut backoff = mezz_proto::client::Backoff::new();
    let mut gen = 0u64;
    // Why the last master of this round failed: said when a round ends, so
    // an operator sees the cause (a refused handshake, a wrong address)
    // without turning on debug logs.
    let mut last_why = String::new();
    // The master this agent could not reach last, until it registers
    // again: a follower whose leader it is holds the attach until an
    // election names another (see `mezz_proto::client::UNREACHABLE_KEY`).
    let mut unreachable: Option<String> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let Some(addr) = search.next_address() else {
            // A whole round and no master took this agent: wait, then again.
            let pause = backoff.next_delay();
            tracing::info!("no master accepted this agent ({last_why}); retrying in {pause:?}");
            search = LeaderSearch::new(&masters, None);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = crate::stopped(&mut shutdown) => return,
            }
            continue;
        };
        match session(
            &agent,
            &addr,
            &secret,
            token.as_ref(),
            &mut gen,
            &mut unreachable,
            &mut shutdown,
        )
        .await
        {
            SessionEnd::Shutdown => return,
            SessionEnd::Refused(msg) => {
                tracing::error!(
                    "master {addr} refused this agent: {msg}; retrying in {REFUSED_RETRY:?}"
                );
                search = LeaderSearch::new(&masters, Some(&addr));
                tokio::select! {
                    _ = tokio::time::sleep(REFUSED_RETRY) => {}
                    _ = crate::stopped(&mut shutdown) => return,
                }
            }
            SessionEnd::Redirect(leader) => {
                tracing::info!("master {addr} is not the leader; trying {leader}");
                if !search.redirect(&leader) {
                    // This round already tried it (or followed enough
                    // hints): a new round, led by the hint, after a pause
                    // so two confused masters cannot spin us.
                    search = LeaderSearch::new(&masters, Some(&leader));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = crate::stopped(&mut shutdown) => return,
                    }
                }
            }
            SessionEnd::Failed { registered, why } => {
                unreachable = Some(addr.clone());
                if registered {
                    // The leader went away: a new one is being elected, or
                    // it restarts. Try the others, then it again, quickly.
                    backoff.reset();
                    search = LeaderSearch::after(&masters, &addr);
                    tracing::info!("lost master {addr}: {why}; reconnecting");
                } else {
                    tracing::debug!("master {addr} failed: {why}");
                    last_why = format!("{addr}: {why}");
                }
            }
        }
    }
}

fn end_from_status(status: &tonic::Status, registered: bool) -> SessionEnd {
    if let Some(leader) = mezz_proto::client::leader_hint(status) {
        return SessionEnd::Redirect(leader);
    }
    // An ACL that does not let this agent in: retrying at once will not
    // help, the operator must act. (A token the master does not know yet
    // may be one a new leader is about to apply: that is retried as any
    // failure is.)
    if status.code() == tonic::Code::PermissionDenied {
        return SessionEnd::Refused(status.message().to_string());
    }
    SessionEnd::Failed {
        registered,
        why: format!(
            "{}: {}",
            status.code(),
            mezz_proto::tls::describe_status(status)
        ),
    }
}

async fn send_all(tx: &mpsc::Sender<AgentMessage>, updates: Vec<TaskStatus>) -> Result<(), ()> {
    for status in updates {
        tracing::debug!(task_id = %status.task_id, state = status.state().short_name(), uuid = %status.uuid, "sending status update");
        let msg = AgentMessage {
            message: Some(agent_message::Message::StatusUpdate(StatusUpdate {
                status: Some(status),
            })),
        };
        tx.send(msg).await.map_err(|_| ())?;
    }
    Ok(())
}

/// What a master message means for the session.
enum Dispatch {
    Continue,
    End(SessionEnd),
}

fn dispatch(agent: &Arc<Agent>, msg: MasterMessage) -> Dispatch {
    match msg.message {
        Some(master_message::Message::Launch(l)) => agent.handle_launch(l),
        Some(master_message::Message::Kill(k)) => agent.handle_kill(k),
        Some(master_message::Message::Ack(a)) => agent.handle_ack(a),
        Some(master_message::Message::ShutdownFramework(s)) => {
            agent.handle_shutdown_framework(&s.framework_id)
        }
        Some(master_message::Message::Refused(r)) => {
            return Dispatch::End(SessionEnd::Refused(r.message))
        }
        Some(master_message::Message::Registered(_)) => {
            tracing::debug!("duplicate AgentRegistered ignored")
        }
        None => tracing::debug!("empty master message ignored"),
    }
    Dispatch::Continue
}

async fn session(
    agent: &Arc<Agent>,
    addr: &str,
    secret: &str,
    token: Option<&mezz_proto::auth::Token>,
    gen: &mut u64,
    unreachable: &mut Option<String>,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let failed = |why: String| SessionEnd::Failed {
        registered: false,
        why,
    };
    let channel = tokio::select! {
        c = mezz_proto::client::connect(addr) => match c {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot connect: {}", mezz_proto::tls::describe(&e))),
        },
        _ = crate::stopped(shutdown) => return SessionEnd::Shutdown,
    };
    let mut client = AgentGatewayClient::new(mezz_proto::auth::authed(channel, token))
        .max_decoding_message_size(mezz_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(mezz_proto::MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<AgentMessage>(1024);
    let mut register = agent.register_message();
    register.secret = secret.to_string();
    let register = AgentMessage {
        message: Some(agent_message::Message::Register(register)),
    };
    if tx.send(register).await.is_err() {
        return failed("internal: outgoing queue closed".into());
    }

    // Attach, then wait for AgentRegistered.
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
                Ok(Some(other)) => {
                    // The kind only: a launch carries the task's environment.
                    use master_message::Message as M;
                    let kind = match other.message {
                        Some(M::Launch(_)) => "launch",
                        Some(M::Kill(_)) => "kill",
                        Some(M::Ack(_)) => "ack",
                        Some(M::ShutdownFramework(_)) => "shutdown-framework",
                        Some(M::Registered(_)) | Some(M::Refused(_)) => "registration",
                        None => "empty",
                    };
                    tracing::debug!("message before AgentRegistered: {kind}");
                }
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
        _ = crate::stopped(shutdown) => return SessionEnd::Shutdown,
    };
    let heartbeat_every = Duration::try_from_secs_f64(reg.heartbeat_interval_secs)
        .ok()
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_HEARTBEAT)
        .max(Duration::from_millis(100));
    tracing::info!(
        master = addr,
        master_id = %reg.master_id,
        "registered with master {addr} as agent {} (heartbeat every {heartbeat_every:?})",
        agent.id()
    );
    agent.set_grant_key(reg.grant_key.clone());
    *unreachable = None;
    *gen += 1;
    let gen = *gen;
    let broken = || SessionEnd::Failed {
        registered: true,
        why: "the stream to the master closed".into(),
    };
    if send_all(&tx, agent.take_unsent(gen)).await.is_err() {
        return broken();
    }

    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await; // the first tick is immediate
    let mut resend = tokio::time::interval(Duration::from_secs(1));
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::stopped(shutdown) => return SessionEnd::Shutdown,
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    if let Dispatch::End(end) = dispatch(agent, m) {
                        return end;
                    }
                }
                Ok(None) => return broken(),
                Err(s) => return end_from_status(&s, true),
            },
            _ = agent.updates_ready() => {
                if send_all(&tx, agent.take_unsent(gen)).await.is_err() {
                    return broken();
                }
            }
            _ = resend.tick() => {
                let overdue = agent.take_overdue(gen, RESEND_AFTER);
                if !overdue.is_empty() {
                    tracing::debug!("re-sending {} unacknowledged update(s)", overdue.len());
                }
                if send_all(&tx, overdue).await.is_err() {
                    return broken();
                }
            }
            _ = heartbeat.tick() => {
                let gpus = agent.gpu_usage();
                let hb = AgentMessage { message: Some(agent_message::Message::Heartbeat(AgentHeartbeat { gpus })) };
                if tx.send(hb).await.is_err() {
                    return broken();
                }
            }
        }
    }
}
