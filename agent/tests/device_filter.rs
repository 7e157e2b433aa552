//! The cgroup v2 GPU device program against the real kernel: a fresh child
//! of the cgroup2 mount (the hybrid `/sys/fs/cgroup/unified` on these v1
//! machines, or a cgroup2 mounted on a temporary directory), two fake GPU
//! nodes (c 195:0 and c 195:1), the program allowing minor 0 and denying
//! minor 1, and a process inside the cgroup opening each. Needs root and
//! BPF, so a plain `cargo test` reports it as ignored (see
//! `tests/common/needs.rs`).

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mezz_agent::isolation::device_filter;
use mezz_agent::isolation::NVIDIA_MAJOR;

/// Set in the re-executed test binary: the node to open; its exit status
/// is the errno of the open (0 when it succeeded).
const OPEN_ENV: &str = "MEZZ_DEVICE_FILTER_OPEN";

/// What this machine lacks for the test: a failure naming it.
fn unavailable(why: &str) -> ! {
    panic!("the device filter test needs root, cgroup2 and BPF: {why}");
}

/// A cgroup2 mount point: the one mounted already, else one mounted here
/// (unmounted on drop).
struct Cgroup2Mount {
    path: PathBuf,
    /// Unmounted before its directory is removed (tuple fields drop in
    /// order).
    _ours: Option<(Unmount, tempfile::TempDir)>,
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn cgroup2_mount() -> Result<Cgroup2Mount, String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
    if let Some(path) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    }) {
        return Ok(Cgroup2Mount { path, _ours: None });
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let status = Command::new("mount")
        .args(["-t", "cgroup2", "cgroup2"])
        .arg(dir.path())
        .status()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !status.success() {
        return Err(format!(
            "no cgroup2 mounted and `mount -t cgroup2` failed ({status})"
        ));
    }
    let path = dir.path().to_path_buf();
    Ok(Cgroup2Mount {
        _ours: Some((Unmount(path.clone()), dir)),
        path,
    })
}

/// A child cgroup, removed on drop (after its processes have exited).
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            if let Ok(pids) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
                for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    // SAFETY: plain kill(2) of a pid in our test cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn mknod_char(path: &Path, major: u32, minor: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a temp path");
    // SAFETY: `c` is a valid path; mknod(2) has no other preconditions.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens `node` from a new process that joins `cgroup` before it execs;
/// the errno of the open (0 = opened).
fn open_in_cgroup(cgroup: &Path, node: &Path) -> i32 {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .expect("open cgroup.procs of the test cgroup");
    let procs_fd = procs.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([
        "--ignored",
        "--exact",
        "child_open",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(OPEN_ENV, node)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: the hook only calls write(2), which is async-signal-safe,
    // on an fd opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().expect("run the open helper in the cgroup");
    drop(procs);
    status
        .code()
        .unwrap_or_else(|| panic!("open helper died: {status}"))
}

/// Not a test of its own: the body of the process `open_in_cgroup` starts.
#[test]
#[ignore = "the body of a child process that the device filter test starts"]
fn child_open() {
    let Some(node) = std::env::var_os(OPEN_ENV) else {
        panic!("child_open is not a test of its own; leave it out with --skip child_");
    };
    let code = match std::fs::File::open(&node) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    };
    std::process::exit(code);
}

#[test]
#[ignore = "needs root, cgroup2 and BPF"]
fn denied_gpu_minor_is_eperm_allowed_one_reaches_the_driver() {
    if !nix::unistd::geteuid().is_root() {
        unavailable("not running as root");
    }
    let mount = match cgroup2_mount() {
        Ok(m) => m,
        Err(why) => unavailable(&why),
    };
    let dir = mount
        .path
        .join(format!("mezz-device-filter-test-{}", std::process::id()));
    let _ = std::fs::remove_dir(&dir);
    if let Err(e) = std::fs::create_dir(&dir) {
        unavailable(&format!("cannot create {}: {e}", dir.display()));
    }
    let cgroup = TestCgroup(dir);

    let nodes = tempfile::tempdir().expect("temp dir for the device nodes");
    let allowed = nodes.path().join("nvidia0");
    let denied = nodes.path().join("nvidia1");
    mknod_char(&allowed, NVIDIA_MAJOR, 0).expect("mknod c 195:0");
    mknod_char(&denied, NVIDIA_MAJOR, 1).expect("mknod c 195:1");

    // Before the program: no driver behind major 195 on this machine.
    let before = open_in_cgroup(&cgroup.0, &denied);
    assert_eq!(
        before,
        libc::ENXIO,
        "opening c 195:1 before the program: errno {before}, want ENXIO (no driver); is {} mounted nodev?",
        nodes.path().display()
    );

    if let Err(e) = device_filter::attach(&cgroup.0, &[1]) {
        unavailable(&e.to_string());
    }

    let got_allowed = open_in_cgroup(&cgroup.0, &allowed);
    let got_denied = open_in_cgroup(&cgroup.0, &denied);
    assert_eq!(
        got_allowed,
        libc::ENXIO,
        "c 195:0 (given): errno {got_allowed}, want ENXIO (allowed, no driver)"
    );
    assert_eq!(
        got_denied,
        libc::EPERM,
        "c 195:1 (not given): errno {got_denied}, want EPERM (denied by the device program)"
    );
    // Other devices stay open to the task.
    assert_eq!(open_in_cgroup(&cgroup.0, Path::new("/dev/null")), 0);
}
