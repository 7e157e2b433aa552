//! Finding the leading master and subscribing to it: the order in which
//! addresses are tried, leader hints, backoff and the connect deadline. It
//! knows nothing of schedulers; it hands back a live subscription.

use std::time::Duration;

use mezz_proto::auth::{AuthChannel, Token};
use tokio::time::{timeout, Instant};
use tonic::{Code, Status};

use crate::error::{chain, SdkError};
use crate::proto;
use crate::proto::scheduler_client::SchedulerClient;

/// The gRPC client every call goes through.
pub(crate) type Client = SchedulerClient<AuthChannel>;

/// How long one address may take to connect, answer the subscription and
/// send its `Subscribed` event.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client with Mezzanine's message size limits.
pub(crate) fn client(channel: AuthChannel) -> Client {
    SchedulerClient::new(channel)
        .max_decoding_message_size(mezz_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(mezz_proto::MAX_MESSAGE_BYTES)
}

/// Delays between connection rounds and the order masters are tried in:
/// the one policy all clients share.
pub(crate) use mezz_proto::client::{Backoff, LeaderSearch};

/// Can a call or subscription that failed with `code` work a moment later
/// (possibly on another master)?
pub(crate) fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Internal
    )
}

/// A status in words, with the transport's cause when there is one.
pub(crate) fn describe(status: &Status) -> String {
    let mut text = format!("{:?}", status.code());
    if !status.message().is_empty() {
        text.push_str(": ");
        text.push_str(status.message());
    }
    if let Some(source) = std::error::Error::source(status) {
        let cause = chain(source);
        if !text.contains(&cause) {
            text.push_str(" (");
            text.push_str(&cause);
            text.push(')');
        }
    }
    text
}

/// Why one address did not give us a subscription.
#[derive(Debug, PartialEq)]
pub(crate) enum Refusal {
    /// Try elsewhere or later.
    Transient(String),
    /// No connection to the master at all.
    Unreachable(String),
    /// A follower named the leader.
    Redirect { leader: String, message: String },
    /// Will not work anywhere: give up.
    Permanent(String),
    /// The master answered with the framework's removal.
    Removed(String),
}

/// Sorts a refused subscription into what to do next.
pub(crate) fn classify(status: &Status) -> Refusal {
    let message = describe(status);
    if status.code() == Code::Unavailable {
        if let Some(leader) = mezz_proto::client::leader_hint(status) {
            return Refusal::Redirect { leader, message };
        }
    }
    if is_transient(status.code()) {
        Refusal::Transient(message)
    } else {
        Refusal::Permanent(message)
    }
}

/// A live subscription.
pub(crate) struct Subscription {
    pub(crate) address: String,
    pub(crate) client: Client,
    pub(crate) subscribed: proto::Subscribed,
    pub(crate) events: tonic::Streaming<proto::Event>,
}

/// Connects to `addr`, subscribes and waits for the `Subscribed` event.
/// `unreachable` is the master this framework lost or could not reach
/// last: a follower that has not yet seen another leader holds the call
/// for the election's outcome instead of refusing it at once.
async fn attempt(
    addr: &str,
    request: proto::SubscribeRequest,
    token: Option<&Token>,
    unreachable: Option<&str>,
) -> Result<Subscription, Refusal> {
    let channel = mezz_proto::client::connect(addr)
        .await
        .map_err(|e| Refusal::Unreachable(mezz_proto::tls::describe(&e)))?;
    let mut client = client(mezz_proto::auth::authed(channel, token));
    let mut request = tonic::Request::new(request);
    mezz_proto::client::unreachable_header(&mut request, unreachable);
    let mut events = client
        .subscribe(request)
        .await
        .map_err(|s| classify(&s))?
        .into_inner();
    let first = events.message().await.map_err(|s| classify(&s))?;
    match first.and_then(|e| e.event) {
        Some(proto::event::Event::Subscribed(subscribed)) => Ok(Subscription {
            address: addr.to_string(),
            client,
            subscribed,
            events,
        }),
        Some(proto::event::Event::Error(e)) => Err(Refusal::Removed(e.message)),
        Some(other) => Err(Refusal::Transient(format!(
            "the master sent {} before Subscribed",
            event_name(&other)
        ))),
        None => Err(Refusal::Transient(
            "the master closed the subscription without answering".into(),
        )),
    }
}

/// The event's name, for logs and messages.
pub(crate) fn event_name(event: &proto::event::Event) -> &'static str {
    use proto::event::Event;
    match event {
        Event::Subscribed(_) => "Subscribed",
        Event::Offers(_) => "Offers",
        Event::Rescind(_) => "Rescind",
        Event::Update(_) => "Update",
        Event::Failure(_) => "Failure",
        Event::Error(_) => "Error",
        Event::Heartbeat(_) => "Heartbeat",
    }
}

/// Subscribes a framework, round after round, until a master accepts, one
/// refuses for good, or the connect deadline passes.
#[derive(Debug)]
pub(crate) struct Connector {
    masters: Vec<String>,
    preferred: Option<String>,
    /// The master lost or not reached last, until a subscription succeeds.
    unreachable: Option<String>,
    backoff: Backoff,
    connect_timeout: Option<Duration>,
    /// Presented on every call (`DriverBuilder::token`, `$MEZZ_TOKEN`).
    token: Option<Token>,
}

