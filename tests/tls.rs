//! TLS on every connection: clients without the cluster's CA are refused
//! with a message that says what to do, `--tls-client-auth required`
//! keeps out an agent without a certificate, and the core path (a task
//! runs and prints, the leader of three masters dies, the next task still
//! runs) works with mutual TLS, as it does under `mezz dev --tls`, whose
//! status page and `/api/state` are served over https.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

/// A CA and what it signed, as PEM files in a directory.
struct Pki {
    ca: PathBuf,
    /// For 127.0.0.1, server and client use (masters and agents).
    node_cert: PathBuf,
    node_key: PathBuf,
    /// A CA that signed nothing here.
    other_ca: PathBuf,
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write a PEM file");
    path.to_path_buf()
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    (params.self_signed(&key).expect("self-signed CA"), key)
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let (ca_cert, ca_key) = ca("test CA");
        let (other, _) = ca("some other CA");
        let key = rcgen::KeyPair::generate().expect("node key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let node = params
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("signed node certificate");
        Pki {
            ca: write(&dir.join("ca.pem"), &ca_cert.pem()),
            node_cert: write(&dir.join("node.pem"), &node.pem()),
            node_key: write(&dir.join("node.key"), &key.serialize_pem()),
            other_ca: write(&dir.join("other-ca.pem"), &other.pem()),
        }
    }

    /// Flags of a master or agent serving with this PKI.
    fn server_flags(&self, client_auth: &str) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.node_cert.display().to_string(),
            "--tls-key".into(),
            self.node_key.display().to_string(),
            "--tls-ca".into(),
            self.ca.display().to_string(),
            "--tls-client-auth".into(),
            client_auth.into(),
        ]
    }

    /// Environment of a client that trusts the CA and shows the node's
    /// certificate.
    fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MEZZ_TLS_CA", self.ca.display().to_string()),
            ("MEZZ_TLS_CERT", self.node_cert.display().to_string()),
            ("MEZZ_TLS_KEY", self.node_key.display().to_string()),
        ]
    }
}

/// `mezz ARGS` with `env` (and no MEZZ_TLS_* or MEZZ_MASTER from the
/// test's own environment), to completion within `timeout`.
fn mezz_env(args: &[&str], env: &[(&str, String)], timeout: Duration) -> Output {
    let mut cmd = Command::new(MEZZ);
    cmd.args(args)
        .env_remove("MEZZ_MASTER")
        .env_remove("MEZZ_TLS_CA")
        .env_remove("MEZZ_TLS_CERT")
        .env_remove("MEZZ_TLS_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn mezz");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "mezz {args:?} did not finish within {timeout:?} (a hang, not an error)\nstderr: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// GET `path` over https (HTTP/1.1), trusting only `ca`.
fn https_get(addr: &str, path: &str, ca: &Path) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).map_err(|e| e.to_string())?;
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    #[allow(deprecated)] // the ring provider, as the servers use
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let host = addr.split(':').next().unwrap_or(addr).to_string();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    // A peer that closes without close_notify still sent the whole
    // response (Connection: close); keep what was read.
    if let Err(e) = tls.read_to_end(&mut buf) {
        if buf.is_empty() {
            return Err(e.to_string());
        }
    }
    let resp = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status code")?;
    Ok((code, body.to_string()))
}

fn spawn_master(dir: &Path, name: &str, port: u16, extra: &[String]) -> Proc {
    let mut args: Vec<String> = vec![
        "master".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.join(name).display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    spawn_logged(dir, name, &args)
}

fn spawn_agent(dir: &Path, name: &str, masters: &str, extra: &[String]) -> Proc {
    let mut args: Vec<String> = vec![
        "agent".into(),
        "--master".into(),
        masters.into(),
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--work-dir".into(),
        dir.join(name).display().to_string(),
        "--resources".into(),
        "cpus:2;mem:1024;disk:1000;ports:[31000-31009]".into(),
        "--gpus".into(),
        "none".into(),
        "--isolation".into(),
        "none".into(),
    ];
    args.extend(extra.iter().cloned());
    spawn_logged(dir, name, &args)
}

/// Connected agents per `mezz agents --json`, with `env`.
fn connected_agents(master: &str, env: &[(&str, String)]) -> usize {
    let out = mezz_env(&["agents", "--master", master, "--json"], env, T);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| {
            v.as_array()
                .map(|a| a.iter().filter(|x| x["status"] == "connected").count())
        })
        .unwrap_or(0)
}

