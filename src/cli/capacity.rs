//! What the cluster can hold, as `mezz run` and `mezz tf run` ask before
//! and while they wait: whether a request fits any registered agent at all
//! (if not, it is refused at once), and why each agent is not offering it
//! now (busy, too small, or keeping cpus and mem back for idle GPUs, as
//! `/api/state` reports with the master's own `mezz_proto::holdback`).
//! Pure functions over the cluster state; the commands fetch it.

use mezz_proto::resources::{CPUS, MEM};
use std::collections::BTreeMap;

use mezz_proto::v1::AgentView;
use mezz_proto::Resources;

/// One task's request: what `mezz run --cpus --mem --gpus` asks for (the
/// masters check jobs with the same type).
pub use mezz_proto::capacity::Need;
use mezz_proto::capacity::{coverage, usable};

/// An agent's name for messages: its hostname, and its address when
/// several agents share the hostname.
fn agent_name(a: &AgentView, all: &[AgentView]) -> String {
    if all.iter().filter(|b| b.hostname == a.hostname).count() > 1 {
        format!("{} ({})", a.hostname, a.address)
    } else {
        a.hostname.clone()
    }
}

/// `Some(message)` when agents are registered and none of them could ever
/// hold `need`, even idle: the message names the largest and its totals.
/// `None` when one could, or when no agent is registered yet.
pub fn never_fits(agents: &[AgentView], need: &Need) -> Option<String> {
    let totals: Vec<(String, Resources)> = agents
        .iter()
        .map(|a| {
            (
                agent_name(a, agents),
                Resources::parse(&a.resources).unwrap_or_default(),
            )
        })
        .collect();
    mezz_proto::capacity::never_fits(totals.iter().map(|(n, r)| (n.clone(), r)), need)
}

/// `Some(message)` when some replica of a gang fits no registered agent
/// (see [`never_fits`]). `groups` are (replica kind, one replica's need,
/// count), all of one role. A gang larger than all agents together is not
/// refused: it waits whole for agents to join, and says what is missing.
pub fn gang_never_fits(agents: &[AgentView], groups: &[(String, Need, u32)]) -> Option<String> {
    groups
        .iter()
        .filter(|g| g.2 > 0)
        .find_map(|(kind, need, _)| {
            never_fits(agents, need).map(|why| format!("a {kind} replica cannot be placed: {why}"))
        })
}

