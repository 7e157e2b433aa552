//! The rogue client: it speaks the agent protocol with ill intent, either
//! registering as a real agent with a wrong secret (it must be refused)
//! or as itself and then reporting real agents' tasks FINISHED (those
//! reports must reach no framework).

use mezz_proto::v1::{
    master_message, AgentInfo, MasterMessage, RegisterAgent, StatusSource, TaskReason, TaskState,
    TaskStatus,
};
use mezz_proto::{Resources, PROTOCOL_VERSION};

use super::streams::{Client, Down, Up};
use super::Sim;
use crate::cluster::ConnId;

/// A client that speaks the agent protocol with ill intent: it registers
/// with the id of a real agent and a wrong secret, or under its own id
/// (legitimately) and then reports other agents' tasks FINISHED.
#[derive(Default)]
pub(super) struct Rogue {
    pub(super) conn: Option<ConnId>,
    /// The real agent it pretends to be on this stream, if any.
    pub(super) impersonating: Option<usize>,
    pub(super) registered: bool,
    pub(super) hint: Option<u64>,
    pub(super) refused: u64,
    pub(super) spoofed: u64,
}

/// The rogue's own agent id and secret.
pub(super) const ROGUE_ID: &str = "rogue";
pub(super) const ROGUE_SECRET: &str =
    "0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad";
/// Spoofed updates carry uuids with this prefix.
pub(super) const SPOOF: &str = "spoof-";

impl Sim {
    /// The rogue's step: connect as a known agent with a wrong secret (it
    /// must be refused) or as itself, and once registered as itself, report
    /// tasks of real agents FINISHED (those reports must go nowhere).
    pub(super) fn rogue_round(&mut self, heal: bool) -> Result<(), String> {
        let step = self.step;
        if heal {
            if let Some(conn) = self.rogue.conn {
                self.hang_up(conn);
            }
            return Ok(());
        }
        let Some(conn) = self.rogue.conn else {
            if !self.rng.chance(0.05) {
                return Ok(());
            }
            let hint = self.rogue.hint.take();
            let target = self.pick_master(hint);
            if !self.master_up(target) || !self.reachable(Client::Rogue, target) {
                return Ok(());
            }
            let known: Vec<usize> = (0..self.agents.len())
                .filter(|&a| self.agents[a].ever_registered)
                .collect();
            let impersonate = (!known.is_empty() && self.rng.chance(0.5))
                .then(|| known[self.rng.below(known.len() as u64) as usize]);
            let reg = match impersonate {
                Some(a) => {
                    let mut reg = self.register_message(a);
                    // Its tasks, resources and all: only the secret is
                    // wrong (or missing).
                    reg.secret = if self.rng.chance(0.5) {
                        String::new()
                    } else {
                        ROGUE_SECRET.into()
                    };
                    reg
                }
                None => RegisterAgent {
                    protocol_version: PROTOCOL_VERSION,
                    agent: Some(AgentInfo {
                        id: ROGUE_ID.into(),
                        hostname: ROGUE_ID.into(),
                        address: "127.0.0.1:2".into(),
                        // Too little for any task: it is offered nothing
                        // a framework takes.
                        resources: Resources::parse("cpus:0.01;mem:1")
                            .map_err(|e| e.to_string())?
                            .to_proto(),
                        ..Default::default()
                    }),
                    secret: ROGUE_SECRET.into(),
                    ..Default::default()
                },
            };
            let conn = self.conns.open(target, Client::Rogue);
            self.conns.push_up(conn, step + 1, Up::Register(reg));
            self.rogue = Rogue {
                conn: Some(conn),
                impersonating: impersonate,
                registered: false,
                ..std::mem::take(&mut self.rogue)
            };
            return Ok(());
        };
        let Some(msgs) = self.client_inbox(conn) else {
            return Ok(());
        };
        for m in msgs {
            match m {
                Down::Refused(_, hint) => self.rogue.hint = hint,
                Down::Agent(MasterMessage {
                    message: Some(master_message::Message::Registered(_)),
                }) => {
                    if let Some(a) = self.rogue.impersonating {
                        return Err(format!(
                            "a rogue with a wrong secret registered as {}",
                            self.agents[a].id
                        ));
                    }
                    self.rogue.registered = true;
                }
                Down::Agent(MasterMessage {
                    message: Some(master_message::Message::Refused(_)),
                }) => self.rogue.refused += 1,
                // Launches (there is room for none), kills, acks: ignored.
                Down::Agent(_) => {}
                Down::Event(_) | Down::Accepted(..) => {
                    return Err("the rogue got a framework's message".into())
                }
            }
        }
        if self.rogue.conn != Some(conn) || !self.rogue.registered {
            return Ok(());
        }
        // Report a running task of a real agent FINISHED, under the
        // rogue's own id or under that agent's.
        let running: Vec<(usize, (String, String))> = self
            .agents
            .iter()
            .enumerate()
            .flat_map(|(a, agent)| {
                agent
                    .tasks
                    .iter()
                    .filter(|(_, t)| !t.status.state().is_terminal())
                    .map(move |(k, _)| (a, k.clone()))
            })
            .collect();
        if !running.is_empty() && self.rng.chance(0.2) {
            let (a, (fid, tid)) = running[self.rng.below(running.len() as u64) as usize].clone();
            let agent_id = if self.rng.chance(0.5) {
                ROGUE_ID.to_string()
            } else {
                self.agents[a].id.clone()
            };
            self.rogue.spoofed += 1;
            let status = TaskStatus {
                task_id: tid,
                framework_id: fid,
                agent_id,
                state: TaskState::Finished as i32,
                reason: TaskReason::CommandExited as i32,
                uuid: format!("{SPOOF}{}", self.rogue.spoofed),
                source: StatusSource::Agent as i32,
                ..Default::default()
            };
            self.conns.push_up(conn, step + 1, Up::Update(status));
        }
        self.conns.push_up(conn, step + 1, Up::Heartbeat);
        if self.rng.chance(0.02) {
            self.hang_up(conn);
        }
        Ok(())
    }
}