impl Connector {
    pub(crate) fn new(
        masters: Vec<String>,
        connect_timeout: Option<Duration>,
        token: Option<Token>,
    ) -> Self {
        Connector {
            masters,
            preferred: None,
            unreachable: None,
            backoff: Backoff::new(),
            connect_timeout,
            token,
        }
    }

    /// Try `addr` first next time (a leader hint seen on a broken stream).
    pub(crate) fn prefer(&mut self, addr: String) {
        self.preferred = Some(addr);
    }

    /// The subscription with `addr` broke with no hint of another leader:
    /// the next search starts with the other masters and tells them this
    /// one is gone, so that a follower waits for the election's outcome
    /// instead of sending us back to a master that is down.
    pub(crate) fn lost(&mut self, addr: &str) {
        self.unreachable = Some(addr.to_string());
        if self.preferred.as_deref() == Some(addr) {
            self.preferred = None;
        }
    }

    /// Subscribes `framework`. With `after_failure`, waits a backoff delay
    /// first so a master that drops us at once is not hammered.
    pub(crate) async fn subscribe(
        &mut self,
        framework: &proto::FrameworkInfo,
        after_failure: bool,
    ) -> Result<Subscription, SdkError> {
        let started = Instant::now();
        let deadline = self.connect_timeout.map(|t| started + t);
        let request = proto::SubscribeRequest {
            protocol_version: mezz_proto::PROTOCOL_VERSION,
            framework: Some(framework.clone()),
        };
        let mut attempts: Vec<(String, String)> = Vec::new();
        let mut wait = after_failure;
        loop {
            if wait {
                let delay = self.backoff.next_delay();
                match deadline {
                    Some(d) => tokio::time::sleep_until((Instant::now() + delay).min(d)).await,
                    None => tokio::time::sleep(delay).await,
                }
            }
            wait = true;
            let mut round = match (&self.preferred, &self.unreachable) {
                (None, Some(gone)) => LeaderSearch::after(&self.masters, gone),
                (preferred, _) => LeaderSearch::new(&self.masters, preferred.as_deref()),
            };
            while let Some(addr) = round.next_address() {
                let limit = match deadline {
                    Some(d) if Instant::now() >= d => break,
                    Some(d) => ATTEMPT_TIMEOUT.min(d - Instant::now()),
                    None => ATTEMPT_TIMEOUT,
                };
                let outcome = timeout(
                    limit,
                    attempt(
                        &addr,
                        request.clone(),
                        self.token.as_ref(),
                        self.unreachable.as_deref(),
                    ),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(Refusal::Transient(format!("no answer within {limit:.1?}")))
                });
                let failure = match outcome {
                    Ok(sub) => {
                        self.preferred = Some(addr);
                        self.unreachable = None;
                        self.backoff.reset();
                        return Ok(sub);
                    }
                    Err(Refusal::Redirect { leader, message }) => {
                        tracing::debug!(master = %addr, %leader, "not the leader; following its hint");
                        round.redirect(&leader);
                        message
                    }
                    Err(Refusal::Transient(message)) => message,
                    Err(Refusal::Unreachable(message)) => {
                        self.unreachable = Some(addr.clone());
                        message
                    }
                    Err(Refusal::Permanent(message)) => {
                        return Err(SdkError::Refused {
                            framework: framework.name.clone(),
                            address: addr,
                            message,
                        })
                    }
                    Err(Refusal::Removed(message)) => {
                        return Err(SdkError::Removed {
                            framework: framework.name.clone(),
                            framework_id: framework.id.clone(),
                            message,
                        })
                    }
                };
                tracing::debug!(master = %addr, error = %failure, "subscription attempt failed");
                match attempts.iter_mut().find(|(a, _)| *a == addr) {
                    Some(entry) => entry.1 = failure,
                    None => attempts.push((addr, failure)),
                }
            }
            if let Some(d) = deadline {
                if Instant::now() >= d {
                    return Err(SdkError::Unreachable {
                        framework: framework.name.clone(),
                        waited: started.elapsed(),
                        attempts,
                    });
                }
            }
            tracing::warn!(
                masters = %self.masters.join(","),
                "no master accepted the subscription yet; retrying"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_classified() {
        let mut redirect = Status::unavailable("not the leader");
        redirect.metadata_mut().insert(
            mezz_proto::client::LEADER_HINT_KEY,
            "m2:2".parse().expect("ascii"),
        );
        assert_eq!(
            classify(&redirect),
            Refusal::Redirect {
                leader: "m2:2".into(),
                message: "Unavailable: not the leader".into()
            }
        );
        assert_eq!(
            classify(&Status::unavailable("no leader yet")),
            Refusal::Transient("Unavailable: no leader yet".into())
        );
        assert_eq!(
            classify(&Status::invalid_argument("protocol version 9 is unknown")),
            Refusal::Permanent("InvalidArgument: protocol version 9 is unknown".into())
        );
    }
}
