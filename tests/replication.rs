//! A raft group of three real `mezz master` processes: the leader is killed
//! with SIGKILL while a task runs, a new leader takes over and nothing the
//! cluster knew is lost; then all masters stop and start from their disks.

mod common;

use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

struct Group {
    dir: tempfile::TempDir,
    master_extra: Vec<String>,
    ports: Vec<u16>,
    masters: Vec<Option<Proc>>,
    agent: Option<Proc>,
    agent_port: u16,
}

impl Group {
    fn list(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&self, name: &str, args: &[String]) -> Proc {
        spawn_logged(self.dir.path(), name, args)
    }

    fn new(master_extra: &[&str]) -> Group {
        let mut g = Group {
            dir: cluster_dir(),
            master_extra: master_extra.iter().map(|s| s.to_string()).collect(),
            ports: vec![free_port(), free_port(), free_port()],
            masters: vec![None, None, None],
            agent: None,
            agent_port: free_port(),
        };
        for i in 0..3 {
            g.start_master(i);
        }
        g
    }

    fn start_master(&mut self, i: usize) {
        let mut args = group_master_args(self.dir.path(), &self.ports, i);
        args.extend(self.master_extra.iter().cloned());
        self.masters[i] = Some(self.spawn(&format!("master-{}", i + 1), &args));
    }