#[test]
fn a_client_without_the_ca_is_refused_with_a_message_not_a_hang() {
    let dir = cluster_dir();
    let pki = Pki::new(dir.path());
    let port = free_port();
    let master = format!("127.0.0.1:{port}");
    let mut m = spawn_master(dir.path(), "master", port, &pki.server_flags("none"));
    let ca_env = vec![("MEZZ_TLS_CA", pki.ca.display().to_string())];
    wait_for("the TLS master's /health over https", T, || {
        https_get(&master, "/health", &pki.ca).is_ok_and(|(code, _)| code == 200)
    });

    // No CA: the master answers a plaintext client only with what to do.
    let started = Instant::now();
    let out = mezz_env(&["ps", "--master", &master], &[], T);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("this master speaks TLS; pass --tls-ca"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "refused quickly"
    );
    let (code, body) = http_get(&master, "/api/state").expect("a plaintext HTTP answer");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("speaks TLS") && !body.contains("agents"),
        "{body}"
    );

    // Another CA: the master's certificate is not trusted.
    let other = vec![("MEZZ_TLS_CA", pki.other_ca.display().to_string())];
    let out = mezz_env(&["ps", "--master", &master], &other, T);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("not signed by the CA"),
        "stderr: {}",
        text(&out.stderr)
    );

    // Peers that never finish a handshake (silent, or a bare handshake
    // record byte) hold up nobody: the handshake runs in each
    // connection's own task.
    let stuck: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s = TcpStream::connect(&master).expect("connect");
            if i % 2 == 0 {
                s.write_all(&[0x16]).expect("write");
            }
            s
        })
        .collect();

    // The right CA, by flag or environment: served.
    let ca_flag = pki.ca.display().to_string();
    let out = mezz_env(&["ps", "--master", &master, "--tls-ca", &ca_flag], &[], T);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let out = mezz_env(&["ps", "--master", &master], &ca_env, T);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let (code, body) = https_get(&master, "/api/state", &pki.ca).expect("https");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"masters\""), "{body}");
    drop(stuck);
    m.kill9();

    // A TLS client and a plaintext master: said so.
    let plain_port = free_port();
    let plain = format!("127.0.0.1:{plain_port}");
    let _p = spawn_master(dir.path(), "plain", plain_port, &[]);
    wait_for("the plaintext master", T, || {
        http_get(&plain, "/health").is_some_and(|(c, _)| c == 200)
    });
    let out = mezz_env(&["ps", "--master", &plain], &ca_env, T);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("does not speak TLS"),
        "stderr: {}",
        text(&out.stderr)
    );
    let log = m.log_text();
    assert!(log.contains("TLS handshake failed"), "{log}");
}

