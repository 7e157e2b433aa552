//! The gRPC implementation of the peer transport (`RaftPeer.Send` on the
//! masters' common port), apart from the replication core, which knows only
//! the seam ([`crate::replication::transport`]).
//!
//! One sender task per peer with a bounded queue; what queued up while an
//! RPC was in flight goes out as one batch. A full queue or a failed send
//! is reported back, so raft can probe the peer again or resend a
//! snapshot, rather than waiting on a message that is gone.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mezz_proto::v1::raft_peer_client::RaftPeerClient;
use raft::eraftpb::{Message as RaftMessage, MessageType};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::replication::transport::{encode_batch, PeerReport, Transport, MAX_PEER_MESSAGE_BYTES};

/// Messages waiting for one peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Messages per batch.
const BATCH: usize = 512;

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
        let encoded = encode_batch(me, &batch);
        if client.is_none() {
            client = connect(&addr).await;
        }
        let sent = match client.as_mut() {
            Some(c) => c.send(encoded).await.map_err(|s| s.message().to_string()),
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
