//! Which Linux capabilities a task may hold: none at all for a task of an
//! unprivileged user, and for a task allowed to run as root a conservative
//! bounding set (after Docker's default, without `CAP_MKNOD` and
//! `CAP_NET_RAW`: tasks share the host's devices cgroup defaults and its
//! network). The wrapper drops the rest from the bounding set between fork
//! and exec (`namespaces.rs`); this module only computes the list.

/// A capability: its number (`linux/capability.h`) and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap(pub u32, pub &'static str);

/// What a root task keeps. Everything else — among them CAP_SYS_ADMIN
/// (mounts, namespaces), CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYS_RAWIO,
/// CAP_SYS_BOOT, CAP_SYS_TIME, CAP_NET_ADMIN, CAP_NET_RAW,
/// CAP_DAC_READ_SEARCH (open_by_handle_at escapes), CAP_MKNOD, CAP_BPF,
/// CAP_PERFMON, CAP_SYSLOG, CAP_SYS_RESOURCE — is dropped.
pub const ROOT_DEFAULT: &[Cap] = &[
    Cap(0, "CAP_CHOWN"),
    Cap(1, "CAP_DAC_OVERRIDE"),
    Cap(3, "CAP_FOWNER"),
    Cap(4, "CAP_FSETID"),
    Cap(5, "CAP_KILL"),
    Cap(6, "CAP_SETGID"),
    Cap(7, "CAP_SETUID"),
    Cap(8, "CAP_SETPCAP"),
    Cap(10, "CAP_NET_BIND_SERVICE"),
    Cap(18, "CAP_SYS_CHROOT"),
    Cap(29, "CAP_AUDIT_WRITE"),
    Cap(31, "CAP_SETFCAP"),
];

/// The highest capability number of kernels this code knows
/// (`CAP_CHECKPOINT_RESTORE`); used when /proc does not say.
const KNOWN_LAST_CAP: u32 = 40;

/// The highest capability number of the running kernel.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(KNOWN_LAST_CAP)
}

/// The capabilities to drop from the bounding set of a task: all of them
/// (`0..=last_cap`) unless it runs as root, else those not in
/// [`ROOT_DEFAULT`].
pub fn bounding_drops(last_cap: u32, runs_as_root: bool) -> Vec<u32> {
    (0..=last_cap)
        .filter(|c| !runs_as_root || !ROOT_DEFAULT.iter().any(|k| k.0 == *c))
        .collect()
}

/// The bounding-set mask (bit N = capability N) a task ends up with.
pub fn kept_mask(last_cap: u32, runs_as_root: bool) -> u64 {
    let drops = bounding_drops(last_cap, runs_as_root);
    (0..=last_cap.min(63))
        .filter(|c| !drops.contains(c))
        .fold(0u64, |m, c| m | (1 << c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprivileged_tasks_keep_nothing() {
        assert_eq!(bounding_drops(40, false).len(), 41);
        assert_eq!(kept_mask(40, false), 0);
    }

    #[test]
    fn root_tasks_keep_the_conservative_set() {
        let kept = kept_mask(40, true);
        for (n, name) in [
            (21, "CAP_SYS_ADMIN"),
            (16, "CAP_SYS_MODULE"),
            (19, "CAP_SYS_PTRACE"),
            (12, "CAP_NET_ADMIN"),
            (13, "CAP_NET_RAW"),
            (17, "CAP_SYS_RAWIO"),
            (2, "CAP_DAC_READ_SEARCH"),
            (22, "CAP_SYS_BOOT"),
            (27, "CAP_MKNOD"),
            (39, "CAP_BPF"),
        ] {
            assert_eq!(kept & (1 << n), 0, "{name} is kept");
        }
        assert_eq!(kept.count_ones() as usize, ROOT_DEFAULT.len());
        assert_eq!(kept & 1, 1, "CAP_CHOWN");
    }
}