#[test]
fn bad_certificate_files_are_named_at_start() {
    let dir = cluster_dir();
    let pki = Pki::new(dir.path());
    let data = dir.path().join("m").display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let start = |flags: &[&str]| {
        let mut args = vec!["master", "--listen", &listen, "--data-dir", &data];
        args.extend_from_slice(flags);
        let out = mezz_env(&args, &[], T);
        assert_ne!(out.status.code(), Some(0), "{flags:?} must not start");
        text(&out.stderr)
    };
    let cert = pki.node_cert.display().to_string();
    let key = pki.node_key.display().to_string();
    let ca = pki.ca.display().to_string();
    let missing = dir.path().join("missing.pem").display().to_string();

    let e = start(&["--tls-cert", &missing, "--tls-key", &key, "--tls-ca", &ca]);
    assert!(
        e.contains("--tls-cert") && e.contains("cannot read it"),
        "{e}"
    );
    // A key that is not the certificate's (the CA file holds no key at
    // all; a key of another pair is a mismatch).
    let other_key = dir.path().join("other.key");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().expect("key").serialize_pem(),
    )
    .expect("write");
    let other_key = other_key.display().to_string();
    let e = start(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &other_key,
        "--tls-ca",
        &ca,
    ]);
    assert!(e.contains("does not belong to the certificate"), "{e}");
    let e = start(&["--tls-cert", &cert, "--tls-key", &cert, "--tls-ca", &ca]);
    assert!(e.contains("holds no private key"), "{e}");
    let e = start(&["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &key]);
    assert!(
        e.contains("--tls-ca") && e.contains("holds no certificate"),
        "{e}"
    );
    let e = start(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(e.contains("also pass --tls-ca"), "{e}");
    let e = start(&["--tls-client-auth", "required"]);
    assert!(e.contains("--tls-client-auth needs TLS on"), "{e}");
}

#[test]
fn required_client_auth_refuses_an_agent_without_a_certificate() {
    let dir = cluster_dir();
    let pki = Pki::new(dir.path());
    let port = free_port();
    let master = format!("127.0.0.1:{port}");
    let m = spawn_master(dir.path(), "master", port, &pki.server_flags("required"));
    let env = pki.client_env();
    wait_for(
        "the master to answer a client with a certificate",
        T,
        || {
            mezz_env(&["masters", "--master", &master], &env, T)
                .status
                .success()
        },
    );

    // Trusts the CA but shows no certificate: refused in the handshake.
    let ca = pki.ca.display().to_string();
    let mut bare = spawn_agent(dir.path(), "bare", &master, &["--tls-ca".into(), ca]);
    wait_for("the master to log the refused handshake", T, || {
        m.log_text().contains("TLS handshake failed")
    });
    let log = m.log_text();
    assert!(log.contains("no certificate"), "the master says why: {log}");
    wait_for("the agent to say why it cannot connect", T, || {
        bare.log_text().contains("requires a client certificate")
    });
    assert_eq!(connected_agents(&master, &env), 0);
    bare.kill9();

    // With its certificate it registers.
    let _agent = spawn_agent(dir.path(), "agent", &master, &pki.server_flags("required"));
    wait_for("the agent with a certificate to register", T, || {
        connected_agents(&master, &env) == 1
    });
}

#[test]
fn three_masters_with_mutual_tls_run_a_task_and_fail_over() {
    let dir = cluster_dir();
    let pki = Pki::new(dir.path());
    let ports = [free_port(), free_port(), free_port()];
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
    let mut masters: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let mut extra = vec![
                "--id".into(),
                (i + 1).to_string(),
                "--peers".into(),
                peers.clone(),
            ];
            extra.extend(pki.server_flags("required"));
            spawn_master(dir.path(), &format!("master-{}", i + 1), p, &extra)
        })
        .collect();
    let _agent = spawn_agent(dir.path(), "agent", &list, &pki.server_flags("required"));
    let env = pki.client_env();
    wait_for("the agent to register over mutual TLS", T, || {
        connected_agents(&list, &env) == 1
    });

    let run = || {
        mezz_env(
            &[
                "run", "--master", &list, "--cpus", "0.1", "--mem", "32", "--", "echo", "hello",
            ],
            &env,
            T,
        )
    };
    let out = run();
    assert_eq!(
        text(&out.stdout),
        "hello\n",
        "stderr: {}",
        text(&out.stderr)
    );

    let leader = |env: &[(&str, String)]| -> Option<usize> {
        let out = mezz_env(&["masters", "--master", &list, "--json"], env, T);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let ids: Vec<u64> = v
            .as_array()?
            .iter()
            .filter(|m| m["role"] == "leader")
            .filter_map(|m| m["id"].as_u64())
            .collect();
        match ids.as_slice() {
            [id] => Some(*id as usize - 1),
            _ => None,
        }
    };
    let mut first = None;
    wait_for("a leader", T, || {
        first = leader(&env);
        first.is_some()
    });
    let first = first.expect("leader");
    masters[first].kill9();
    wait_for("another leader", T, || {
        leader(&env).is_some_and(|l| l != first)
    });
    let mut out = run();
    // The agent may still be re-registering with the new leader; a task
    // is refused for want of an agent meanwhile, never hangs.
    let deadline = Instant::now() + T;
    while text(&out.stdout) != "hello\n" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        out = run();
    }
    assert_eq!(
        text(&out.stdout),
        "hello\n",
        "stderr: {}",
        text(&out.stderr)
    );
    kill_tasks_under(dir.path());
}

