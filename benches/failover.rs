//! Master failover time: from `kill -9` of the leading master of a group of
//! three to the first offer a framework receives from the new leader. Real
//! `mezz master` and `mezz agent` processes on loopback; the framework is
//! built on the SDK in this process and declines every offer with a long
//! filter, so each leader makes it exactly one offer.
//!
//! Run: `cargo bench --bench failover` (optionally `-- TRIALS`, default 20).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mezz_sdk::{proto, Driver, FrameworkId, OfferId, Scheduler};

const MEZZ: &str = env!("CARGO_BIN_EXE_mezz");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Offers(Arc<Mutex<Vec<Instant>>>);

impl Scheduler for Offers {
    fn subscribed(&mut self, _: &Driver, _: &FrameworkId, _: bool) {}
    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(Instant::now());
        }
        driver.decline(offers.into_iter().map(|o| OfferId(o.id)), Some(3600.0));
    }
    fn status_update(&mut self, _: &Driver, _: &proto::TaskStatus) {}
}

fn spawn(args: &[String]) -> Child {
    Command::new(MEZZ)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mezz")
}

fn leader(list: &str) -> Option<usize> {
    let out = Command::new(MEZZ)
        .args(["masters", "--json", "--master", list])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let ids: Vec<u64> = v
        .as_array()?
        .iter()
        .filter(|m| m["role"] == "leader")
        .filter_map(|m| m["id"].as_u64())
        .collect();
    let followers = v
        .as_array()?
        .iter()
        .filter(|m| m["role"] == "follower")
        .count();
    (ids.len() == 1 && followers == 2).then(|| ids[0] as usize - 1)
}

fn wait<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let trials: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let list = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let master_args = |i: usize| -> Vec<String> {
        vec![
            "master".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", ports[i]),
            "--data-dir".into(),
            dir.path().join(format!("m{i}")).display().to_string(),
            "--id".into(),
            (i + 1).to_string(),
            "--peers".into(),
            peers.clone(),
        ]
    };
    let mut masters: Vec<Child> = (0..3).map(|i| spawn(&master_args(i))).collect();
    wait("a leader", Duration::from_secs(20), || leader(&list));
    let mut agent = spawn(&[
        "agent".into(),
        "--master".into(),
        list.clone(),
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--work-dir".into(),
        dir.path().join("agent").display().to_string(),
        "--resources".into(),
        "cpus:2;mem:1024".into(),
        "--gpus".into(),
        "none".into(),
        "--isolation".into(),
        "none".into(),
    ]);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let masters_list: Vec<String> = list.split(',').map(String::from).collect();
    let framework = proto::FrameworkInfo {
        name: "failover-bench".into(),
        failover_timeout_secs: 600.0,
        ..Default::default()
    };
    let sched = Offers(seen.clone());
    runtime.spawn(async move {
        let _ = mezz_sdk::run(masters_list, framework, sched).await;
    });
    let count = || seen.lock().map(|v| v.len()).unwrap_or(0);
    wait("the first offer", Duration::from_secs(20), || {
        (count() > 0).then_some(())
    });

    let mut ms = Vec::new();
    for trial in 0..trials {
        let old = wait("a stable group", Duration::from_secs(20), || leader(&list));
        let before = count();
        let killed = Instant::now();
        let _ = masters[old].kill();
        let _ = masters[old].wait();
        wait(
            "an offer from the new leader",
            Duration::from_secs(20),
            || (count() > before).then_some(()),
        );
        let at = seen.lock().map(|v| v[before]).expect("offer time");
        let t = at.duration_since(killed).as_secs_f64() * 1000.0;
        eprintln!("trial {trial}: {t:.0} ms");
        ms.push(t);
        masters[old] = spawn(&master_args(old));
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "failover, kill -9 of the leader to the first offer from the new leader, {trials} trials (3 masters, 1 agent):"
    );
    println!(
        "  median {:.0} ms   worst {:.0} ms   best {:.0} ms",
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms[0]
    );
    let _ = agent.kill();
    let _ = agent.wait();
    for m in &mut masters {
        let _ = m.kill();
        let _ = m.wait();
    }
}
