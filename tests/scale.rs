//! The scale rig at CI size: three real `mezz master` processes, a
//! thousand simulated agents (`mezz sim agents`) and load frameworks
//! (`mezz sim load`) that launch ten thousand tasks; the leader is killed
//! with SIGKILL in the middle. Every launched task must reach a terminal
//! state, FINISHED (nothing lost), every agent must register again with the
//! new leader, and each master's peak memory must stay under a generous
//! ceiling. The full-size runs and their figures are in BENCHMARKS.md.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const AGENTS: usize = 1000;
const TASKS: u64 = 10_000;
/// Peak resident memory each master may reach in this run. Generous on
/// purpose (a measurement guard, not a benchmark): it catches a master
/// that keeps every update or offer it ever saw, not a few megabytes.
const MASTER_PEAK_RSS_MB: u64 = 1024;
const T: Duration = Duration::from_secs(60);

struct Rig {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    masters: Vec<Option<Proc>>,
    sims: Vec<Child>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for c in &mut self.sims {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in self.masters.iter_mut().flatten() {
            m.kill9();
        }
        if std::thread::panicking() {
            for name in ["master-1", "master-2", "master-3", "agents", "load"] {
                if let Ok(t) = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                {
                    let tail: Vec<&str> = t.lines().rev().take(30).collect();
                    eprintln!("---- {name} ----");
                    for l in t.lines().filter(|l| l.contains("WARN")).take(15) {
                        eprintln!("{l}");
                    }
                    eprintln!("…");
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

impl Rig {
    fn list(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start() -> Rig {
        let mut rig = Rig {
            dir: cluster_dir(),
            ports: vec![free_port(), free_port(), free_port()],
            masters: vec![None, None, None],
            sims: Vec::new(),
        };
        for i in 0..3 {
            let args = group_master_args(rig.dir.path(), &rig.ports, i);
            rig.masters[i] = Some(spawn_logged(
                rig.dir.path(),
                &format!("master-{}", i + 1),
                &args,
            ));
        }
        rig
    }

    /// `mezz sim ARGS`, stdout to `<name>.out`, stderr to `<name>.log`.
    fn sim(&mut self, name: &str, args: &[String]) {
        let out = std::fs::File::create(self.dir.path().join(format!("{name}.out"))).expect("out");
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log");
        let child = Command::new(MEZZ)
            .arg("sim")
            .args(args)
            .env_remove("MEZZ_MASTER")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .expect("spawn mezz sim");
        self.sims.push(child);
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default()
    }

    /// A value of the `/metrics` of master `i` (light at any size, unlike
    /// `/api/state` with a thousand agents in it).
    fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let (code, body) = http_get(&format!("127.0.0.1:{}", self.ports[i]), "/metrics")?;
        if code != 200 {
            return None;
        }
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }

    fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..3)
            .filter(|&i| self.masters[i].is_some())
            .filter(|&i| self.metric(i, "mezz_master_is_leader") == Some(1.0))
            .collect();
        match leaders.as_slice() {
            [i] => Some(*i),
            _ => None,
        }
    }

    fn connected_agents(&self) -> usize {
        self.leader()
            .and_then(|i| self.metric(i, "mezz_agents{status=\"connected\"}"))
            .unwrap_or(0.0) as usize
    }

    /// The latest `launched N` of the load's progress lines.
    fn launched_so_far(&self) -> u64 {
        self.read("load.log")
            .lines()
            .rev()
            .find_map(|l| {
                let rest = l.split("launched ").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0)
    }
}

/// Peak resident set (VmHWM) of a live process, in MB.
fn peak_rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

#[test]
fn a_thousand_agents_and_ten_thousand_tasks_lose_nothing_across_a_leader_kill() {
    let started = Instant::now();
    let mut rig = Rig::start();
    let mut leader = None;
    wait_for("a leader", T, || {
        leader = rig.leader();
        leader.is_some()
    });
    let leader = leader.expect("leader");
    let list = rig.list();
    let s = |x: &str| x.to_string();
    rig.sim(
        "agents",
        &[
            s("agents"),
            s("--master"),
            list.clone(),
            s("--count"),
            AGENTS.to_string(),
            s("--cpus"),
            s("8"),
            s("--mem"),
            s("16384"),
            s("--ramp"),
            s("5s"),
            s("--report-every"),
            s("1s"),
        ],
    );
    wait_for(
        "every simulated agent registered",
        Duration::from_secs(90),
        || rig.connected_agents() == AGENTS,
    );
    eprintln!("{AGENTS} agents registered after {:?}", started.elapsed());

    rig.sim(
        "load",
        &[
            s("load"),
            s("--master"),
            list.clone(),
            s("--frameworks"),
            s("20"),
            s("--tasks-per-second"),
            s("150"),
            s("--task-time"),
            s("uniform:200ms..2s"),
            s("--cpus"),
            s("0.5"),
            s("--mem"),
            s("64"),
            s("--max-tasks"),
            TASKS.to_string(),
            s("--duration"),
            s("300s"),
            s("--drain"),
            s("120s"),
            s("--report-every"),
            s("1s"),
            s("--json"),
        ],
    );
    wait_for("the load half launched", Duration::from_secs(120), || {
        rig.launched_so_far() >= TASKS * 2 / 5
    });
    let before_kill = rig.masters[leader]
        .as_ref()
        .and_then(|m| peak_rss_mb(m.pid()))
        .expect("the leader's memory");
    let killed_at = Instant::now();
    // Taken out of the rig: a killed master has no memory to read.
    rig.masters[leader].take().expect("leader").kill9();
    eprintln!(
        "killed leader master-{} with {} tasks launched (peak RSS {before_kill} MB)",
        leader + 1,
        rig.launched_so_far()
    );
    let mut new_leader = None;
    wait_for("a new leader", T, || {
        new_leader = rig.leader();
        new_leader.is_some_and(|l| l != leader)
    });
    wait_for("every agent registered with the new leader", T, || {
        rig.connected_agents() == AGENTS
    });
    eprintln!(
        "new leader and every agent back {:?} after the kill",
        killed_at.elapsed()
    );

    let load = rig.sims.last_mut().expect("load");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(st) = load.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "the load did not end");
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = rig.read("load.out");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!(
            "the load's report is not JSON ({e}); it ended with {status}: {out}\n---- load.log ----\n{}",
            rig.read("load.log")
        )
    });
    eprintln!("load report: {report}");
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    };
    assert_eq!(n("launched"), TASKS, "{report}");
    assert_eq!(n("unfinished"), 0, "every launched task ends: {report}");
    assert_eq!(
        n("lost"),
        0,
        "nothing lost across the leader kill: {report}"
    );
    assert_eq!(
        n("finished") + n("failed") + n("killed"),
        TASKS,
        "each task counted once: {report}"
    );
    assert_eq!(n("finished"), TASKS, "every task ran to its end: {report}");
    for k in ["launch_to_running_ms", "offer_latency_ms"] {
        assert!(report[k]["p50"].as_f64().is_some(), "{k} in {report}");
        assert!(report[k]["p99"].as_f64().is_some(), "{k} in {report}");
    }
    assert!(report["tasks_per_second"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(status.success(), "mezz sim load exited {status}: {report}");

    let mut peaks = vec![before_kill];
    for m in rig.masters.iter().flatten() {
        peaks.push(peak_rss_mb(m.pid()).expect("a master's memory"));
    }
    eprintln!(
        "master peak RSS (MB): {peaks:?}; whole run {:?}",
        started.elapsed()
    );
    for p in peaks {
        assert!(
            p < MASTER_PEAK_RSS_MB,
            "a master peaked at {p} MB (ceiling {MASTER_PEAK_RSS_MB} MB)"
        );
    }
}
