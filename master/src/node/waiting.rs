//! What a master keeps waiting for its clients between steps: inputs that
//! came while it led but was not yet current, and answers to operator
//! changes that wait for their entries to be applied. Pure, over whatever
//! the caller holds (`I`, an input; `R`, where an answer goes): the shell
//! in `server.rs` keeps channels in it, the whole-cluster simulation its
//! simulated messages, and both ask the same code when to hold, release
//! and answer, so those decisions are replayed and checked like the rest.

use crate::cluster::CallError;

use super::Node;

/// Inputs held and answers waiting, for one master.
#[derive(Debug)]
pub struct Waiting<I, R> {
    /// Client inputs that came while this master led but was not current.
    held: Vec<I>,
    /// Inputs held at most; beyond, they are handled (and refused) at once.
    capacity: usize,
    /// Answers to send once the proposals made with them are in the log.
    after_settle: Vec<(R, Result<(), CallError>)>,
    /// Answers waiting for the log to be applied up to an index.
    awaiting_commit: Vec<(u64, R, Result<(), CallError>)>,
}

impl<I, R> Waiting<I, R> {
    /// Nothing waiting; at most `capacity` inputs held.
    pub fn new(capacity: usize) -> Self {
        Waiting {
            held: Vec::new(),
            capacity,
            after_settle: Vec::new(),
            awaiting_commit: Vec::new(),
        }
    }

    /// Inputs held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The inputs held now, oldest first.
    pub fn held_inputs(&self) -> &[I] {
        &self.held
    }

    /// Answers not sent yet.
    pub fn answers_pending(&self) -> usize {
        self.after_settle.len() + self.awaiting_commit.len()
    }

    /// A leader just elected takes clients once it has applied its first
    /// entry (see [`Node::is_current_leader`]), a matter of one round trip:
    /// an input that needs the leader is held meanwhile rather than the
    /// client sent away to retry. Gives the input back when it is to be
    /// handled now.
    pub fn hold(&mut self, node: &Node, input: I, needs_leader: bool) -> Option<I> {
        if needs_leader
            && node.is_leader()
            && !node.is_current_leader()
            && self.held.len() < self.capacity
        {
            self.held.push(input);
            None
        } else {
            Some(input)
        }
    }

    /// The held inputs to handle now: all of them once this master is a
    /// current leader, or once it no longer leads (they are then refused
    /// with the new leader's address, as any input to a follower is).
    pub fn release(&mut self, node: &Node) -> Vec<I> {
        if self.held.is_empty() || (node.is_leader() && !node.is_current_leader()) {
            return Vec::new();
        }
        std::mem::take(&mut self.held)
    }

    /// Puts back, ahead of anything held since, released inputs the caller
    /// did not get to: a leader that held thousands (every agent of a
    /// failover) handles them a bounded batch per turn, so that its
    /// heartbeats go out between batches.
    pub fn hold_again(&mut self, inputs: Vec<I>) {
        self.held.splice(0..0, inputs);
    }

    /// Answers `reply` with `result` once what was proposed with it is
    /// applied (an error goes out with the next answers, at once).
    pub fn answer_when_applied(&mut self, reply: R, result: Result<(), CallError>) {
        self.after_settle.push((reply, result));
    }

    /// The answers due after a settle: errors at once; a success once the
    /// log is applied up to where it stood when the change was proposed,
    /// which in a group of several masters means committed by a majority.
    pub fn answers(&mut self, node: &Node) -> Vec<(R, Result<(), CallError>)> {
        let last = node.replica().last_index();
        let mut due = Vec::new();
        for (reply, result) in self.after_settle.drain(..) {
            match result {
                Ok(()) => self.awaiting_commit.push((last, reply, Ok(()))),
                err => due.push((reply, err)),
            }
        }
        let applied = node.replica().applied();
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .awaiting_commit
            .drain(..)
            .partition(|(i, _, _)| *i <= applied);
        self.awaiting_commit = waiting;
        due.extend(done.into_iter().map(|(_, reply, result)| (reply, result)));
        due
    }

