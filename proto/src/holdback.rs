//! What a GPU agent keeps back for its idle GPUs. Frameworks without the
//! GPU capability may be offered a GPU agent's cpus, mem, disk and ports,
//! never its GPUs, and never the cpus and mem held back here, so CPU-only
//! work can never leave an idle GPU without the cpus and memory to use it.
//!
//! One definition, used by the master's allocator when it builds an offer
//! and by `/api/state` (and through it `mezz run`'s "why am I waiting"
//! lines), so the two never disagree. Pure arithmetic in thousandths.

use crate::Resources;

pub use crate::resources::GPUS;
use crate::resources::{CPUS, MEM};

/// The names that are held back, in the order of [`HeldBack`].
pub const HELD_NAMES: [&str; 2] = [CPUS, MEM];

/// cpus and mem in thousandths (the unit of [`Resources::scalar_milli`]).
pub type HeldBack = [i64; 2];

/// GPUs in `r` in thousandths: each identity of the `gpus` set counts
/// 1000, plus a `gpus` scalar (an operator may advertise a bare count),
/// reserved or not.
pub fn gpus_milli(r: &Resources) -> i64 {
    (r.set_len(GPUS) as i64).saturating_mul(1000) + r.scalar_milli(GPUS)
}

/// The unreserved cpus and mem of `r`, in thousandths.
pub fn unreserved_cpus_mem(r: &Resources) -> HeldBack {
    let u = r.unreserved();
    HELD_NAMES.map(|n| u.scalar_milli(n))
}

/// A per-GPU reserve (`--gpu-reserve`) in thousandths; `None` when it
/// names neither cpus nor mem (then the default applies).
pub fn per_gpu(reserve: &Resources) -> Option<HeldBack> {
    let q = HELD_NAMES.map(|n| reserve.scalar_milli(n));
    (q != [0, 0]).then_some(q)
}

/// What an agent holds back, in thousandths of cpus and mem.
///
/// - `base`: the agent's unreserved cpus and mem in total (reserved
///   resources go to their role only and are not held back);
/// - `gpus_total`, `gpus_idle`: its GPUs, all and not used by a task nor
///   offered (thousandths, see [`gpus_milli`]);
/// - `per_gpu`: the agent's `--gpu-reserve`, per idle GPU. Without one,
///   each GPU's share of half the agent: with every GPU idle, half of the
///   machine stays open to CPU-only work and half waits for GPU work; and
///   never so much that less than one CPU stays open (an agent of one CPU
///   holds back none by default).
///
/// Never more than `base`; nothing for an agent without GPUs or without
/// idle ones.
///
/// ```
/// use mezz_proto::holdback::held_back_milli;
/// // 8 cpus, 32 GB, 4 GPUs of which 2 idle: a quarter of the machine.
/// assert_eq!(held_back_milli([8000, 32_768_000], 4000, 2000, None), [2000, 8_192_000]);
/// // --gpu-reserve 'cpus:2;mem:8192', 3 idle GPUs, capped by the total.
/// assert_eq!(held_back_milli([4000, 65_536_000], 4000, 3000, Some([2000, 8_192_000])), [4000, 24_576_000]);
/// assert_eq!(held_back_milli([8000, 1000], 0, 0, None), [0, 0]);
/// // One CPU and two idle GPUs: the CPU stays open to CPU-only work.
/// assert_eq!(held_back_milli([1000, 8000], 2000, 2000, None), [0, 4000]);
/// ```
pub fn held_back_milli(
    base: HeldBack,
    gpus_total: i64,
    gpus_idle: i64,
    per_gpu: Option<HeldBack>,
) -> HeldBack {
    if gpus_total <= 0 || gpus_idle <= 0 {
        return [0, 0];
    }
    let idle = i128::from(gpus_idle.min(gpus_total));
    std::array::from_fn(|i| {
        let want = match per_gpu {
            // A reserve per GPU, times the idle GPUs (thousandths twice).
            Some(p) => i128::from(p[i]) * idle / 1000,
            None => {
                let share = i128::from(base[i]) * idle / (2 * i128::from(gpus_total));
                if i == 0 {
                    // One CPU always stays open to CPU-only work: a task of
                    // one CPU (`mezz run`'s default) must fit every agent
                    // that has one, small GPU agents included.
                    share.min(i128::from(base[0]) - 1000)
                } else {
                    share
                }
            }
        };
        want.clamp(0, i128::from(base[i].max(0))) as i64
    })
}

