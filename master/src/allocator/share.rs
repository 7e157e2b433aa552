//! Compact quantities for Dominant Resource Fairness: cpus, mem, disk and
//! gpus in thousandths, as fixed-size arrays, so that shares and quota
//! checks on the allocator's hot path neither allocate nor walk maps. Which
//! resource names count towards shares is `mezz_proto`'s one list.

pub use mezz_proto::resources::SHARE_NAMES;
use mezz_proto::Resources;
/// Index of gpus in [`Qty`].
pub const GPUS: usize = 3;

/// cpus, mem, disk and gpus in thousandths (GPUs counted as devices).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Qty(pub [i64; 4]);

impl Qty {
    /// The shared quantities of `r`, reserved or not.
    pub fn of(r: &Resources) -> Qty {
        let mut q = [0i64; 4];
        for (i, n) in SHARE_NAMES.iter().enumerate() {
            q[i] = r.scalar_milli(n);
        }
        q[GPUS] += r.set_len("gpus") as i64 * 1000;
        Qty(q)
    }

    /// `self + o`.
    pub fn plus(self, o: Qty) -> Qty {
        let mut q = self.0;
        for (a, b) in q.iter_mut().zip(o.0) {
            *a = a.saturating_add(b);
        }
        Qty(q)
    }

    /// `self - o`, each dimension clamped at zero.
    pub fn minus(self, o: Qty) -> Qty {
        let mut q = self.0;
        for (a, b) in q.iter_mut().zip(o.0) {
            *a = (*a - b).max(0);
        }
        Qty(q)
    }

    /// `self - o` without clamping (for bookkeeping by differences).
    pub fn delta(self, o: Qty) -> [i64; 4] {
        let mut q = self.0;
        for (a, b) in q.iter_mut().zip(o.0) {
            *a -= b;
        }
        q
    }

    /// Adds a signed difference, clamping at zero.
    pub fn apply(&mut self, d: [i64; 4]) {
        for (a, b) in self.0.iter_mut().zip(d) {
            *a = (*a + b).max(0);
        }
    }

    /// True when every dimension is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&v| v == 0)
    }

    /// The dominant share of `self` in `total`: the largest fraction over
    /// the dimensions the cluster has.
    pub fn dominant_share(&self, total: &Qty) -> f64 {
        let mut best = 0.0f64;
        for (&m, &t) in self.0.iter().zip(total.0.iter()) {
            if t > 0 {
                best = best.max(m as f64 / t as f64);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reserved_and_gpu_devices() {
        let r = Resources::parse("cpus:1;cpus(eng):2;mem:100;gpus:{a,b}").unwrap();
        assert_eq!(Qty::of(&r).0, [3000, 100_000, 0, 2000]);
        let total = Qty([10_000, 1_000_000, 0, 4000]);
        assert!((Qty::of(&r).dominant_share(&total) - 0.5).abs() < 1e-12);
    }
}