    /// On a change of leadership every success still waiting to be
    /// applied is refused with `not_leader`: the new leader may never
    /// commit what was proposed. Refusals keep their own reason.
    pub fn refuse_waiting(&mut self, not_leader: &CallError) -> Vec<(R, Result<(), CallError>)> {
        let settled = self
            .after_settle
            .drain(..)
            .map(|(reply, result)| match result {
                Ok(()) => (reply, Err(not_leader.clone())),
                err => (reply, err),
            });
        let waiting = self
            .awaiting_commit
            .drain(..)
            .map(|(_, reply, _)| (reply, Err(not_leader.clone())));
        settled.chain(waiting).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Timeouts;
    use crate::node::{Dropped, Outbox};

    struct Nowhere;

    impl Outbox for Nowhere {
        fn deliver(&mut self, _: Vec<crate::cluster::Effect>) -> Dropped {
            Dropped::default()
        }
        fn send_raft(&mut self, _: Vec<raft::eraftpb::Message>) {}
    }

    fn node(dir: &std::path::Path) -> Node {
        Node::open(
            dir,
            1,
            &[1],
            1000,
            Timeouts::default(),
            Box::new(|| "m".into()),
        )
        .expect("open")
    }

    /// Ticks a master of one until it has won its election, without
    /// settling: it leads but has not applied an entry of its term.
    fn elect(node: &mut Node) -> u64 {
        let mut now = 0;
        while !node.is_leader() {
            now += 100;
            assert!(now < 60_000, "no election");
            node.tick(now);
        }
        now
    }

    #[test]
    fn inputs_are_held_only_while_a_new_leader_catches_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = node(dir.path());
        let mut w: Waiting<&str, ()> = Waiting::new(2);
        let now = elect(&mut node);
        assert!(node.is_leader() && !node.is_current_leader());
        // What needs no leader is handled at once.
        assert_eq!(w.hold(&node, "heartbeat", false), Some("heartbeat"));
        assert_eq!(w.hold(&node, "a", true), None);
        assert_eq!(w.hold(&node, "b", true), None);
        // Full: the next one is handled (and refused) at once.
        assert_eq!(w.hold(&node, "c", true), Some("c"));
        assert!(w.release(&node).is_empty(), "not current yet");
        while !node.is_current_leader() {
            node.settle(now, &mut Nowhere).expect("settle");
        }
        assert_eq!(w.release(&node), ["a", "b"]);
        assert_eq!(w.held(), 0);
        // A current leader holds nothing.
        assert_eq!(w.hold(&node, "d", true), Some("d"));
        // What the caller did not get to goes back, in order, and comes
        // out with the next release.
        w.hold_again(vec!["a2", "b2"]);
        w.hold_again(vec!["z"]);
        assert_eq!(w.held_inputs(), ["z", "a2", "b2"]);
        assert_eq!(w.release(&node), ["z", "a2", "b2"]);
    }

    #[test]
    fn successes_wait_for_their_entry_and_a_change_of_leader_refuses_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = node(dir.path());
        let now = elect(&mut node);
        while !node.is_current_leader() {
            node.settle(now, &mut Nowhere).expect("settle");
        }
        let mut w: Waiting<(), u32> = Waiting::new(8);
        let proposed = node.set_weight("web", 2.0);
        assert_eq!(proposed, Ok(()));
        w.answer_when_applied(1, proposed);
        w.answer_when_applied(2, Err(CallError::Invalid("no".into())));
        node.settle(now, &mut Nowhere).expect("settle");
        let last = node.replica().last_index();
        let answers = w.answers(&node);
        assert!(node.replica().applied() >= last);
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert!(answers.contains(&(1, Ok(()))), "{answers:?}");
        assert!(answers.contains(&(2, Err(CallError::Invalid("no".into())))));
        assert_eq!(w.answers_pending(), 0);

        // Proposed, then the leader changes before it is applied: refused,
        // while a refusal keeps its own reason.
        w.answer_when_applied(3, Ok(()));
        w.answer_when_applied(4, Err(CallError::Invalid("bad".into())));
        let gone = CallError::NotLeader(Some("m2:2".into()));
        let refused = w.refuse_waiting(&gone);
        assert_eq!(
            refused,
            [
                (3, Err(gone.clone())),
                (4, Err(CallError::Invalid("bad".into())))
            ]
        );
        assert_eq!(w.answers_pending(), 0);
    }
}
