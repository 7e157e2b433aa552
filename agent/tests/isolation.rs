//! Isolation conformance: the selected cgroup isolator (v1 on these
//! machines, v2 where the unified hierarchy is mounted) with the real task
//! wrapper, the way the agent drives them. Needs root and cgroups, so a
//! plain `cargo test` reports these tests as ignored (see
//! `tests/common/needs.rs`).

#[path = "../../tests/common/needs.rs"]
mod needs;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mezz_agent::executor;
use mezz_agent::gpu::{self, fake::FakeGpus, GpuBackend};
use mezz_agent::isolation::{self, IsolationMode, Limits, Selected};
use mezz_agent::launch_spec::{read_exit_record, ExitRecord, LaunchSpec};

const WRAPPER: &str = env!("CARGO_BIN_EXE_task-wrapper");
const CGROUP_ROOT: &str = "mezzanine-test";

/// The isolator, with namespaces.
fn isolation() -> Selected {
    needs::need_root_cgroups();
    let sel = isolation::select(IsolationMode::Cgroups, CGROUP_ROOT, None)
        .unwrap_or_else(|e| panic!("the isolation tests need a usable cgroup isolator: {e}"));
    assert!(
        sel.namespaces,
        "the isolation tests need PID, mount and UTS namespaces"
    );
    sel
}

/// One task run through the wrapper; cleans its cgroup up on drop.
struct Run {
    sel: Selected,
    _dir: tempfile::TempDir,
    sandbox: PathBuf,
    cgroup: String,
    wrapper: std::process::Child,
    /// Host pid of the command's process group (init with namespaces).
    pgid: i32,
    started: Instant,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.sel.isolator.cleanup(&self.cgroup);
        let _ = self.wrapper.kill();
        let _ = self.wrapper.wait();
    }
}

fn start(
    sel: &Selected,
    script: &str,
    limits: &Limits,
    env: &[(String, String)],
    user: Option<&str>,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("sb");
    // The agent gives the sandbox to the task's user before the launch.
    let owner = user.map(|u| {
        let a = mezz_agent::task_user::lookup(u)
            .unwrap()
            .expect("user exists");
        (a.uid, a.gid)
    });
    executor::prepare_sandbox(&sandbox, owner).unwrap();
    let name = format!("t{}", uuid_like());
    let prepared = sel.isolator.prepare(&name, limits).expect("prepare cgroup");
    let meta = sandbox.join(".mezz");
    let spec = LaunchSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: [(
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        )]
        .into_iter()
        .chain(env.iter().cloned())
        .collect(),
        cwd: sandbox.clone(),
        stdout: sandbox.join("stdout"),
        stderr: sandbox.join("stderr"),
        exit_status: meta.join("exit_status.json"),
        child_pid: meta.join("child.pid"),
        cgroup_procs: prepared.procs_files.clone(),
        namespaces: sel.namespaces,
        hostname: Some(name.clone()),
        user: user.map(str::to_string),
        hide: Vec::new(),
        expose: Vec::new(),
        read_only: Vec::new(),
    };
    let spec_path = executor::write_spec(&sandbox, &spec).unwrap();
    let started = Instant::now();
    let mut wrapper = Command::new(WRAPPER)
        .arg("__launch")
        .arg(&spec_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(wrapper.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pgid = line
        .trim()
        .strip_prefix("started ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "wrapper said '{line}'; stderr: {}",
                read(&sandbox, "stderr")
            )
        });
    Run {
        sel: sel.clone(),
        _dir: dir,
        sandbox,
        cgroup: prepared.cgroup,
        wrapper,
        pgid,
        started,
    }
}

impl Run {
    /// Waits for the wrapper (with a deadline) and returns the exit record
    /// and the wall time.
    fn wait(&mut self, limit: Duration) -> (ExitRecord, Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.wrapper.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "task did not end within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let wall = self.started.elapsed();
        let rec = read_exit_record(&self.sandbox.join(".mezz/exit_status.json"))
            .unwrap_or_else(|| panic!("no exit record; stderr: {}", read(&self.sandbox, "stderr")));
        (rec, wall)
    }
    fn stdout(&self) -> String {
        read(&self.sandbox, "stdout")
    }
}