/// [`held_back_milli`] over whole resource bags: the agent's `total`, what
/// is `available` now (its GPUs there are the idle ones) and its per-GPU
/// reserve. Returns cpus and mem (empty when nothing is held back).
///
/// ```
/// use mezz_proto::{holdback::held_back, Resources};
/// let total = Resources::parse("cpus:2;mem:4096;gpus:{g0,g1}").unwrap();
/// let one_used = Resources::parse("cpus:1;mem:1024;gpus:{g1}").unwrap();
/// assert_eq!(held_back(&total, &total, None).to_string(), "cpus:1;mem:2048");
/// assert_eq!(held_back(&total, &one_used, None).to_string(), "cpus:0.5;mem:1024");
/// ```
pub fn held_back(
    total: &Resources,
    available: &Resources,
    reserve: Option<&Resources>,
) -> Resources {
    let held = held_back_milli(
        unreserved_cpus_mem(total),
        gpus_milli(total),
        gpus_milli(available),
        reserve.and_then(per_gpu),
    );
    let mut out = Resources::new();
    for (name, m) in HELD_NAMES.iter().zip(held) {
        out.set_scalar(name, m as f64 / 1000.0);
    }
    out
}

/// `r` without any GPU, reserved or not: what a framework without the GPU
/// capability may see of it.
pub fn without_gpus(r: &Resources) -> Resources {
    fn strip(r: &mut Resources) {
        let items: Vec<String> = r.set_items(GPUS).into_iter().map(String::from).collect();
        if !items.is_empty() {
            r.subtract(&Resources::new().with_set(GPUS, items));
        }
        r.set_scalar(GPUS, 0.0);
    }
    let mut out = r.unreserved();
    strip(&mut out);
    for (role, inner) in r.reservations() {
        let mut inner = inner.clone();
        strip(&mut inner);
        out.add(&inner.reserve(role));
    }
    out
}

/// Checks an agent's `--gpu-reserve` (e.g. `cpus:2;mem:8192`): unreserved
/// cpus and mem only, at least one of them.
///
/// ```
/// use mezz_proto::holdback::parse_gpu_reserve;
/// assert_eq!(parse_gpu_reserve("cpus:2;mem:8192").unwrap().to_string(), "cpus:2;mem:8192");
/// assert!(parse_gpu_reserve("disk:10").unwrap_err().contains("cpus and mem"));
/// assert!(parse_gpu_reserve("cpus(eng):1").is_err());
/// ```
pub fn parse_gpu_reserve(text: &str) -> Result<Resources, String> {
    let r = Resources::parse(text).map_err(|e| e.to_string())?;
    if r.has_reservations() {
        return Err(format!(
            "'{text}': a GPU reserve is unreserved cpus and mem per GPU, without a role"
        ));
    }
    let names = r.quantities();
    if let Some(other) = names.keys().find(|n| !HELD_NAMES.contains(&n.as_str())) {
        return Err(format!(
            "'{text}' names {other}; a GPU reserve holds only cpus and mem (e.g. 'cpus:2;mem:8192')"
        ));
    }
    if per_gpu(&r).is_none() {
        return Err(format!(
            "'{text}' holds nothing; give cpus and mem per GPU (e.g. 'cpus:2;mem:8192')"
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        Resources::parse(s).unwrap()
    }

    #[test]
    fn proportional_default_shrinks_as_gpus_are_used() {
        let total = res("cpus:16;mem:65536;gpus:{a,b,c,d}");
        let base = unreserved_cpus_mem(&total);
        let held: Vec<i64> = (0..=4)
            .map(|idle| held_back_milli(base, 4000, idle * 1000, None)[0])
            .collect();
        assert_eq!(held, vec![0, 2000, 4000, 6000, 8000]);
    }

    #[test]
    fn reserved_resources_are_neither_held_nor_counted() {
        let total = res("cpus:2;cpus(eng):6;mem:1000;gpus:{a}");
        assert_eq!(
            held_back(&total, &total, None).to_string(),
            "cpus:1;mem:500"
        );
        let r = res("cpus:1;gpus(eng):{a};cpus(eng):2;gpus:{b}");
        assert_eq!(without_gpus(&r).to_string(), "cpus:1;cpus(eng):2");
        assert_eq!(gpus_milli(&r), 2000);
        assert_eq!(without_gpus(&res("cpus:1;gpus:2")).to_string(), "cpus:1");
    }

    #[test]
    fn a_reserve_above_the_machine_holds_the_machine() {
        let total = res("cpus:2;mem:100;gpus:{a,b}");
        let reserve = res("cpus:4");
        assert_eq!(
            held_back(&total, &total, Some(&reserve)).to_string(),
            "cpus:2"
        );
    }
}
