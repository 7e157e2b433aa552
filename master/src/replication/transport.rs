//! Carrying raft messages between masters. [`Transport`] is the seam: the
//! gRPC transport here is what masters use; the simulation tests drive the
//! same replicas over an in-memory network that drops, delays, duplicates
//! and partitions (`sim.rs`).
//!
//! The gRPC transport keeps one sender task per peer with a bounded queue;
//! what queued up while an RPC was in flight goes out as one batch. A full
//! queue or a failed send is reported back, so raft can probe the peer
//! again or resend a snapshot, rather than waiting on a message that is gone.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mezz_proto::v1::raft_peer_client::RaftPeerClient;
use mezz_proto::v1::RaftBatch;
use protobuf::Message as _;
use raft::eraftpb::{Message as RaftMessage, MessageType};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// The largest batch a master sends or accepts: snapshots of a large
/// registry go through here.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Messages waiting for one peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Messages per batch.
const BATCH: usize = 512;

/// Sends raft messages to peers.
pub trait Transport {
    /// Sends each message to `msg.to`. Delivery is best effort; raft
    /// retries what is lost.
    fn send(&mut self, msgs: Vec<RaftMessage>);
}

/// What the transport learned about a peer, for raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerReport {
    /// A message could not be delivered.
    Unreachable(u64),
    /// A snapshot could not be delivered.
    SnapshotFailed(u64),
    /// A snapshot was delivered.
    SnapshotSent(u64),
}

/// Raft messages over gRPC (`RaftPeer.Send`) on the masters' common port.
pub struct GrpcTransport {
    queues: HashMap<u64, mpsc::Sender<RaftMessage>>,
    reports: mpsc::UnboundedSender<PeerReport>,
}

impl GrpcTransport {
    /// Starts a sender task for every peer but `me`. Reports come back on
    /// `reports`. Must be called inside a tokio runtime.
    pub fn start(
        me: u64,
        peers: &BTreeMap<u64, String>,
        reports: mpsc::UnboundedSender<PeerReport>,
    ) -> Self {
        let mut queues = HashMap::new();
        for (&id, addr) in peers {
            if id == me {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            queues.insert(id, tx);
            tokio::spawn(peer_sender(me, id, addr.clone(), rx, reports.clone()));
        }
        GrpcTransport { queues, reports }
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, msgs: Vec<RaftMessage>) {
        for m in msgs {
            let to = m.to;
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let Some(q) = self.queues.get(&to) else {
                tracing::warn!(peer = to, "raft message for an unknown peer dropped");
                continue;
            };
            if q.try_send(m).is_err() {
                let _ = self.reports.send(if snapshot {
                    PeerReport::SnapshotFailed(to)
                } else {
                    PeerReport::Unreachable(to)
                });
            }
        }
    }
}

async fn connect(addr: &str) -> Option<RaftPeerClient<Channel>> {
    let channel = mezz_proto::client::endpoint(addr)
        .ok()?
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .ok()?;
    Some(
        RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
    )
}

async fn peer_sender(
    me: u64,
    peer: u64,
    addr: String,
    mut rx: mpsc::Receiver<RaftMessage>,
    reports: mpsc::UnboundedSender<PeerReport>,
) {
    let mut client: Option<RaftPeerClient<Channel>> = None;
    let mut failing_since_logged = false;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let snapshots = batch
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            .count();
        let mut encoded = Vec::with_capacity(batch.len());
        for m in &batch {
            match m.write_to_bytes() {
                Ok(b) => encoded.push(b),
                Err(e) => tracing::error!(peer, "cannot encode a raft message: {e}"),
            }
        }
        if client.is_none() {
            client = connect(&addr).await;
        }
        let sent = match client.as_mut() {
            Some(c) => c
                .send(RaftBatch {
                    from: me,
                    messages: encoded,
                })
                .await
                .map_err(|s| s.message().to_string()),
            None => Err(format!("cannot connect to {addr}")),
        };
        match sent {
            Ok(_) => {
                if failing_since_logged {
                    tracing::info!(peer, "master {addr} is reachable again");
                    failing_since_logged = false;
                }
                for _ in 0..snapshots {
                    let _ = reports.send(PeerReport::SnapshotSent(peer));
                }
            }
            Err(why) => {
                if !failing_since_logged {
                    tracing::warn!(peer, "cannot reach master {addr}: {why}");
                    failing_since_logged = true;
                }
                client = None;
                let _ = reports.send(PeerReport::Unreachable(peer));
                for _ in 0..snapshots {
                    let _ = reports.send(PeerReport::SnapshotFailed(peer));
                }
                // Do not spin on a dead peer: raft will send again.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Decodes a batch received from a peer; bad messages are named and
/// skipped, never half-applied.
pub fn decode_batch(me: u64, batch: &RaftBatch) -> Result<Vec<RaftMessage>, String> {
    let mut out = Vec::with_capacity(batch.messages.len());
    for (i, bytes) in batch.messages.iter().enumerate() {
        let mut m = RaftMessage::default();
        m.merge_from_bytes(bytes)
            .map_err(|e| format!("raft message {i} from master {}: {e}", batch.from))?;
        if m.to != me {
            return Err(format!(
                "raft message {i} from master {} is addressed to {}, but this is master {me}; check --id and --peers",
                batch.from, m.to
            ));
        }
        if m.from != batch.from {
            return Err(format!(
                "raft message {i} claims sender {} inside a batch from {}",
                m.from, batch.from
            ));
        }
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_checked_before_use() {
        let m = RaftMessage {
            to: 2,
            from: 1,
            ..Default::default()
        };
        let ok = RaftBatch {
            from: 1,
            messages: vec![m.write_to_bytes().unwrap()],
        };
        assert_eq!(decode_batch(2, &ok).unwrap().len(), 1);
        let e = decode_batch(3, &ok).unwrap_err();
        assert!(e.contains("--peers"), "{e}");
        let bad = RaftBatch {
            from: 1,
            messages: vec![vec![0xff, 0xff, 0xff]],
        };
        assert!(decode_batch(2, &bad).is_err());
    }
}