fn quantity(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// `cpus:1;mem:12288` from a view's map (cpus and mem only).
fn cpus_mem(m: &BTreeMap<String, f64>) -> String {
    Resources::new()
        .with_scalar(CPUS, quantity(m, "cpus"))
        .with_scalar(MEM, quantity(m, "mem"))
        .to_string()
}

/// Why each agent is not taking `need` right now, one phrase per agent that
/// cannot (agents that could are left out): "dev-agent-1 keeps cpus:1;
/// mem:4096 for its 2 idle GPUs".
pub fn why_not_offered(agents: &[AgentView], need: &Need) -> Vec<String> {
    let mut out = Vec::new();
    for a in agents {
        let name = agent_name(a, agents);
        if a.status != "connected" {
            out.push(format!("{name} is {}", a.status));
            continue;
        }
        let all = usable(
            &Resources::parse(&a.resources).unwrap_or_default(),
            &need.role,
        );
        if coverage(&all, need) < 1.0 {
            out.push(format!("{name} has only {all} in total"));
            continue;
        }
        let free = |n: &str| {
            (quantity(&a.total, n) - quantity(&a.used, n) - quantity(&a.offered, n)).max(0.0)
        };
        let fits = |cpus: f64, mem: f64| cpus + 1e-9 >= need.cpus && mem + 1e-9 >= need.mem;
        let (cpus, mem) = (free("cpus"), free("mem"));
        let free_text = Resources::new()
            .with_scalar(CPUS, cpus)
            .with_scalar(MEM, mem)
            .to_string();
        let free_text = if free_text.is_empty() {
            "nothing".to_string()
        } else {
            free_text
        };
        if need.gpus > 0 {
            let idle = a.idle_gpus.floor();
            if idle < f64::from(need.gpus) {
                out.push(format!(
                    "{name} has {idle} of its {} GPUs free",
                    quantity(&a.total, "gpus")
                ));
            } else if !fits(cpus, mem) {
                out.push(format!("{name} has {free_text} free"));
            }
            continue;
        }
        let held = |n: &str| quantity(&a.held_for_gpus, n);
        if fits(cpus, mem) && !fits(cpus - held("cpus"), mem - held("mem")) {
            let idle = a.idle_gpus;
            out.push(format!(
                "{name} keeps {} for its {idle} idle GPU{} (CPU-only work may use the rest)",
                cpus_mem(&a.held_for_gpus),
                if idle == 1.0 { "" } else { "s" }
            ));
        } else if !fits(cpus, mem) {
            out.push(format!("{name} has {free_text} free"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_proto::holdback::gpus_milli;

    fn map(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn agent(host: &str, resources: &str) -> AgentView {
        let r = Resources::parse(resources).unwrap();
        AgentView {
            id: format!("id-{host}"),
            hostname: host.into(),
            address: format!("{host}:5051"),
            status: "connected".into(),
            resources: resources.into(),
            total: r.quantities(),
            idle_gpus: gpus_milli(&r) as f64 / 1000.0,
            ..Default::default()
        }
    }

    fn need(cpus: f64, mem: f64, gpus: u32) -> Need {
        Need {
            cpus,
            mem,
            gpus,
            role: "*".into(),
        }
    }

    #[test]
    fn a_request_larger_than_every_agent_names_the_largest() {
        let agents = vec![
            agent("small", "cpus:2;mem:4096"),
            agent("big", "cpus:8;mem:16384;gpus:{g0}"),
        ];
        let msg = never_fits(&agents, &need(512.0, 256.0, 0)).unwrap();
        assert_eq!(
            msg,
            "no agent can ever hold cpus:512;mem:256: the largest agent, big, has \
             cpus:8;mem:16384;gpus:{g0} in total"
        );
        assert!(never_fits(&agents, &need(8.0, 256.0, 1)).is_none());
        assert!(never_fits(&agents, &need(1.0, 256.0, 2))
            .unwrap()
            .contains("256 and 2 GPU(s)"));
        assert!(never_fits(&[], &need(512.0, 1.0, 0)).is_none());
    }

    #[test]
    fn a_gang_is_refused_only_for_a_replica_that_fits_no_agent() {
        let agents = vec![agent("a", "cpus:2;mem:4096"), agent("b", "cpus:2;mem:4096")];
        // Larger than both agents together: it may wait for more to join.
        let many = [("worker".to_string(), need(2.0, 1024.0, 0), 3)];
        assert!(gang_never_fits(&agents, &many).is_none());
        let big = [
            ("worker".to_string(), need(1.0, 1.0, 0), 2),
            ("ps".to_string(), need(3.0, 1.0, 0), 1),
        ];
        assert!(gang_never_fits(&agents, &big)
            .unwrap()
            .starts_with("a ps replica cannot be placed: no agent can ever hold cpus:3"));
        let none = [("ps".to_string(), need(3.0, 1.0, 0), 0)];
        assert!(gang_never_fits(&agents, &none).is_none());
    }

    #[test]
    fn reservations_count_only_for_their_role() {
        let agents = vec![agent("a", "cpus:1;cpus(eng):4;mem:1024")];
        let mut n = need(3.0, 100.0, 0);
        assert!(never_fits(&agents, &n).is_some());
        n.role = "eng".into();
        assert!(never_fits(&agents, &n).is_none());
    }

    #[test]
    fn an_agent_holding_back_for_idle_gpus_says_so() {
        let mut g = agent("dev-agent-1", "cpus:2;mem:4096;gpus:{g0,g1}");
        g.held_for_gpus = map(&[("cpus", 1.0), ("mem", 2048.0)]);
        let mut busy = agent("busy", "cpus:2;mem:4096");
        busy.used = map(&[("cpus", 1.5)]);
        let mut gone = agent("gone", "cpus:2;mem:4096");
        gone.status = "disconnected".into();
        let agents = vec![g, busy, gone, agent("free", "cpus:8;mem:8192")];
        let why = why_not_offered(&agents, &need(1.5, 256.0, 0));
        assert_eq!(
            why,
            vec![
                "dev-agent-1 keeps cpus:1;mem:2048 for its 2 idle GPUs (CPU-only work may use the rest)",
                "busy has cpus:0.5;mem:4096 free",
                "gone is disconnected",
            ]
        );
        // A GPU task is not told about the hold-back: it may use it.
        let why = why_not_offered(&agents[..1], &need(1.5, 256.0, 1));
        assert!(why.is_empty(), "{why:?}");
        let why = why_not_offered(&agents[..2], &need(1.0, 256.0, 3));
        assert_eq!(
            why[0],
            "dev-agent-1 has only cpus:2;mem:4096;gpus:{g0,g1} in total"
        );
    }
}
