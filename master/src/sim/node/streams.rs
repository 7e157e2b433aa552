//! Client streams in the whole-master simulation: ordered, reliable
//! queues between one client and one master, like the gRPC streams they
//! stand for, which break at random or when a partition cuts through
//! them; and how a client without a stream picks a master and reads what
//! reached it.

use std::collections::{BTreeMap, VecDeque};

use mezz_proto::v1::{Event, FrameworkInfo, MasterMessage, RegisterAgent, TaskStatus};

use super::{trace, Sim};
use crate::cluster::{CallError, ConnId};
use crate::node::Call;

/// A client message on its way to a master.
#[derive(Debug)]
pub(super) enum Up {
    Register(RegisterAgent),
    Heartbeat,
    Update(TaskStatus),
    Subscribe(FrameworkInfo),
    /// A scheduler call; accepts carry the task ids they launch.
    Call(Call, Vec<String>),
}

impl Up {
    /// Whether only a leader takes it (and a new one holds it meanwhile),
    /// as [`crate::handle::Input::needs_leader`] says for the shell.
    pub(super) fn needs_leader(&self) -> bool {
        matches!(self, Up::Register(_) | Up::Subscribe(_) | Up::Call(..))
    }
}

/// A master's message on its way to a client.
#[derive(Debug)]
// Test messages, moved and never stored in bulk.
#[allow(clippy::large_enum_variant)]
pub(super) enum Down {
    Agent(MasterMessage),
    Event(Event),
    /// Registration or subscription refused; the leader if known.
    Refused(CallError, Option<u64>),
    /// The answer to an accept launching these tasks.
    Accepted(Vec<String>, Result<(), CallError>),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Client {
    Agent(usize),
    Framework(usize),
    /// Speaks the agent protocol; see [`Rogue`].
    Rogue,
}

/// A client's stream to one master: ordered and reliable while it lasts,
/// like the gRPC streams it stands for.
pub(super) struct Conn {
    pub(super) master: u64,
    pub(super) client: Client,
    pub(super) up: VecDeque<(u64, Up)>,
    pub(super) down: VecDeque<(u64, Down)>,
    /// The master ended its side; the client sees the end once `down` is
    /// drained.
    pub(super) closed_by_master: bool,
}

pub(super) struct Conns {
    pub(super) map: BTreeMap<ConnId, Conn>,
    pub(super) next: ConnId,
}

impl Conns {
    pub(super) fn open(&mut self, master: u64, client: Client) -> ConnId {
        self.next += 1;
        self.map.insert(
            self.next,
            Conn {
                master,
                client,
                up: VecDeque::new(),
                down: VecDeque::new(),
                closed_by_master: false,
            },
        );
        self.next
    }

    /// Queues `msg` behind what is already on its way; FIFO with a delay.
    pub(super) fn push_up(&mut self, conn: ConnId, at: u64, msg: Up) {
        if let Some(c) = self.map.get_mut(&conn) {
            let at = c.up.back().map_or(at, |(t, _)| at.max(*t));
            c.up.push_back((at, msg));
        }
    }

    pub(super) fn push_down(&mut self, conn: ConnId, at: u64, msg: Down) {
        if let Some(c) = self.map.get_mut(&conn).filter(|c| !c.closed_by_master) {
            let at = c.down.back().map_or(at, |(t, _)| at.max(*t));
            c.down.push_back((at, msg));
        }
    }
}

impl Sim {
    /// Messages due for a client, in order; `None` once its stream ended.
    pub(super) fn client_inbox(&mut self, conn: ConnId) -> Option<Vec<Down>> {
        let step = self.step;
        let c = self.conns.map.get_mut(&conn)?;
        let mut msgs = Vec::new();
        while c.down.front().is_some_and(|(at, _)| *at <= step) {
            let m = c.down.pop_front().expect("checked").1;
            trace(
                step,
                &format!("{:?} <- master {} on {conn}", c.client, c.master),
                &m,
            );
            msgs.push(m);
        }
        if c.closed_by_master && c.down.is_empty() {
            let client = c.client;
            self.conns.map.remove(&conn);
            self.client_lost_conn(client, conn);
            if msgs.is_empty() {
                return None;
            }
        }
        Some(msgs)
    }

    /// Whether a client can reach a master across the current partition:
    /// clients are on the side of their home master.
    pub(super) fn reachable(&self, client: Client, master: u64) -> bool {
        let home = match client {
            Client::Agent(a) => self.agents[a].home,
            Client::Framework(f) => self.frameworks[f].home,
            Client::Rogue => 1,
        };
        !self.partition.cut(home, master)
    }

    /// Which master a client without a stream tries next: the hint, else
    /// any.
    pub(super) fn pick_master(&mut self, hint: Option<u64>) -> u64 {
        hint.unwrap_or_else(|| 1 + self.rng.below(self.masters.len() as u64))
    }
}
