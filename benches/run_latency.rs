//! End-to-end latency of `mezz run -- true` on a warm local cluster: from
//! starting the `mezz run` process to its exit, which covers subscribing a
//! framework (a replicated write), the offer, the launch on the agent, the
//! task's run, the status updates and acknowledgements, reading the
//! output, and the framework's teardown.
//!
//! Run: `cargo bench --bench run_latency` (optionally `-- RUNS`, default 200).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MEZZ: &str = env!("CARGO_BIN_EXE_mezz");

fn free_ports(n: u16) -> u16 {
    // Find n consecutive free ports for `mezz dev`.
    'outer: for _ in 0..100 {
        let base = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        if base == 0 || base > 65000 {
            continue;
        }
        for p in base..base + n {
            if TcpListener::bind(("127.0.0.1", p)).is_err() {
                continue 'outer;
            }
        }
        return base;
    }
    panic!("no free ports");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let port = free_ports(2);
    let master = format!("127.0.0.1:{port}");
    let mut dev = Command::new(MEZZ)
        .args([
            "dev",
            "--port",
            &port.to_string(),
            "--resources",
            "cpus:4;mem:4096;disk:1000;ports:[31000-31099]",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mezz dev");
    // `mezz dev` prints its banner once every agent has registered.
    let mut banner = String::new();
    let mut out = std::io::BufReader::new(dev.stdout.take().expect("stdout"));
    std::io::BufRead::read_line(&mut out, &mut banner).expect("banner");
    assert!(
        banner.contains("is up"),
        "mezz dev did not come up: {banner}"
    );

    let run_once = || {
        let start = Instant::now();
        let status = Command::new(MEZZ)
            .args([
                "run", "--master", &master, "--cpus", "0.1", "--mem", "32", "--", "true",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("mezz run");
        assert!(status.success(), "mezz run -- true failed: {status}");
        start.elapsed()
    };
    for _ in 0..10 {
        run_once();
    }
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| run_once().as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!("mezz run -- true, {runs} runs on a warm `mezz dev` (1 master, 1 agent):");
    println!(
        "  median {:.1} ms   p90 {:.1} ms   p99 {:.1} ms   min {:.1} ms   max {:.1} ms   mean {:.1} ms",
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms[0],
        ms[ms.len() - 1],
        mean
    );
    unsafe {
        libc::kill(dev.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while dev.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = dev.kill();
}
