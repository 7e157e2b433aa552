//! The sender task: takes queued calls in order and sends them to the
//! master the driver is subscribed to, retrying the idempotent ones once
//! after a reconnection. Every call waits for the one before it, except
//! acknowledgements: they are independent of each other and of every other
//! call, so they go out beside the ordered calls, up to
//! [`ACK_CALLS_IN_FLIGHT`] calls at once, and the acknowledgements queued
//! together go in one `AcknowledgeMany` call (up to [`ACKS_PER_CALL`]). A
//! framework acknowledges two updates or more per task: one call each, the
//! acknowledgements were four fifths of all the calls a busy framework
//! made, and as much of the master's work per call. A master without
//! `AcknowledgeMany` (an older release) gets them one by one. A stop or a
//! teardown waits for every acknowledgement before it. The sender never
//! calls the scheduler; failures go back to the driver's task as
//! [`Feedback`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::Status;

use crate::connection::{describe, is_transient, Client};
use crate::driver::{request, Call, Request};
use crate::FrameworkId;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed call waits for a reconnection before it is retried on
/// whatever connection there is.
const RETRY_PATIENCE: Duration = Duration::from_secs(5);
/// Acknowledgement calls in flight at once, at most.
pub(crate) const ACK_CALLS_IN_FLIGHT: usize = 16;
/// Acknowledgements in one call, at most (the master takes up to 4,096).
pub(crate) const ACKS_PER_CALL: usize = 512;

/// The subscription calls are sent on.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub(crate) client: Client,
    pub(crate) framework_id: FrameworkId,
    /// Counts subscriptions, so a retry can wait for a newer one.
    pub(crate) generation: u64,
}

/// What the sender reports to the driver's task.
#[derive(Debug, PartialEq)]
pub(crate) enum Feedback {
    /// A call failed for good; the message names it.
    Failed(String),
    /// Every call before `stop()` was sent.
    Stopped,
    /// The teardown was sent, with the master's answer.
    TornDown(Result<(), String>),
}

enum Outcome {
    Sent,
    Failed(String),
    /// Stopping, and no master to send to.
    Dropped,
}

