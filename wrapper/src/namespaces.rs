//! The wrapper's side of isolation: what runs between fork and exec of the
//! task's command. The wrapper unshares PID, mount and UTS namespaces for
//! its next child ([`unshare_for_task`]) and builds the task's view of the
//! filesystem (`mounts.rs`); that child joins the task's cgroup, mounts a
//! /proc of its own, sets the hostname and then forks once more: it stays
//! as the namespace's init (reaping orphans, passing the command's wait
//! status to the wrapper on a pipe, and taking every process of the
//! namespace with it when the command ends), while the grandchild gives up
//! its privileges (bounding set, inheritable and ambient capabilities, the
//! run-as user, `no_new_privs`) and execs the command. Only raw, fork-safe
//! calls run after the fork; everything is resolved before it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Everything the pre-exec hook needs, resolved before the fork.
pub struct Plan {
    /// The task's `cgroup.procs` files, opened for writing before the
    /// namespaces were made (the task's own view of them is read-only).
    pub procs: Vec<OwnedFd>,
    /// Own PID/mount/UTS namespaces (then also the init process).
    pub namespaces: bool,
    /// Hostname inside the UTS namespace.
    pub hostname: Vec<u8>,
    /// uid and gid to run the command as.
    pub user: Option<(libc::uid_t, libc::gid_t)>,
    /// Capabilities to drop from the bounding set (empty when the wrapper
    /// is not root and has none to drop).
    pub drop_caps: Vec<u32>,
    /// Write end of the pipe init reports the command's wait status on.
    pub status_fd: Option<OwnedFd>,
}

/// Are PID, mount and UTS namespaces there at all? (root, and the kernel
/// has them.) [`probe`] tells whether they can really be used.
pub fn available() -> bool {
    nix::unistd::geteuid().is_root()
        && ["pid", "mnt", "uts"]
            .iter()
            .all(|n| std::path::Path::new(&format!("/proc/self/ns/{n}")).exists())
}

/// Tries, in a forked child that exits right after (`program` is never
/// executed), everything the wrapper does to build a task's namespaces:
/// unshare PID, mount and UTS namespaces, make mounts private, hide `dir`
/// under a tmpfs and make that read-only. A container without the
/// privileges for it (a seccomp filter, a missing CAP_SYS_ADMIN) fails
/// here, at the agent's start, instead of at every launch.
pub fn probe(program: &Path, dir: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let target = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", dir.display()))?;
    let mut cmd = std::process::Command::new(program);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the hook makes only raw system calls on data prepared above
    // (fork-safe in a multi-threaded parent).
    unsafe {
        cmd.pre_exec(move || {
            check(libc::unshare(
                libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS,
            ))?;
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=4k".as_ptr().cast(),
            ))?;
            check(libc::mount(
                std::ptr::null(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                std::ptr::null(),
            ))?;
            // Everything worked; there is nothing to run.
            libc::_exit(0)
        });
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    match child.wait() {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => Err(format!("the probe ended with {st}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Called in the wrapper before the spawn: the next child starts in new
/// PID, mount and UTS namespaces; the wrapper itself is in the new mount
/// namespace, where `mounts::enter` then builds the task's view.
pub fn unshare_for_task() -> io::Result<()> {
    use nix::sched::CloneFlags;
    nix::sched::unshare(
        CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(io::Error::from)
}

/// A pipe for the command's wait status: (read end, write end), both
/// close-on-exec so the command never holds them.
pub fn status_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The pre-exec hook (runs in the forked child, before exec).
///
/// # Safety
/// Must only be called between fork and exec of a single-threaded parent.
pub unsafe fn in_child(plan: &Plan) -> io::Result<()> {
    for fd in &plan.procs {
        if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    if plan.namespaces {
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))?;
        check(libc::sethostname(
            plan.hostname.as_ptr().cast(),
            plan.hostname.len(),
        ))?;
        let pid = libc::fork();
        check(pid)?;
        if pid > 0 {
            run_init(pid, plan.status_fd.as_ref().map(|f| f.as_raw_fd()));
        }
    }
    drop_privileges(plan)
}

/// `capget`/`capset`'s header (`_LINUX_CAPABILITY_VERSION_3`).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// One half of `capget`/`capset`'s data (capabilities 0-31, then 32-63).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The grandchild's last steps before exec: the bounding set shrinks to
/// what the task may have (needs CAP_SETPCAP, so before the user switch),
/// the inheritable and ambient sets empty (nothing can come back through a
/// file's capabilities), then the user switch (which clears the permitted
/// and effective sets of a non-root user) and `no_new_privs` (setuid and
/// file capabilities stop granting anything).
///
/// # Safety
/// Between fork and exec only; raw system calls on plain data.
unsafe fn drop_privileges(plan: &Plan) -> io::Result<()> {
    for cap in &plan.drop_caps {
        if libc::prctl(libc::PR_CAPBSET_DROP, *cap as libc::c_ulong, 0, 0, 0) != 0
            && *libc::__errno_location() != libc::EINVAL
        {
            // EINVAL: a capability this kernel does not have.
            return Err(io::Error::last_os_error());
        }
    }
    if !plan.drop_caps.is_empty() {
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        check(libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) as libc::c_int)?;
        for d in &mut data {
            d.inheritable = 0;
        }
        check(libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int)?;
    }
    // EINVAL: a kernel before ambient capabilities (4.3), which has none.
    if libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
        0,
        0,
    ) != 0
        && *libc::__errno_location() != libc::EINVAL
    {
        return Err(io::Error::last_os_error());
    }
    if let Some((uid, gid)) = plan.user {
        check(libc::setgroups(1, &gid))?;
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))?;
    }
    check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
}

