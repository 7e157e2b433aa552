//! The wrapper's side of isolation: what runs between fork and exec of the
//! task's command. The wrapper unshares PID, mount and UTS namespaces for
//! its next child ([`unshare_for_task`]); that child joins the task's
//! cgroup, mounts a /proc of its own, sets the hostname and then forks once
//! more: it stays as the namespace's init (reaping orphans, passing the
//! command's wait status to the wrapper on a pipe, and taking every process
//! of the namespace with it when the command ends), while the grandchild
//! drops to the run-as user and execs the command. Only raw, fork-safe
//! calls run after the fork; everything is resolved before it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Everything the pre-exec hook needs, resolved before the fork.
pub struct Plan {
    /// `cgroup.procs` files to write `0` to.
    pub procs_files: Vec<CString>,
    /// Own PID/mount/UTS namespaces (then also the init process).
    pub namespaces: bool,
    /// Hostname inside the UTS namespace.
    pub hostname: Vec<u8>,
    /// uid and gid to run the command as.
    pub user: Option<(libc::uid_t, libc::gid_t)>,
    /// Write end of the pipe init reports the command's wait status on.
    pub status_fd: Option<OwnedFd>,
}

/// Can this process create PID, mount and UTS namespaces? (root, and the
/// kernel has them.)
pub fn available() -> bool {
    nix::unistd::geteuid().is_root()
        && ["pid", "mnt", "uts"]
            .iter()
            .all(|n| std::path::Path::new(&format!("/proc/self/ns/{n}")).exists())
}

/// Called in the wrapper before the spawn: the next child starts in new
/// PID, mount and UTS namespaces; mounts made from here on stay private.
pub fn unshare_for_task() -> io::Result<()> {
    // SAFETY: unshare and mount with valid NUL-terminated arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
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
    for file in &plan.procs_files {
        let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd)?;
        let rc = libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
        if rc != 1 {
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
    if let Some((uid, gid)) = plan.user {
        check(libc::setgroups(1, &gid))?;
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))?;
    }
    Ok(())
}

/// PID 1 of the task's namespace: reap everything, report `main`'s wait
/// status on `status_fd`, exit (which ends every process left in the
/// namespace).
unsafe fn run_init(main: libc::pid_t, status_fd: Option<libc::c_int>) -> ! {
    // Let go of every inherited descriptor (std's exec-error pipe among
    // them) so the wrapper's spawn returns as soon as the command execs.
    let keep = status_fd.unwrap_or(-1);
    for fd in 3..1024 {
        if fd != keep {
            libc::close(fd);
        }
    }
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

/// Reads the wait status init reported, if it did.
pub fn read_status(read_end: OwnedFd) -> Option<libc::c_int> {
    use std::io::Read;
    let mut f = std::fs::File::from(read_end);
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(libc::c_int::from_ne_bytes(bytes))
}
