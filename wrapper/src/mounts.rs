//! The task's view of the filesystem. The wrapper builds it in the task's
//! fresh mount namespace, before it forks the task's init: mount
//! propagation private; every mount at or below each read-only tree (the
//! host's `/sys/fs/cgroup`, so limits stay readable but `cgroup.procs`
//! cannot be written) read-only; each hidden directory (the agent's work
//! dir with every sandbox and the checkpoint, `--task-hidden-path`s such as
//! a master's data dir) covered by an empty read-only tmpfs, with the
//! task's own sandbox (read-write, nosuid, nodev) and the exposed
//! directories (read-only: the fake GPU nodes) bound back at their own
//! paths. The host's mounts are never touched. Runs as root in the
//! single-threaded wrapper before any fork, so these are plain nix calls.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use nix::sys::statvfs::FsFlags;

/// What the task must not see, and what it keeps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    /// The task's sandbox: reachable read-write at its own path.
    pub sandbox: PathBuf,
    /// Directories covered by an empty read-only tmpfs.
    pub hide: Vec<PathBuf>,
    /// Directories inside hidden ones bound back read-only.
    pub expose: Vec<PathBuf>,
    /// Trees whose every mount is made read-only.
    pub read_only: Vec<PathBuf>,
}

/// Options of the tmpfs that hides a directory: it only ever holds the
/// directories leading to what is bound back.
const HIDING_TMPFS: &str = "mode=0755,size=64k,nr_inodes=1024";

/// The mount points at or below `tree` listed in `mountinfo` (the format of
/// `/proc/self/mountinfo`), parents before children.
pub fn mounts_under(mountinfo: &str, tree: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(tree))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `hide` without the directories inside another one of it (they are
/// hidden with it), sorted.
pub fn outermost(hide: &[PathBuf]) -> Vec<PathBuf> {
    let mut sorted: Vec<PathBuf> = hide.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut out: Vec<PathBuf> = Vec::new();
    for h in sorted {
        if !out.iter().any(|o| h.starts_with(o)) {
            out.push(h);
        }
    }
    out
}

/// The mount flags to keep when remounting the mount at `path`: a bind
/// remount replaces them all, and nosuid/nodev/noexec must stay.
fn kept_flags(path: &Path) -> nix::Result<MsFlags> {
    let st = nix::sys::statvfs::statvfs(path)?;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        // `ST_RELATIME` (Linux's value; musl's headers do not name it).
        (FsFlags::from_bits_retain(0x1000), MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    Ok(out)
}

/// Remounts the mount at `path` (this namespace's copy) with `extra` flags
/// added to those it has.
fn remount(path: &Path, extra: MsFlags) -> Result<(), String> {
    let flags = kept_flags(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    nix::mount::mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags | extra,
        None::<&str>,
    )
    .map_err(|e| format!("cannot remount {}: {e}", path.display()))
}

/// An `O_PATH` handle on a directory, taken before it is hidden.
fn handle(dir: &Path) -> Result<OwnedFd, String> {
    nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open {}: {e}", dir.display()))
}

/// Creates the directories from `root` (excluded) down to `target` inside
/// a hiding tmpfs, each mode 0755 so any task user can pass.
fn make_mount_point(root: &Path, target: &Path) -> Result<(), String> {
    let rel = target
        .strip_prefix(root)
        .map_err(|_| format!("{} is not below {}", target.display(), root.display()))?;
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match nix::unistd::mkdir(&cur, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(format!("cannot create {}: {e}", cur.display())),
        }
        // The umask may have taken bits away.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &cur,
            Mode::from_bits_truncate(0o755),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| format!("cannot set the mode of {}: {e}", cur.display()))?;
    }
    Ok(())
}

/// The real path of `p` (symbolic links in the operator's paths resolved:
/// mounts go on the directory itself).
fn real(p: &Path) -> Result<PathBuf, String> {
    p.canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", p.display()))
}

/// Builds `view` in the current mount namespace, which must be a fresh
/// one of this process (after `unshare(CLONE_NEWNS)`).
pub fn enter(view: &View) -> Result<(), String> {
    // Resolve and take handles first: hiding makes the paths unreachable.
    let sandbox = real(&view.sandbox)?;
    let mut binds: Vec<(PathBuf, OwnedFd, bool)> =
        vec![(sandbox.clone(), handle(&sandbox)?, false)];
    for e in &view.expose {
        if e.is_dir() {
            let e = real(e)?;
            let fd = handle(&e)?;
            binds.push((e, fd, true));
        }
    }
    let hide = outermost(
        &view
            .hide
            .iter()
            .filter(|h| h.is_dir())
            .map(|h| real(h))
            .collect::<Result<Vec<_>, _>>()?,
    );

    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make the task's mounts private: {e}"))?;

    if !view.read_only.is_empty() {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        for tree in &view.read_only {
            for m in mounts_under(&info, tree) {
                remount(&m, MsFlags::MS_RDONLY)?;
            }
        }
    }

    for h in &hide {
        nix::mount::mount(
            Some("tmpfs"),
            h,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(HIDING_TMPFS),
        )
        .map_err(|e| format!("cannot hide {}: {e}", h.display()))?;
    }
    for (target, fd, read_only) in &binds {
        // Only what a hidden directory covers needs to come back.
        let Some(root) = hide.iter().find(|h| target.starts_with(h)) else {
            continue;
        };
        make_mount_point(root, target)?;
        let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        nix::mount::mount(
            Some(source.as_str()),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("cannot bind {} back: {e}", target.display()))?;
        let extra = if *read_only {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV
        };
        remount(target, extra)?;
    }
    for h in &hide {
        remount(h, MsFlags::MS_RDONLY)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:23 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,memory
28 26 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
29 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:11 - cgroup2 cgroup2 rw
30 22 0:26 / /sys/fs/cgroupx rw - tmpfs tmpfs rw
31 22 0:27 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn mounts_below_a_tree() {
        let got = mounts_under(INFO, Path::new("/sys/fs/cgroup"));
        let want: Vec<PathBuf> = [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/cpu,cpuacct",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/unified",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
        assert_eq!(
            mounts_under(INFO, Path::new("/mnt")),
            vec![PathBuf::from("/mnt/with space")]
        );
    }

    #[test]
    fn nested_hidden_directories_go_with_their_parent() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            outermost(&[
                p("/data/agent-1"),
                p("/data"),
                p("/srv/x"),
                p("/data2"),
                p("/data")
            ]),
            vec![p("/data"), p("/data2"), p("/srv/x")]
        );
    }
}
