//! `mezz dev`: the whole local cluster in one foreground process, which
//! takes with it, when it stops, its tasks and the framework daemons that
//! commands started for it.

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

    // A command that started a framework's daemon for this cluster in the
    // background: the daemon goes with the cluster too.
    let jobs = JobsDaemon::of(&master);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("j.yaml");
    std::fs::write(
        &file,
        "kind: command\nname: quick\ncpus: 0.1\nmem: 32\ncommand: true\n",
    )
    .expect("job file");
    let out = mezz(
        &[
            "job",
            "submit",
            "--master",
            &master,
            "--wait",
            file.to_str().expect("utf-8"),
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let daemon = jobs.pid().expect("a jobs daemon was started");
    assert!(pid_alive(daemon));

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
    wait_for(
        "the jobs daemon to stop with the cluster",
        Duration::from_secs(10),
        || !pid_alive(daemon),
    );
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "the temporary data dir is removed"
    );
    assert!(
        http_get(&master, "/health").is_none(),
        "nothing listens any more"
    );
}

/// The port ranges of a resources text such as `cpus:1;ports:[1-2,5-6]`.
fn port_ranges(resources: &str) -> Vec<(u64, u64)> {
    resources
        .split(';')
        .find_map(|r| r.strip_prefix("ports:["))
        .map(|r| {
            r.trim_end_matches(']')
                .split(',')
                .map(|range| {
                    let (b, e) = range.split_once('-').unwrap_or((range, range));
                    (b.parse().expect("port"), e.parse().expect("port"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn dev_agents_get_disjoint_ports_and_a_share_of_the_machine() {
    let port = consecutive_free_ports(3);
    let child = Command::new(MEZZ)
        .args([
            "dev",
            "--port",
            &port.to_string(),
            "--agents",
            "2",
            "--resources",
            "mem:512;disk:100",
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
    let mut lines = std::io::BufReader::new(dev.child.stdout.take().expect("stdout")).lines();
    let banner: Vec<String> = (0..7)
        .map(|_| lines.next().expect("banner line").expect("utf-8"))
        .collect();
    let banner = banner.join("\n");
    assert!(
        banner.contains(
            "agents       2, each with its own ports and an equal share of this machine's cpus"
        ),
        "{banner}"
    );

    let master = format!("127.0.0.1:{port}");
    let mut agents = Vec::new();
    wait_for("both agents to register", T, || {
        agents = http_get(&master, "/api/state")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|s| s["agents"].as_array().cloned())
            .unwrap_or_default();
        agents.len() == 2
    });
    let resources: Vec<String> = agents
        .iter()
        .map(|a| a["resources"].as_str().expect("resources").to_string())
        .collect();
    let (a, b) = (port_ranges(&resources[0]), port_ranges(&resources[1]));
    assert!(!a.is_empty() && !b.is_empty(), "{resources:?}");
    for &(ab, ae) in &a {
        for &(bb, be) in &b {
            assert!(ae < bb || be < ab, "overlapping ports: {resources:?}");
        }
    }
    let cpus = |r: &str| -> f64 {
        r.split(';')
            .find_map(|p| p.strip_prefix("cpus:"))
            .and_then(|c| c.parse().ok())
            .expect("cpus")
    };
    let machine = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert_eq!(cpus(&resources[0]), cpus(&resources[1]), "{resources:?}");
    assert!(
        cpus(&resources[0]) + cpus(&resources[1]) <= machine,
        "together no more than the machine's {machine} cpus: {resources:?}"
    );
    assert!(
        resources.iter().all(|r| r.contains("mem:512")),
        "as given: {resources:?}"
    );

    unsafe {
        libc::kill(dev.pid() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while dev.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "mezz dev did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dev_auth_makes_an_admin_token_and_refuses_calls_without_one() {
    use std::os::unix::fs::PermissionsExt;
    let port = two_ports();
    let dir = cluster_dir();
    let data_dir = dir.path().join("dev");
    let child = Command::new(MEZZ)
        .args([
            "dev",
            "--auth",
            "--port",
            &port.to_string(),
            "--data-dir",
            &data_dir.display().to_string(),
            "--resources",
            "cpus:2;mem:1024;disk:1000;ports:[31000-31009]",
        ])
        .env("RUST_LOG", "warn")
        .env_remove("MEZZ_TOKEN")
        .env_remove("MEZZ_CREDENTIALS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mezz dev --auth");
    let mut dev = Proc {
        name: "dev".into(),
        child,
        log: "/dev/null".into(),
    };
    let mut banner = Vec::new();
    let mut lines = std::io::BufReader::new(dev.child.stdout.take().expect("stdout")).lines();
    while !banner
        .last()
        .is_some_and(|l: &String| l.starts_with("Try:"))
    {
        banner.push(lines.next().expect("banner line").expect("utf-8"));
    }
    let banner = banner.join("\n");
    let token_file = data_dir.join("admin.token");
    assert!(
        banner.contains(&format!("export MEZZ_CREDENTIALS={}", token_file.display())),
        "{banner}"
    );
    let mode = std::fs::metadata(&token_file)
        .expect("the admin token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).expect("token");
    assert!(
        !banner.contains(token.trim()),
        "the token itself is not printed"
    );

    let master = format!("127.0.0.1:{port}");
    let out = mezz(&["ps", "--master", &master], T);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("no token"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(http_get(&master, "/api/state").map(|r| r.0), Some(401));
    assert_eq!(http_get(&master, "/health").map(|r| r.0), Some(200));
    let creds = token_file.display().to_string();
    let out = mezz(
        &[
            "run",
            "--master",
            &master,
            "--credentials",
            &creds,
            "--cpus",
            "0.1",
            "--mem",
            "32",
            "--",
            "echo",
            "hello",
        ],
        T,
    );
    assert_eq!(
        text(&out.stdout),
        "hello\n",
        "stderr: {}",
        text(&out.stderr)
    );
    // The output came through a sandbox grant, and the master audited the
    // admin token's first use.
    let audit = std::fs::read_to_string(data_dir.join("audit-master-1.log"))
        .expect("mezz dev --auth keeps an audit log under its data dir");
    assert!(audit.contains("\"token_first_use\""), "{audit}");

    unsafe {
        libc::kill(dev.pid() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while dev.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "mezz dev --auth did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}