#[test]
fn dev_tls_runs_three_masters_and_serves_the_pages_over_https() {
    let port = consecutive_free_ports(4);
    let data = tempfile::tempdir().expect("tempdir");
    let child = Command::new(MEZZ)
        .args([
            "dev",
            "--tls",
            "--masters",
            "3",
            "--port",
            &port.to_string(),
            "--data-dir",
            &data.path().display().to_string(),
            "--resources",
            "cpus:2;mem:1024;disk:1000;ports:[31000-31009]",
        ])
        .env("RUST_LOG", "warn")
        .env_remove("MEZZ_TLS_CA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mezz dev --tls");
    let mut dev = Proc {
        name: "dev".into(),
        child,
        log: "/dev/null".into(),
    };
    let mut lines = std::io::BufReader::new(dev.child.stdout.take().expect("stdout")).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("utf-8");
        let done = line.starts_with("Try:");
        banner.push(line);
        if done {
            break;
        }
    }
    let banner = banner.join("\n");
    assert!(
        banner.contains("status page  https://127.0.0.1:"),
        "{banner}"
    );
    let ca = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("clients      export MEZZ_TLS_CA="))
        .map(PathBuf::from)
        .expect("the export line");
    assert_eq!(ca, data.path().join("tls").join("ca.pem"));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.path().join("tls").join("node.key"))
            .expect("node key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let list = (0..3)
        .map(|i| format!("127.0.0.1:{}", port + i))
        .collect::<Vec<_>>()
        .join(",");
    let env = vec![("MEZZ_TLS_CA", ca.display().to_string())];
    let out = mezz_env(
        &[
            "run", "--master", &list, "--cpus", "0.1", "--mem", "32", "--", "echo", "hello",
        ],
        &env,
        T,
    );
    assert_eq!(
        text(&out.stdout),
        "hello\n",
        "stderr: {}",
        text(&out.stderr)
    );

    let leader = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("status page  https://"))
        .map(|a| a.trim_end_matches('/').to_string())
        .expect("status page line");
    let (code, page) = https_get(&leader, "/", &ca).expect("the status page over https");
    assert_eq!(code, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
    let (code, state) = https_get(&leader, "/api/state", &ca).expect("/api/state over https");
    assert_eq!(code, 200);
    let state: serde_json::Value = serde_json::from_str(&state).expect("state JSON");
    assert_eq!(state["masters"].as_array().map(Vec::len), Some(3));
    // The task's output, which the leader fetches from the agent's file
    // API: master to agent over TLS too.
    let task = state["tasks"]
        .as_array()
        .and_then(|t| t.first())
        .cloned()
        .expect("the finished task in /api/state");
    let path = format!(
        "/api/tasks/{}/{}/files/stdout",
        task["framework_id"].as_str().expect("framework id"),
        task["id"].as_str().expect("task id")
    );
    let (code, stdout) = https_get(&leader, &path, &ca).expect("stdout over https");
    assert_eq!((code, stdout.contains("hello")), (200, true), "{stdout}");
    assert!(
        https_get(
            &leader,
            "/api/state",
            &data.path().join("tls").join("node.pem")
        )
        .is_err(),
        "a certificate that is no CA is not trusted"
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
