//! Quotas (Mesos's quota guarantee and limit) as the allocator uses them:
//! a guarantee is kept available for its role and never offered to others
//! while unmet; a limit is never exceeded. Both count cpus, mem, disk and
//! gpus; this file also trims an offer to fit under a cap.

use mezz_proto::resources::GPUS as GPUS_NAME;
use mezz_proto::Resources;

use super::share::{Qty, GPUS, SHARE_NAMES};

/// A role's weight and quota, as the operator set them.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleConfig {
    /// DRF weight (a role with weight 2 gets twice the share); default 1.
    pub weight: f64,
    /// Resources kept available for the role.
    pub guarantee: Resources,
    /// The most the role may hold; names not given are unlimited.
    pub limit: Resources,
}

impl Default for RoleConfig {
    fn default() -> Self {
        RoleConfig {
            weight: 1.0,
            guarantee: Resources::new(),
            limit: Resources::new(),
        }
    }
}

/// A quota in the allocator's compact form.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quota {
    /// Kept available for the role.
    pub guarantee: Qty,
    /// Per dimension, the most the role may hold (`None`: unlimited).
    pub limit: [Option<i64>; 4],
}

impl Quota {
    /// The compact form of a role's configuration.
    pub fn of(cfg: &RoleConfig) -> Quota {
        let named = cfg.limit.quantities();
        let lim = Qty::of(&cfg.limit);
        let mut limit = [None; 4];
        for (i, n) in SHARE_NAMES.iter().enumerate() {
            if named.contains_key(*n) {
                limit[i] = Some(lim.0[i]);
            }
        }
        Quota {
            guarantee: Qty::of(&cfg.guarantee),
            limit,
        }
    }

    /// True when the quota says nothing.
    pub fn is_none(&self) -> bool {
        self.guarantee.is_zero() && self.limit.iter().all(Option::is_none)
    }

    /// What the role still needs to reach its guarantee.
    pub fn unmet(&self, consumed: Qty) -> Qty {
        self.guarantee.minus(consumed)
    }

    /// Room left under the limit, per dimension.
    pub fn room(&self, consumed: Qty) -> [Option<i64>; 4] {
        std::array::from_fn(|i| self.limit[i].map(|l| (l - consumed.0[i]).max(0)))
    }
}

/// The tighter of two caps.
pub fn tighter(a: [Option<i64>; 4], b: [Option<i64>; 4]) -> [Option<i64>; 4] {
    let mut out = a;
    for i in 0..4 {
        out[i] = match (a[i], b[i]) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, None) => x,
            (None, y) => y,
        };
    }
    out
}

/// `res` cut down so that each capped dimension holds at most its cap.
/// Scalars are cut exactly (fixed point); GPUs are whole devices, the
/// lowest identities kept.
pub fn trim(res: &Resources, cap: [Option<i64>; 4]) -> Resources {
    if cap.iter().all(Option::is_none) {
        return res.clone();
    }
    let have = Qty::of(res);
    let mut out = res.clone();
    for (i, name) in SHARE_NAMES.iter().enumerate().take(GPUS) {
        if let Some(c) = cap[i] {
            if have.0[i] > c {
                out.set_scalar(name, c as f64 / 1000.0);
            }
        }
    }
    if let Some(c) = cap[GPUS] {
        let keep = (c / 1000).max(0) as usize;
        let items: Vec<String> = res
            .set_items(GPUS_NAME)
            .into_iter()
            .map(String::from)
            .collect();
        if items.len() > keep {
            let drop = Resources::new().with_set(GPUS_NAME, items[keep..].iter().cloned());
            out.subtract(&drop);
        }
        let g = res.scalar_milli(GPUS_NAME);
        if g > 0 && g > c {
            out.set_scalar(GPUS_NAME, c as f64 / 1000.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_scalars_and_whole_gpus() {
        let r = Resources::parse("cpus:8;mem:1024;gpus:{g0,g1,g2}").unwrap();
        let t = trim(&r, [Some(2500), None, None, Some(1999)]);
        assert_eq!(t.to_string(), "cpus:2.5;mem:1024;gpus:{g0}");
        assert!(r.contains(&t));
    }

    #[test]
    fn quota_room_and_unmet() {
        let cfg = RoleConfig {
            weight: 1.0,
            guarantee: Resources::parse("cpus:4").unwrap(),
            limit: Resources::parse("cpus:6;gpus:0").unwrap(),
        };
        let q = Quota::of(&cfg);
        assert_eq!(q.limit, [Some(6000), None, None, Some(0)]);
        assert_eq!(q.unmet(Qty([1000, 0, 0, 0])).0, [3000, 0, 0, 0]);
        assert_eq!(q.room(Qty([7000, 0, 0, 0]))[0], Some(0));
    }
}