/// Runs until `stop()` or `teardown()` went through, or the queue closes.
pub(crate) async fn run(
    mut calls: mpsc::UnboundedReceiver<Call>,
    mut link: watch::Receiver<Option<Link>>,
    mut stopping: watch::Receiver<bool>,
    feedback: mpsc::UnboundedSender<Feedback>,
) {
    let mut acks: JoinSet<Vec<(Call, Outcome)>> = JoinSet::new();
    // Whether the master takes AcknowledgeMany (until it says it does not).
    let many = Arc::new(AtomicBool::new(true));
    // A call taken from the queue while gathering acknowledgements.
    let mut next: Option<Call> = None;
    loop {
        let call = match next.take() {
            Some(c) => c,
            None => tokio::select! {
                c = calls.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
                Some(done) = acks.join_next(), if !acks.is_empty() => {
                    report_ack(done, &feedback);
                    continue;
                }
            },
        };
        if matches!(call, Call::Stop | Call::Teardown) {
            while let Some(done) = acks.join_next().await {
                report_ack(done, &feedback);
            }
        }
        if call == Call::Stop {
            let _ = feedback.send(Feedback::Stopped);
            return;
        }
        if matches!(call, Call::Acknowledge { .. }) {
            while acks.len() >= ACK_CALLS_IN_FLIGHT {
                if let Some(done) = acks.join_next().await {
                    report_ack(done, &feedback);
                }
            }
            // Every acknowledgement queued by now goes in the same call.
            let mut batch = vec![call];
            while batch.len() < ACKS_PER_CALL {
                match calls.try_recv() {
                    Ok(c @ Call::Acknowledge { .. }) => batch.push(c),
                    Ok(other) => {
                        next = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let (mut link, mut stopping, many) = (link.clone(), stopping.clone(), many.clone());
            acks.spawn(async move { deliver_acks(batch, &mut link, &mut stopping, &many).await });
            continue;
        }
        let outcome = deliver(&call, &mut link, &mut stopping).await;
        if call == Call::Teardown {
            let result = match outcome {
                Outcome::Sent => Ok(()),
                Outcome::Failed(message) => Err(message),
                Outcome::Dropped => Err("the driver stopped before it was sent".into()),
            };
            let _ = feedback.send(Feedback::TornDown(result));
            return;
        }
        report(&call, outcome, &feedback);
    }
    while let Some(done) = acks.join_next().await {
        report_ack(done, &feedback);
    }
}

/// Logs a sent call, or reports one that failed for good.
fn report(call: &Call, outcome: Outcome, feedback: &mpsc::UnboundedSender<Feedback>) {
    match outcome {
        Outcome::Sent => tracing::debug!(call = call.name(), "sent"),
        Outcome::Failed(message) => {
            let _ = feedback.send(Feedback::Failed(format!(
                "{} failed: {message}",
                call.describe()
            )));
        }
        Outcome::Dropped => {
            tracing::debug!(call = call.name(), "no master while stopping; call dropped")
        }
    }
}

/// [`report`] for acknowledgements sent beside the ordered calls.
fn report_ack(
    done: Result<Vec<(Call, Outcome)>, tokio::task::JoinError>,
    feedback: &mpsc::UnboundedSender<Feedback>,
) {
    match done {
        Ok(sent) => {
            for (call, outcome) in sent {
                report(&call, outcome, feedback);
            }
        }
        // Only a panic in the sending code gets here; say so rather than
        // lose the acknowledgement silently.
        Err(e) => {
            let _ = feedback.send(Feedback::Failed(format!("acknowledge failed: {e}")));
        }
    }
}

/// Sends `call`, retrying once after a reconnection where that is safe.
async fn deliver(
    call: &Call,
    link: &mut watch::Receiver<Option<Link>>,
    stopping: &mut watch::Receiver<bool>,
) -> Outcome {
    let Some(current) = wait_link(link, stopping, |_| true).await else {
        return Outcome::Dropped;
    };
    let status = match send(&current, call).await {
        Ok(()) => return Outcome::Sent,
        Err(status) => status,
    };
    if !(call.retry_safe() && is_transient(status.code())) {
        return Outcome::Failed(describe(&status));
    }
    tracing::warn!(
        call = %call.describe(),
        error = %describe(&status),
        "call failed; retrying once after reconnection"
    );
    let generation = current.generation;
    let newer = tokio::time::timeout(
        RETRY_PATIENCE,
        wait_link(link, stopping, |l| l.generation > generation),
    )
    .await;
    let retry_on = match newer {
        Ok(found) => found,
        Err(_) => wait_link(link, stopping, |_| true).await,
    };
    let Some(retry_on) = retry_on else {
        return Outcome::Dropped;
    };
    match send(&retry_on, call).await {
        Ok(()) => Outcome::Sent,
        Err(again) => Outcome::Failed(format!(
            "{} (and before the retry: {})",
            describe(&again),
            describe(&status)
        )),
    }
}

/// Sends acknowledgements: all in one `AcknowledgeMany` call where the
/// master takes it (`many`), else, or when that call fails, one by one
/// with [`deliver`]'s retry.
async fn deliver_acks(
    batch: Vec<Call>,
    link: &mut watch::Receiver<Option<Link>>,
    stopping: &mut watch::Receiver<bool>,
    many: &AtomicBool,
) -> Vec<(Call, Outcome)> {
    if batch.len() > 1 && many.load(Ordering::Relaxed) {
        let Some(current) = wait_link(link, stopping, |_| true).await else {
            return batch.into_iter().map(|c| (c, Outcome::Dropped)).collect();
        };
        match send_many(&current, &batch).await {
            Ok(()) => return batch.into_iter().map(|c| (c, Outcome::Sent)).collect(),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    "the master does not take several acknowledgements in one call; \
                     sending them one by one"
                );
                many.store(false, Ordering::Relaxed);
            }
            Err(status) => tracing::debug!(
                count = batch.len(),
                error = %describe(&status),
                "acknowledgements in one call failed; sending them one by one"
            ),
        }
    }
    let mut sent = Vec::with_capacity(batch.len());
    for call in batch {
        let outcome = deliver(&call, link, stopping).await;
        sent.push((call, outcome));
    }
    sent
}

/// One attempt at sending the acknowledgements of `batch` in one call.
async fn send_many(link: &Link, batch: &[Call]) -> Result<(), Status> {
    let acks = batch
        .iter()
        .filter_map(|c| match request(c, &link.framework_id) {
            Some(Request::Acknowledge(r)) => Some(r),
            _ => None,
        })
        .collect();
    let request = crate::proto::AcknowledgeManyRequest {
        framework_id: link.framework_id.as_str().to_string(),
        acks,
    };
    let mut client = link.client.clone();
    tokio::time::timeout(CALL_TIMEOUT, client.acknowledge_many(request))
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "no answer from the master within {CALL_TIMEOUT:?}"
            )))
        })
        .map(drop)
}

/// A subscription that satisfies `wanted`; waits for one unless the driver
/// is stopping, in which case `None`.
async fn wait_link(
    link: &mut watch::Receiver<Option<Link>>,
    stopping: &mut watch::Receiver<bool>,
    wanted: impl Fn(&Link) -> bool,
) -> Option<Link> {
    let matches = |l: &Option<Link>| l.as_ref().is_some_and(&wanted);
    if let Some(l) = link.borrow().as_ref().filter(|l| wanted(l)) {
        return Some(l.clone());
    }
    tokio::select! {
        found = link.wait_for(matches) => found.ok().and_then(|l| l.clone()),
        _ = stopping.wait_for(|s| *s) => None,
    }
}

/// One attempt at sending `call` on `link`.
async fn send(link: &Link, call: &Call) -> Result<(), Status> {
    let Some(request) = request(call, &link.framework_id) else {
        return Ok(());
    };
    let mut client = link.client.clone();
    let rpc = async move {
        match request {
            Request::Accept(r) => client.accept(r).await.map(drop),
            Request::Decline(r) => client.decline(r).await.map(drop),
            Request::Revive(r) => client.revive(r).await.map(drop),
            Request::Suppress(r) => client.suppress(r).await.map(drop),
            Request::Kill(r) => client.kill(r).await.map(drop),
            Request::Acknowledge(r) => client.acknowledge(r).await.map(drop),
            Request::Reconcile(r) => client.reconcile(r).await.map(drop),
            Request::Teardown(r) => client.teardown(r).await.map(drop),
            Request::SetDemand(r) => client.set_demand(r).await.map(drop),
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, rpc)
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "no answer from the master within {CALL_TIMEOUT:?}"
            )))
        })
}