/// PID 1 of the task's namespace: reap everything, report `main`'s wait
/// status on `status_fd`, exit (which ends every process left in the
/// namespace).
unsafe fn run_init(main: libc::pid_t, status_fd: Option<libc::c_int>) -> ! {
    // Let go of every inherited descriptor (std's exec-error pipe among
    // them) so the wrapper's spawn returns as soon as the command execs.
    let keep = status_fd.unwrap_or(-1);
    close_from(3, keep);
    loop {
        let mut status: libc::c_int = 0;
        let pid = libc::waitpid(-1, &mut status, 0);
        if pid == main {
            if keep >= 0 {
                let bytes = status.to_ne_bytes();
                libc::write(keep, bytes.as_ptr().cast(), bytes.len());
            }
            libc::_exit(0);
        }
        if pid < 0 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(0);
        }
    }
}

/// Closes every descriptor from `first` on except `keep`: two
/// `close_range` calls (Linux 5.9), or one `close` per descriptor below
/// 1024 on an older kernel. A thousand closes were a measurable part of
/// every launch.
///
/// # Safety
/// Raw system calls only; fork-safe.
unsafe fn close_from(first: libc::c_int, keep: libc::c_int) {
    let ranges: [(libc::c_int, libc::c_int); 2] = if keep >= first {
        [(first, keep - 1), (keep + 1, libc::c_int::MAX)]
    } else {
        [(first, libc::c_int::MAX), (0, -1)]
    };
    for (lo, hi) in ranges {
        if lo > hi {
            continue;
        }
        if libc::syscall(
            libc::SYS_close_range,
            lo as libc::c_uint,
            hi as libc::c_uint,
            0,
        ) != 0
        {
            for fd in lo..hi.min(1023) + 1 {
                libc::close(fd);
            }
        }
    }
}

/// Reads the wait status init reported, if it did.
pub fn read_status(read_end: OwnedFd) -> Option<libc::c_int> {
    use std::io::Read;
    let mut f = std::fs::File::from(read_end);
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(libc::c_int::from_ne_bytes(bytes))
}
