//! The whole-master simulation's invariants: those across masters that
//! hold at every step (one leader per term, one lease holder, offers and
//! tasks that fit their agent), and what must be settled once the faults
//! stop (every task and update accounted for, dead frameworks removed).
//! The full list is in the parent module's comment.

use std::collections::BTreeMap;

use mezz_proto::v1::TaskState;
use mezz_proto::Resources;

use super::Sim;

impl Sim {
    /// Invariants across masters, every step.
    pub(super) fn check_masters(&mut self) -> Result<(), String> {
        let mut leased = Vec::new();
        for m in &self.masters {
            let Some(node) = m.node.as_ref() else {
                continue;
            };
            if node.is_leader() {
                let term = node.replica().term();
                match self.leaders.insert(term, m.id) {
                    Some(other) if other != m.id => {
                        return Err(format!("two leaders in term {term}: {other} and {}", m.id))
                    }
                    _ => {}
                }
            }
            if node.may_offer() {
                leased.push(m.id);
            }
        }
        if leased.len() > 1 {
            return Err(format!(
                "masters {leased:?} may all hand out resources at once"
            ));
        }
        let Some(&leader) = leased.first() else {
            return Ok(());
        };
        let node = self.masters[leader as usize - 1]
            .node
            .as_ref()
            .expect("leased");
        let mut offered: BTreeMap<String, Resources> = BTreeMap::new();
        for (_, agent, res) in node.cluster().outstanding_offers() {
            offered.entry(agent.0.clone()).or_default().add(res);
        }
        for agent in &self.agents {
            let mut committed = offered.remove(&agent.id).unwrap_or_default();
            for t in agent.tasks.values() {
                if !t.status.state().is_terminal() {
                    committed.add(&Resources::from_proto(&t.info.resources).unwrap_or_default());
                }
            }
            if !agent.total.contains(&committed) {
                let view = node.cluster().view(false, vec![], String::new(), 0.0);
                let theirs: Vec<String> = view
                    .tasks
                    .iter()
                    .filter(|t| t.agent_id == agent.id)
                    .map(|t| format!("{}={}", t.id, t.state))
                    .collect();
                let ours: Vec<String> = agent
                    .tasks
                    .iter()
                    .map(|((_, t), s)| format!("{t}={:?}", s.status.state()))
                    .collect();
                eprintln!(
                    "step {}: master sees {theirs:?}, agent runs {ours:?}, conn {:?} registered {}",
                    self.step, agent.conn, agent.registered
                );
                return Err(format!(
                    "master {leader} offers on {} what runs there: offered plus running is \
                     {committed}, the agent has {}",
                    agent.id, agent.total
                ));
            }
        }
        Ok(())
    }

    /// What is still wrong once faults stop; `None` when all is settled.
    pub(super) fn unsettled(&self) -> Option<String> {
        let leader = self
            .masters
            .iter()
            .filter_map(|m| m.node.as_ref())
            .find(|n| n.may_offer())?;
        for agent in &self.agents {
            if !agent.registered {
                return Some(format!("{} is not registered", agent.id));
            }
            if let Some((s, _)) = agent.unacked.first() {
                return Some(format!(
                    "{} still waits for an acknowledgement of {} {:?}",
                    agent.id,
                    s.task_id,
                    s.state()
                ));
            }
        }
        let step = self.step;
        for fw in &self.frameworks {
            let mut removed_ids = fw.retired.clone();
            if fw.dead(step) && !fw.info.id.is_empty() {
                removed_ids.push(fw.info.id.clone());
            }
            for id in &removed_ids {
                let removed = leader
                    .cluster()
                    .registry()
                    .removed_frameworks
                    .contains(&mezz_proto::FrameworkId(id.clone()));
                if !removed {
                    return Some(format!("{} ({id}) outlived its failover timeout", fw.name));
                }
                for agent in &self.agents {
                    for ((fid, tid), t) in &agent.tasks {
                        if fid == id && !t.status.state().is_terminal() {
                            return Some(format!(
                                "{tid} of the removed {} still runs on {}",
                                fw.name, agent.id
                            ));
                        }
                    }
                }
            }
            if fw.dead(step) {
                continue;
            }
            if !fw.subscribed {
                return Some(format!("{} is not subscribed", fw.name));
            }
            for (tid, known) in &fw.tasks {
                let truth = self
                    .agents
                    .iter()
                    .find_map(|a| a.tasks.get(&(fw.info.id.clone(), tid.clone())));
                match truth {
                    // Over is over, whoever said it last (the agent's
                    // KILLED, or a master's LOST after its removal).
                    Some(t)
                        if t.status.state().is_terminal()
                            && known.state.is_some_and(|s| s.is_terminal()) => {}
                    Some(t) if known.state != Some(t.status.state()) => {
                        return Some(format!(
                            "{} thinks {tid} is {:?}; its agent says {:?}",
                            fw.name,
                            known.state,
                            t.status.state()
                        ))
                    }
                    Some(_) => {}
                    None if known.accepted == Some(false) => {}
                    None if known
                        .state
                        .is_some_and(|s| s.is_terminal() || s == TaskState::Unknown) => {}
                    None => {
                        return Some(format!(
                            "{} thinks {tid} is {:?} (accepted: {:?}) but no agent has it",
                            fw.name, known.state, known.accepted
                        ))
                    }
                }
            }
        }
        // Every update reached its framework and was applied there once.
        for agent in &self.agents {
            for (uuid, (fid, tid, state)) in &agent.produced {
                let Some(fw) = self.frameworks.iter().find(|f| f.info.id == *fid) else {
                    continue; // a removed framework's
                };
                if fw.dead(step) {
                    continue; // acknowledged by the master on its behalf
                }
                // A live state may be skipped once the task is known to be
                // over (a stale resend after the task was declared lost);
                // an end never is.
                let superseded = !state.is_terminal()
                    && fw
                        .tasks
                        .get(tid)
                        .and_then(|t| t.state)
                        .is_some_and(|s| s.is_terminal());
                if !fw.applied.contains(uuid) && !superseded {
                    return Some(format!(
                        "{} never got the {state:?} update of {tid} from {}",
                        fw.name, agent.id
                    ));
                }
            }
        }
        None
    }
}
