//! `mezz dev`: the whole local cluster in one foreground process.

mod common;

use std::io::BufRead;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

/// Two consecutive free loopback ports (master, then agent).
fn two_ports() -> u16 {
    for _ in 0..100 {
        let p = free_port();
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

#[test]
fn dev_cluster_runs_a_task_and_stops_cleanly_on_sigterm() {
    let port = two_ports();
    let child = Command::new(MEZZ)
        .args([
            "dev",
            "--port",
            &port.to_string(),
            "--resources",
            "cpus:2;mem:1024;disk:1000;ports:[31000-31009]",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mezz dev");
    let mut dev = Proc {
        name: "dev".into(),
        child,
        log: "/dev/null".into(),
    };
    let mut banner = Vec::new();
    let mut lines = std::io::BufReader::new(dev.child.stdout.take().expect("stdout")).lines();
    for _ in 0..6 {
        banner.push(lines.next().expect("banner line").expect("utf-8"));
    }
    let banner = banner.join("\n");
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}/")),
        "{banner}"
    );
    let data_dir = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("data dir"))
        .map(|rest| {
            rest.trim()
                .trim_end_matches(" (removed on exit)")
                .to_string()
        })
        .expect("data dir line");

    let master = format!("127.0.0.1:{port}");
    let out = mezz(
        &[
            "run", "--master", &master, "--cpus", "0.1", "--mem", "32", "--", "echo", "hello",
        ],
        T,
    );
    assert_eq!(
        text(&out.stdout),
        "hello\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));

    // A task still running when the temporary cluster stops goes with it.
    let out = mezz(
        &[
            "run", "--master", &master, "--detach", "--cpus", "0.1", "--mem", "32", "--", "sleep",
            "300",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let task_id = text(&out.stdout).trim().to_string();
    let found = Command::new("find")
        .args([&data_dir, "-path", &format!("*/{task_id}/.mezz/child.pid")])
        .output()
        .expect("find");
    let pid: i32 = std::fs::read_to_string(text(&found.stdout).trim())
        .expect("child.pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(pid_alive(pid));

    unsafe {
        libc::kill(dev.pid() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = dev.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "mezz dev did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    wait_for("the task to be gone", Duration::from_secs(5), || {
        !pid_alive(pid)
    });
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "the temporary data dir is removed"
    );
    assert!(
        http_get(&master, "/health").is_none(),
        "nothing listens any more"
    );
}
