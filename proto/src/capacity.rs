//! Whether a request could ever fit one agent, even idle: the check both
//! the command line (before it submits) and the masters (before they store
//! a job) make, with the same words. An agent holds a request of a role
//! when its unreserved resources plus those reserved for that role cover
//! the request's cpus, mem and GPUs.

use crate::holdback::gpus_milli;
use crate::resources::{CPUS, MEM};
use crate::Resources;

/// One task's request: cpus, mem (MB) and whole GPUs, in a role.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// CPUs.
    pub cpus: f64,
    /// Memory, MB.
    pub mem: f64,
    /// Whole GPUs.
    pub gpus: u32,
    /// The framework's role: resources reserved for it count too.
    pub role: String,
}

impl Need {
    /// cpus and mem, as `Resources` (GPUs are a count here).
    pub fn scalars(&self) -> Resources {
        Resources::new()
            .with_scalar(CPUS, self.cpus)
            .with_scalar(MEM, self.mem)
    }

    /// `cpus:1;mem:256` and, with GPUs, ` and 2 GPU(s)`.
    pub fn describe(&self) -> String {
        if self.gpus > 0 {
            format!("{} and {} GPU(s)", self.scalars(), self.gpus)
        } else {
            self.scalars().to_string()
        }
    }
}

/// What a framework of `role` may ever use of an agent whose resources
/// are `total`: its unreserved resources and those reserved for exactly
/// that role.
pub fn usable(total: &Resources, role: &str) -> Resources {
    let mut out = total.unreserved();
    if let Some(mine) = total.reserved(role) {
        out.add(mine);
    }
    out
}

/// How many times `have` holds the request, on its tightest resource (at
/// least 1.0 when it fits).
pub fn coverage(have: &Resources, need: &Need) -> f64 {
    let ratio = |have: f64, want: f64| {
        if want > 0.0 {
            have / want
        } else {
            f64::INFINITY
        }
    };
    let gpus = gpus_milli(have) as f64 / 1000.0;
    ratio(have.scalar(CPUS), need.cpus)
        .min(ratio(have.scalar(MEM), need.mem))
        .min(ratio(gpus, f64::from(need.gpus)))
}

/// `Some(message)` when agents are known and none of them could ever hold
/// `need`, even idle: the message names the largest (by its name in
/// `agents`) and its totals. `None` when one could, or when no agent is
/// known yet. `agents` are (name, total resources).
pub fn never_fits<'a>(
    agents: impl IntoIterator<Item = (String, &'a Resources)>,
    need: &Need,
) -> Option<String> {
    let mut best: Option<(String, &Resources, f64)> = None;
    let mut count = 0;
    for (name, total) in agents {
        count += 1;
        let c = coverage(&usable(total, &need.role), need);
        if c >= 1.0 {
            return None;
        }
        if best.as_ref().is_none_or(|(_, _, b)| c > *b) {
            best = Some((name, total, c));
        }
    }
    let (name, total, _) = best?;
    let what = if count == 1 {
        "the only agent"
    } else {
        "the largest agent"
    };
    Some(format!(
        "no agent can ever hold {}: {what}, {name}, has {total} in total",
        need.describe()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(cpus: f64, mem: f64, gpus: u32) -> Need {
        Need {
            cpus,
            mem,
            gpus,
            role: "*".into(),
        }
    }

    #[test]
    fn a_request_fits_when_one_agent_holds_it_and_else_names_the_largest() {
        let small = Resources::parse("cpus:2;mem:1024").unwrap();
        let big = Resources::parse("cpus:8;mem:4096").unwrap();
        let agents = || vec![("a".to_string(), &small), ("b".to_string(), &big)];
        assert_eq!(never_fits(agents(), &need(4.0, 2048.0, 0)), None);
        let why = never_fits(agents(), &need(16.0, 512.0, 0)).unwrap();
        assert_eq!(
            why,
            "no agent can ever hold cpus:16;mem:512: the largest agent, b, has cpus:8;mem:4096 in total"
        );
        let why = never_fits(agents(), &need(1.0, 64.0, 1)).unwrap();
        assert!(why.contains("and 1 GPU(s)"), "{why}");
        assert_eq!(
            never_fits(Vec::new(), &need(64.0, 1.0, 0)),
            None,
            "no agent yet"
        );
    }

    #[test]
    fn resources_reserved_for_the_role_count() {
        let r = Resources::parse("cpus:2;cpus(ml):6;mem:4096").unwrap();
        let mut n = need(6.0, 1024.0, 0);
        assert!(never_fits([("a".to_string(), &r)], &n)
            .unwrap()
            .contains("the only agent"));
        n.role = "ml".into();
        assert_eq!(never_fits([("a".to_string(), &r)], &n), None);
    }
}
