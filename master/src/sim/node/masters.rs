//! The masters of the whole-master simulation: each a [`Node`] on its own
//! sled directory that crashes and restarts, writing to client streams
//! (which may be found full and dropped) and to the raft network through
//! [`SimOutbox`], and hanging up on clients the way the server shell does.

use std::path::PathBuf;

use raft::eraftpb::Message as RaftMessage;

use super::streams::{Client, Conns, Down, Up};
use super::{now, timeouts, Sim};
use crate::cluster::{ConnId, Effect};
use crate::node::{Dropped, Node, Outbox, Waiting};
use crate::replication::Replica;
use crate::sim::world::Rng;

/// Inputs a master holds at most while it catches up as a new leader.
pub(super) const HELD_INPUTS: usize = 1024;

/// A master's seat: its raft id and sled directory outlive a crash;
/// `node` is `None` while it is down.
pub(super) struct Master {
    pub(super) id: u64,
    pub(super) dir: PathBuf,
    pub(super) node: Option<Node>,
    /// Inputs it holds while it catches up as a new leader (the shell's
    /// rules, see [`Waiting`]); lost with the process when it crashes.
    pub(super) waiting: Waiting<(ConnId, Up), ()>,
}

/// What one master writes to during a settle.
pub(super) struct SimOutbox<'a> {
    pub(super) master: u64,
    pub(super) conns: &'a mut Conns,
    pub(super) raft: &'a mut Vec<RaftMessage>,
    pub(super) rng: &'a mut Rng,
    pub(super) step: u64,
    pub(super) stream_full: f64,
}

impl Outbox for SimOutbox<'_> {
    fn deliver(&mut self, effects: Vec<Effect>) -> Dropped {
        let mut dropped = Dropped::default();
        for e in effects {
            let (conn, msg) = match e {
                Effect::ToAgent(c, m) => (c, Some(Down::Agent(m))),
                Effect::ToFramework(c, ev) => (c, Some(Down::Event(ev))),
                Effect::CloseAgent(c) | Effect::CloseFramework(c) => (c, None),
                Effect::Propose(_) => continue,
            };
            let Some(c) = self.conns.map.get_mut(&conn) else {
                continue; // the client already hung up
            };
            if c.master != self.master || c.closed_by_master {
                continue;
            }
            match msg {
                None => c.closed_by_master = true,
                Some(_) if self.rng.chance(self.stream_full) => {
                    c.closed_by_master = true;
                    match c.client {
                        Client::Agent(_) | Client::Rogue => dropped.agents.push(conn),
                        Client::Framework(_) => dropped.frameworks.push(conn),
                    }
                }
                Some(m) => {
                    let at = self.step + 1 + self.rng.below(2);
                    self.conns.push_down(conn, at, m);
                }
            }
        }
        dropped
    }

    fn send_raft(&mut self, msgs: Vec<RaftMessage>) {
        self.raft.extend(msgs);
    }
}

impl Sim {
    pub(super) fn start_master(&mut self, i: usize) -> Result<(), String> {
        let id = self.masters[i].id;
        let inc = self.incarnations.entry(id).or_insert(0);
        *inc += 1;
        let (inc, mut term) = (*inc, 0u64);
        let fresh = move || {
            term += 1;
            format!("m{id}i{inc}t{term}")
        };
        let (replica, snapshot) = Replica::open_fixed_timer(&self.masters[i].dir, id, &self.voters)
            .map_err(|e| format!("master {id} cannot start: {e}"))?;
        let node = Node::from_replica(replica, snapshot, 25, timeouts(), Box::new(fresh));
        self.masters[i].node = Some(node);
        self.masters[i].waiting = Waiting::new(HELD_INPUTS);
        Ok(())
    }

    pub(super) fn master_up(&self, id: u64) -> bool {
        self.masters.iter().any(|m| m.id == id && m.node.is_some())
    }

    /// The client side of a stream is gone: forget it and tell the master.
    pub(super) fn hang_up(&mut self, conn: ConnId) {
        let Some(c) = self.conns.map.remove(&conn) else {
            return;
        };
        let t = now(self.step);
        if let Some(node) = self
            .masters
            .iter_mut()
            .find(|m| m.id == c.master)
            .and_then(|m| m.node.as_mut())
        {
            match c.client {
                Client::Agent(_) | Client::Rogue => node.agent_gone(conn, t),
                Client::Framework(_) => node.framework_gone(conn, t),
            }
        }
        self.client_lost_conn(c.client, conn);
    }

    pub(super) fn client_lost_conn(&mut self, client: Client, conn: ConnId) {
        match client {
            Client::Agent(a) => {
                let agent = &mut self.agents[a];
                if agent.conn == Some(conn) {
                    agent.conn = None;
                    agent.registered = false;
                }
            }
            Client::Framework(f) => {
                let fw = &mut self.frameworks[f];
                if fw.conn == Some(conn) {
                    fw.conn = None;
                    fw.subscribed = false;
                }
            }
            Client::Rogue => {
                if self.rogue.conn == Some(conn) {
                    self.rogue.conn = None;
                }
            }
        }
    }
}