    fn start_agent(&mut self) {
        let args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            self.list(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.agent_port),
            "--work-dir".into(),
            self.dir.path().join("agent").display().to_string(),
            "--resources".into(),
            "cpus:2;mem:1024;disk:1000;ports:[31000-31009]".into(),
            "--gpus".into(),
            "none".into(),
            "--isolation".into(),
            "none".into(),
        ];
        self.agent = Some(self.spawn("agent", &args));
    }

    fn mezz(&self, args: &[&str]) -> std::process::Output {
        let list = self.list();
        let mut full: Vec<&str> = vec![args[0], "--master", &list];
        full.extend_from_slice(&args[1..]);
        mezz(&full, T)
    }

    /// (leader index, masters JSON) once exactly one leader is known.
    fn leader(&self) -> Option<usize> {
        let out = self.mezz(&["masters", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let leaders: Vec<u64> = v
            .as_array()?
            .iter()
            .filter(|m| m["role"] == "leader")
            .filter_map(|m| m["id"].as_u64())
            .collect();
        match leaders.as_slice() {
            [id] => Some(*id as usize - 1),
            _ => None,
        }
    }

    fn wait_leader(&self) -> usize {
        let mut found = None;
        wait_for("a leader", T, || {
            found = self.leader();
            found.is_some()
        });
        found.expect("leader")
    }

    fn masters_json(&self) -> Vec<serde_json::Value> {
        let out = self.mezz(&["masters", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn state(&self) -> serde_json::Value {
        let out = self.mezz(&["ps", "--all", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn task_state(&self, id: &str) -> Option<String> {
        self.state()
            .as_array()?
            .iter()
            .find(|t| t["id"] == id)
            .and_then(|t| t["state"].as_str().map(String::from))
    }

    fn agent_connected(&self) -> bool {
        let out = self.mezz(&["agents", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v.as_array()
                    .map(|a| a.iter().any(|x| x["status"] == "connected"))
            })
            .unwrap_or(false)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(a) = self.agent.as_mut() {
            a.kill9();
        }
        for m in self.masters.iter_mut().flatten() {
            m.kill9();
        }
        // Tasks run in their own sessions: end them too.
        kill_tasks_under(self.dir.path());
        if std::thread::panicking() {
            for name in ["master-1", "master-2", "master-3", "agent"] {
                if let Ok(t) = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                {
                    let tail: Vec<&str> = t.lines().rev().take(25).collect();
                    eprintln!("---- {name} ----");
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

#[test]
fn leader_killed_a_new_one_takes_over_and_a_full_restart_loses_nothing() {
    let mut g = Group::new(&[]);
    let first = g.wait_leader();
    g.start_agent();
    wait_for("the agent to register", T, || g.agent_connected());

    let out = g.mezz(&[
        "run", "--detach", "--cpus", "0.1", "--mem", "32", "--", "sleep", "300",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    wait_for("the task to run", T, || {
        g.task_state(&id).as_deref() == Some("RUNNING")
    });

    // SIGKILL the leader: another master leads, the agent finds it and
    // brings its running task along.
    let killed_at = Instant::now();
    g.masters[first].as_mut().expect("leader").kill9();
    let second = g.wait_leader();
    assert_ne!(second, first);
    eprintln!("new leader after {:?}", killed_at.elapsed());
    wait_for("the agent to re-register with the new leader", T, || {
        g.agent_connected()
    });
    wait_for("the running task to be known again", T, || {
        g.task_state(&id).as_deref() == Some("RUNNING")
    });
    let out = g.mezz(&[
        "run",
        "--cpus",
        "0.1",
        "--mem",
        "32",
        "--",
        "echo",
        "after failover",
    ]);
    assert_eq!(
        text(&out.stdout),
        "after failover\n",
        "stderr: {}",
        text(&out.stderr)
    );

    // The old leader comes back as a follower.
    g.start_master(first);
    wait_for("three masters in the group again", T, || {
        let out = g.mezz(&["masters", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v.as_array()
                    .map(|a| a.iter().filter(|m| m["role"] == "follower").count() == 2)
            })
            .unwrap_or(false)
    });

    // Stop every master and start them again: the registry comes back from
    // disk (the agent, and the detached run's framework with its task).
    let agents_before = text(&g.mezz(&["agents", "--json"]).stdout);
    for m in g.masters.iter_mut().flatten() {
        m.kill9();
    }
    for i in 0..3 {
        g.start_master(i);
    }
    g.wait_leader();
    wait_for("the agent to re-register after the full restart", T, || {
        g.agent_connected()
    });
    let agents_after = text(&g.mezz(&["agents", "--json"]).stdout);
    let id_of = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s)
            .ok()
            .map(|v| v[0]["id"].clone())
    };
    assert_eq!(id_of(&agents_before), id_of(&agents_after));
    wait_for("the task to be RUNNING after the full restart", T, || {
        g.task_state(&id).as_deref() == Some("RUNNING")
    });
    let fws = g.mezz(&["frameworks", "--json"]);
    assert!(
        text(&fws.stdout).contains("mezz-run sleep"),
        "{}",
        text(&fws.stdout)
    );
}

#[test]
fn a_follower_that_missed_compacted_entries_catches_up_by_snapshot() {
    let mut g = Group::new(&["--snapshot-every", "4"]);
    let leader = g.wait_leader();
    g.start_agent();
    wait_for("the agent to register", T, || g.agent_connected());
    let follower = (leader + 1) % 3;
    g.masters[follower].as_mut().expect("follower").kill9();

    // Each run registers and removes a framework: two log entries.
    for _ in 0..6 {
        let out = g.mezz(&["run", "--cpus", "0.1", "--mem", "32", "--", "true"]);
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    }
    let follower_log = g.dir.path().join(format!("master-{}.log", follower + 1));
    let log_of = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();

    g.start_master(follower);
    wait_for("the follower to match the leader's log", T, || {
        let ms = g.masters_json();
        let leader_applied = ms
            .iter()
            .find(|m| m["role"] == "leader")
            .and_then(|m| m["applied_index"].as_u64());
        let follower_matched = ms.get(follower).and_then(|m| m["applied_index"].as_u64());
        matches!((leader_applied, follower_matched), (Some(l), Some(f)) if f >= l && l > 0)
    });
    assert!(
        log_of(&follower_log).contains("installing a snapshot from the leader"),
        "the follower caught up without a snapshot:\n{}",
        log_of(&follower_log)
    );
}

/// Counts offers; declines each with a short filter so a healthy leader
/// keeps offering.
struct OfferCounter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl mezz_sdk::Scheduler for OfferCounter {
    fn subscribed(&mut self, _: &mezz_sdk::Driver, _: &mezz_sdk::FrameworkId, _: bool) {}
    fn offers(&mut self, driver: &mezz_sdk::Driver, offers: Vec<mezz_sdk::proto::Offer>) {
        self.0
            .fetch_add(offers.len(), std::sync::atomic::Ordering::SeqCst);
        driver.decline(
            offers.into_iter().map(|o| mezz_sdk::OfferId(o.id)),
            Some(0.2),
        );
    }
    fn status_update(&mut self, _: &mezz_sdk::Driver, _: &mezz_sdk::proto::TaskStatus) {}
}

#[test]
fn a_leader_cut_off_from_the_majority_stops_offering() {
    let mut g = Group::new(&[]);
    let leader = g.wait_leader();
    g.start_agent();
    wait_for("the agent to register", T, || g.agent_connected());

    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let masters: Vec<String> = g.list().split(',').map(String::from).collect();
    let framework = mezz_sdk::proto::FrameworkInfo {
        name: "lease-test".into(),
        failover_timeout_secs: 60.0,
        ..Default::default()
    };
    let counter = OfferCounter(count.clone());
    runtime.spawn(async move {
        let _ = mezz_sdk::run(masters, framework, counter).await;
    });
    let offers = || count.load(std::sync::atomic::Ordering::SeqCst);
    wait_for("offers to flow", T, || offers() >= 2);

    // Freeze both followers: the leader still runs but hears from nobody.
    let followers: Vec<i32> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| g.masters[i].as_ref().expect("follower").pid() as i32)
        .collect();
    for &pid in &followers {
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
        }
    }
    // Its lease runs out within half an election timeout (250 ms); allow
    // for offers already on the way, then no new one may come.
    std::thread::sleep(Duration::from_millis(800));
    let frozen = offers();
    std::thread::sleep(Duration::from_millis(1500));
    let after = offers();
    for &pid in &followers {
        unsafe {
            libc::kill(pid, libc::SIGCONT);
        }
    }
    assert_eq!(
        after, frozen,
        "a leader without a majority kept making offers"
    );
    wait_for("offers to flow again once the majority is back", T, || {
        offers() > after
    });
}

/// (offers outstanding, framework id) of the framework named `name`.
fn framework_offers(g: &Group, name: &str) -> Option<(u64, String)> {
    let out = g.mezz(&["frameworks", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.iter().find(|f| f["name"] == name).map(|f| {
        (
            f["offers_outstanding"].as_u64().unwrap_or(0),
            f["id"].as_str().unwrap_or_default().to_string(),
        )
    })
}

#[test]
fn mezz_run_survives_a_leader_killed_between_offer_and_accept() {
    let mut g = Group::new(&[]);
    let leader = g.wait_leader();
    g.start_agent();
    wait_for("the agent to register", T, || g.agent_connected());

    // Fill the agent so that the run waits without offers.
    let out = g.mezz(&[
        "run", "--detach", "--cpus", "2", "--mem", "1024", "--", "sleep", "300",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let blocker = text(&out.stdout).trim().to_string();

    let list = g.list();
    let args: Vec<String> = [
        "run",
        "--master",
        &list,
        "--timeout",
        "60s",
        "--cpus",
        "1",
        "--mem",
        "64",
        "--name",
        "across",
        "--",
        "echo",
        "made it",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut run = spawn_logged(g.dir.path(), "run", &args);
    wait_for("the run to register", T, || {
        framework_offers(&g, "mezz-run across").is_some()
    });

    // Freeze the run, free the agent: the leader offers it to the frozen
    // run, whose accept can only reach a master once that one is dead.
    // SAFETY: plain kill(2) of processes this test started.
    unsafe {
        libc::kill(run.pid() as i32, libc::SIGSTOP);
    }
    let k = g.mezz(&["kill", &blocker]);
    assert_eq!(k.status.code(), Some(0), "stderr: {}", text(&k.stderr));
    wait_for("an offer to the frozen run", T, || {
        framework_offers(&g, "mezz-run across").is_some_and(|(n, _)| n > 0)
    });
    g.masters[leader].as_mut().expect("leader").kill9();
    let started = Instant::now();
    unsafe {
        libc::kill(run.pid() as i32, libc::SIGCONT);
    }

    // It finishes well within its --timeout (60 s), and the task ran once.
    let status = loop {
        if let Some(s) = run.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(75),
            "mezz run hung across the failover:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = run.log_text();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.lines().any(|l| l == "made it"), "{log}");
    // The run told the followers it lost the leader, so they held its
    // subscription for the election's outcome instead of refusing it
    // round after round (one round may still end before the vote does).
    let rounds = log
        .matches("no master accepted the subscription yet")
        .count();
    assert!(
        rounds <= 1,
        "{rounds} refused rounds during the election:\n{log}"
    );
    let runs = g
        .state()
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["name"] == "across")
                .filter(|t| t["history"].to_string().contains("RUNNING"))
                .count()
        })
        .unwrap_or(0);
    assert!(runs <= 1, "the task ran {runs} times: {}", g.state());
}

/// `mezz job ACTION --master LIST ARGS…`.
fn job_cmd(g: &Group, action: &str, args: &[&str]) -> std::process::Output {
    let list = g.list();
    let mut full = vec!["job", action, "--master", &list];
    full.extend_from_slice(args);
    mezz(&full, T)
}

#[test]
fn a_schedule_fires_each_second_once_across_a_leader_kill() {
    let mut g = Group::new(&[]);
    let first = g.wait_leader();
    g.start_agent();
    wait_for("the agent to register", T, || g.agent_connected());
    let daemon = JobsDaemon::of(&g.list());
    let job = g.dir.path().join("tick.yaml");
    // Every second (six fields, seconds first); runs may overlap.
    std::fs::write(
        &job,
        "kind: command\nname: tick\ncpus: 0.05\nmem: 8\ncommand: 'true'\n\
         schedule: '* * * * * *'\ntimezone: UTC\nconcurrency: allow\nmissed: run_all\n",
    )
    .expect("job file");
    let out = job_cmd(&g, "submit", &[job.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(daemon.pid().is_some(), "no jobs daemon started");
    let runs = |g: &Group| -> Vec<u64> {
        let out = job_cmd(
            g,
            "list",
            &["--json", "--parent", "tick", "--limit", "10000"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut secs: Vec<u64> = v["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["name"].as_str()?.strip_prefix("tick.")?.parse().ok())
            .collect();
        secs.sort();
        secs
    };
    wait_for("three runs", T, || runs(&g).len() >= 3);

    // The leader dies mid-schedule; the jobs daemon follows the new one.
    g.masters[first].as_mut().expect("leader").kill9();
    let second = g.wait_leader();
    assert_ne!(first, second);
    let before = runs(&g).len();
    wait_for("runs under the new leader", T, || {
        runs(&g).len() >= before + 3
    });
    let out = job_cmd(&g, "pause", &["tick"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // Fires told before the pause land; then one run per second from the
    // first to the last, none missing and none twice.
    std::thread::sleep(Duration::from_secs(2));
    let secs = runs(&g);
    let mut unique = secs.clone();
    unique.dedup();
    assert_eq!(unique.len(), secs.len(), "a fire made two runs: {secs:?}");
    let (lo, hi) = (secs[0], secs[secs.len() - 1]);
    assert_eq!(
        (hi - lo + 1) as usize,
        secs.len(),
        "a fire was skipped between {lo} and {hi}: {secs:?}"
    );
    drop(daemon);
}