fn read(sandbox: &Path, f: &str) -> String {
    std::fs::read_to_string(sandbox.join(f)).unwrap_or_default()
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_ns()
    )
}

fn rand_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn limits(cpus: f64, mem_mb: f64) -> Limits {
    Limits {
        cpus,
        mem_mb,
        pids_max: 256,
        denied_gpu_minors: vec![],
    }
}

const OPEN_NODES: &str = r#"python3 -c '
import os, errno, sys
for p in sys.argv[1:]:
    try:
        os.close(os.open(p, os.O_RDWR)); print(p, "OK")
    except OSError as e:
        print(p, errno.errorcode[e.errno])
' "$@""#;

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn devices_cgroup_confines_gpus() {
    let sel = isolation();
    let work = tempfile::tempdir().unwrap();
    let fake = FakeGpus::create(work.path(), 2).expect("mknod fake GPUs");
    let nodes: Vec<String> = fake
        .gpus()
        .iter()
        .map(|g| g.device.display().to_string())
        .collect();
    let script = format!("{OPEN_NODES} x {} {}", nodes[0], nodes[1]);

    // Given fake-gpu-0: its own node has no driver (ENXIO), the other is refused.
    let a = gpu::assign(fake.gpus(), &["fake-gpu-0".into()]).unwrap();
    let mut l = limits(0.0, 0.0);
    l.denied_gpu_minors = a.denied_minors.clone();
    let env: Vec<(String, String)> = a.env.clone().into_iter().collect();
    let mut run = start(&sel, &script, &l, &env, None);
    let (rec, _) = run.wait(Duration::from_secs(20));
    assert_eq!(rec.exit_code, Some(0));
    let out = run.stdout();
    assert!(out.contains(&format!("{} ENXIO", nodes[0])), "{out}");
    assert!(out.contains(&format!("{} EPERM", nodes[1])), "{out}");
    assert_eq!(a.env["CUDA_VISIBLE_DEVICES"], "0");
    assert_eq!(a.env["MEZZ_GPU_DEVICES"], nodes[0]);

    // No GPUs: both refused.
    let none = gpu::assign(fake.gpus(), &[]).unwrap();
    let mut l = limits(0.0, 0.0);
    l.denied_gpu_minors = none.denied_minors;
    let mut run = start(&sel, &script, &l, &[], None);
    run.wait(Duration::from_secs(20));
    let out = run.stdout();
    assert!(out.contains(&format!("{} EPERM", nodes[0])), "{out}");
    assert!(out.contains(&format!("{} EPERM", nodes[1])), "{out}");
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn memory_limit_ends_the_task_with_oom() {
    let sel = isolation();
    let mut run = start(
        &sel,
        "python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))'",
        &limits(0.0, 64.0),
        &[],
        None,
    );
    let (rec, _) = run.wait(Duration::from_secs(30));
    assert_ne!(
        rec.exit_code,
        Some(0),
        "allocation past the limit succeeded"
    );
    assert!(
        sel.isolator.oom_killed(&run.cgroup),
        "no OOM kill recorded: {rec:?}"
    );
    let o = mezz_agent::lifecycle::with_oom(
        mezz_agent::lifecycle::outcome(Some(rec), false, mezz_agent::lifecycle::Observed::Watched),
        true,
        false,
    );
    assert_eq!(o.state, mezz_proto::v1::TaskState::Failed);
    assert_eq!(o.reason, mezz_proto::v1::TaskReason::MemoryLimit);
    assert!(o.message.contains("memory limit exceeded"));
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn half_a_cpu_is_about_half_a_core() {
    let sel = isolation();
    let mut run = start(
        &sel,
        "python3 -c '
import time
t = time.time()
while time.time() - t < 2.0: pass'",
        &limits(0.5, 0.0),
        &[],
        None,
    );
    // Sample the cgroup's CPU accounting while the task runs, over ~1.5 s.
    std::thread::sleep(Duration::from_millis(300));
    let (u0, t0) = (
        sel.isolator.cpu_usage_ns(&run.cgroup).expect("cpuacct"),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (u1, t1) = (
        sel.isolator.cpu_usage_ns(&run.cgroup).expect("cpuacct"),
        Instant::now(),
    );
    let share = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    run.wait(Duration::from_secs(20));
    // The cap is what this proves: a spinning task without it takes a whole
    // core. Less than half is no failure of the cap, only a busy machine
    // (other processes get their turn too), so the floor only shows the
    // task ran at all.
    assert!(
        share > 0.02 && share <= 0.65,
        "a cpus:0.5 task used {share:.2} of a core"
    );
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn pid_namespace_shows_only_the_task_and_kill_leaves_nothing() {
    let sel = isolation();
    let mut run = start(
        &sel,
        "sleep 30 & echo self=$$; echo host=$(hostname); ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; wait",
        &limits(0.0, 0.0),
        &[],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.stdout().lines().count() < 3 {
        assert!(Instant::now() < deadline, "no output: {}", run.stdout());
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = run.stdout();
    assert!(
        out.contains("self=2\n"),
        "the command is not pid 2 under its init: {out}"
    );
    assert!(
        out.contains(&format!("host={}", run.cgroup.rsplit('/').next().unwrap())),
        "{out}"
    );
    let pids: Vec<u32> = out
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        pids.iter().all(|p| *p < 20) && pids.len() <= 8,
        "the task sees other processes: {pids:?}"
    );

    let host_pids = sel.isolator.pids(&run.cgroup);
    assert!(
        host_pids.len() >= 3,
        "init, sh and sleep should be in the cgroup: {host_pids:?}"
    );
    executor::signal_group(run.pgid, nix::sys::signal::Signal::SIGTERM);
    let (rec, _) = run.wait(Duration::from_secs(20));
    assert_eq!(rec.signal, Some(15), "{rec:?}");
    sel.isolator.cleanup(&run.cgroup).expect("cleanup");
    for pid in host_pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || proc_is_zombie(pid),
            "pid {pid} of the task survived"
        );
    }
    assert!(sel.isolator.pids(&run.cgroup).is_empty());
    assert!(
        !Path::new("/sys/fs/cgroup/memory")
            .join(&run.cgroup)
            .exists(),
        "cgroup not removed"
    );
    sel.isolator
        .cleanup(&run.cgroup)
        .expect("cleanup is idempotent");
}

fn proc_is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn exit_codes_and_run_as_user() {
    let sel = isolation();
    let mut run = start(&sel, "exit 7", &limits(0.0, 0.0), &[], None);
    assert_eq!(run.wait(Duration::from_secs(10)).0.exit_code, Some(7));
    let mut run = start(
        &sel,
        "id -u; touch tmp/x && echo wrote",
        &limits(0.0, 0.0),
        &[],
        Some("nobody"),
    );
    let (rec, _) = run.wait(Duration::from_secs(10));
    assert_eq!(rec.exit_code, Some(0), "{}", read(&run.sandbox, "stderr"));
    let uid = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(run.stdout(), format!("{uid}\nwrote\n"));
}

/// A `sleep` moved into the cgroup whose `cgroup.procs` files are `procs`.
fn sleeper_in(procs: &[PathBuf]) -> std::process::Child {
    let child = Command::new("sleep").arg("600").spawn().unwrap();
    for f in procs {
        std::fs::write(f, child.id().to_string()).unwrap();
    }
    child
}

/// Waits (with a deadline) for `child` to end; how it ended.
fn ended(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "pid {} still runs", child.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cgroup_exists(procs: &[PathBuf]) -> bool {
    procs.iter().any(|f| f.parent().is_some_and(Path::exists))
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn recover_removes_only_this_agents_unknown_cgroups() {
    use std::os::unix::process::ExitStatusExt;
    let sel = isolation();
    let owner = isolation::owner_tag(&uuid_like());
    let other = isolation::owner_tag(&format!("b{}", uuid_like()));
    assert_ne!(owner, other);
    let lim = limits(0.1, 64.0);
    let kept = sel
        .isolator
        .prepare(&isolation::run_cgroup_name("kept", &owner), &lim)
        .unwrap();
    let orphan = sel
        .isolator
        .prepare(&isolation::run_cgroup_name("lost", &owner), &lim)
        .unwrap();
    let foreign = sel
        .isolator
        .prepare(&isolation::run_cgroup_name("lost", &other), &lim)
        .unwrap();
    let mut in_orphan = sleeper_in(&orphan.procs_files);
    let mut in_foreign = sleeper_in(&foreign.procs_files);
    assert_eq!(sel.isolator.pids(&orphan.cgroup), vec![in_orphan.id()]);

    let known = [kept.cgroup.clone()].into_iter().collect();
    let removed = sel.isolator.recover(&owner, &known).unwrap();

    assert_eq!(removed, vec![orphan.cgroup.clone()]);
    assert_eq!(ended(&mut in_orphan).signal(), Some(libc::SIGKILL));
    assert!(
        !cgroup_exists(&orphan.procs_files),
        "the orphan is still there"
    );
    // What is on record, and another agent's run, stay as they were.
    assert!(cgroup_exists(&kept.procs_files));
    assert!(cgroup_exists(&foreign.procs_files));
    assert_eq!(sel.isolator.pids(&foreign.cgroup), vec![in_foreign.id()]);
    // Nothing left to remove the second time.
    assert!(sel.isolator.recover(&owner, &known).unwrap().is_empty());

    for c in [&kept.cgroup, &foreign.cgroup] {
        sel.isolator.cleanup(c).unwrap();
    }
    assert_eq!(ended(&mut in_foreign).signal(), Some(libc::SIGKILL));
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn an_agent_removes_its_orphaned_cgroups_when_it_starts() {
    use std::os::unix::process::ExitStatusExt;
    let sel = isolation();
    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    // The agent's id, as an earlier run of it stored it.
    let agent_id = format!("agent-{}", uuid_like());
    mezz_agent::checkpoint::Checkpoint::open(&meta.join("checkpoint"))
        .unwrap()
        .set_agent_id(&agent_id)
        .unwrap();
    // That run crashed after making a cgroup and starting the task in it,
    // before checkpointing either; a neighbour agent's run is beside it.
    let lim = limits(0.0, 0.0);
    let orphan = sel
        .isolator
        .prepare(
            &isolation::run_cgroup_name("lost", &isolation::owner_tag(&agent_id)),
            &lim,
        )
        .unwrap();
    let neighbour = sel
        .isolator
        .prepare(
            &isolation::run_cgroup_name("lost", &isolation::owner_tag("neighbour-1")),
            &lim,
        )
        .unwrap();
    let mut in_orphan = sleeper_in(&orphan.procs_files);
    let mut in_neighbour = sleeper_in(&neighbour.procs_files);

    let mut config = mezz_agent::Config::new(
        // Nothing listens there: recovery does not wait for a master.
        vec!["127.0.0.1:1".into()],
        "127.0.0.1:0".parse().unwrap(),
        work.path().to_path_buf(),
        PathBuf::from(WRAPPER),
    );
    config.cgroup_root = CGROUP_ROOT.into();
    config.resources = Some(mezz_proto::Resources::parse("cpus:1;mem:256").unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = rt.spawn(mezz_agent::run(config, async {
        let _ = stopped.await;
    }));

    assert_eq!(ended(&mut in_orphan).signal(), Some(libc::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(30);
    while cgroup_exists(&orphan.procs_files) {
        assert!(
            Instant::now() < deadline,
            "the orphaned cgroup is still there"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = stop.send(());
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), agent).await })
        .expect("the agent stops")
        .expect("the agent task")
        .expect("the agent ran");
    assert!(cgroup_exists(&neighbour.procs_files));
    assert_eq!(in_neighbour.try_wait().unwrap(), None);
    sel.isolator.cleanup(&neighbour.cgroup).unwrap();
    assert_eq!(ended(&mut in_neighbour).signal(), Some(libc::SIGKILL));
}
