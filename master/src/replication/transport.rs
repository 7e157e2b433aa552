//! Carrying raft messages between masters: the seam. [`Transport`] sends,
//! [`PeerReport`]s come back, and batches are encoded and checked here. The
//! gRPC implementation the masters use lives outside the replication core
//! (`crate::peer_grpc`), so nothing here knows a socket; the simulation
//! drives the same replicas over an in-memory network that drops, delays,
//! duplicates and partitions (`crate::sim`).

use mezz_proto::v1::RaftBatch;
use protobuf::Message as _;
use raft::eraftpb::Message as RaftMessage;

/// The largest batch a master sends or accepts: snapshots of a large
/// registry go through here.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
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

/// Encodes `msgs` from master `me` as one batch; a message that cannot be
/// encoded is logged and left out (raft sends again what is lost).
pub fn encode_batch(me: u64, msgs: &[RaftMessage]) -> RaftBatch {
    let mut messages = Vec::with_capacity(msgs.len());
    for m in msgs {
        match m.write_to_bytes() {
            Ok(b) => messages.push(b),
            Err(e) => tracing::error!(peer = m.to, "cannot encode a raft message: {e}"),
        }
    }
    RaftBatch { from: me, messages }
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
