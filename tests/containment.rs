//! What a task can reach, end to end: real `mezz` master and agent
//! processes, tasks launched with `mezz run`. A task that races the file
//! API with symbolic links never gets a host file served, and a task (as
//! the default unprivileged user, and as root where the agent allows it)
//! cannot write outside its sandbox. Needs root, cgroups and namespaces,
//! so a plain `cargo test` reports these tests as ignored (see
//! `common/needs.rs`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mezz_proto::v1::agent_files_client::AgentFilesClient;
use mezz_proto::v1::{ListFilesRequest, ReadFileRequest, TailFileRequest};

const T: Duration = Duration::from_secs(60);
const RES: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31010]";

fn need_containment() {
    need_namespaces();
    need_nobody();
    need_python3();
}

/// A cluster whose agent hides the master's data dir from tasks, with
/// `extra` agent flags.
fn cluster(extra: &[&str]) -> Cluster {
    let mut c = Cluster::start(RES, &[]);
    let master_dir = c.dir.path().join("master").display().to_string();
    if let Some(mut a) = c.agents[0].take() {
        a.kill9();
    }
    let mut args = vec!["--gpus", "none", "--task-hidden-path", &master_dir];
    args.extend_from_slice(extra);
    c.start_agent_with(0, &args);
    c.wait_agents_connected(1);
    c
}

/// A file only root can read, with a content no task could guess, in a
/// directory of its own: `(dir, file name, content)`.
fn host_secret(c: &Cluster) -> (PathBuf, &'static str, String) {
    let dir = c.dir.path().join("host");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = format!("HOST-SECRET-{}-{}", std::process::id(), free_port());
    // The secret is also a file name there, so a listing of the
    // directory would show it.
    for (name, content) in [("x", secret.as_str()), (secret.as_str(), "")] {
        let file = dir.join(name);
        std::fs::write(&file, content).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (dir, "x", secret)
}

/// Starts a detached task running `script` (sh -c); returns its id once
/// RUNNING.
fn start_task(c: &Cluster, script: &str) -> String {
    let out = c.mezz(
        &[
            "run", "--detach", "--cpus", "0.2", "--mem", "64", "--", script,
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    c.wait_task_state(&id, "RUNNING", T);
    id
}

/// A task that swaps, as fast as it can, `stdout` between a regular file
/// and a symbolic link to the host's secret, and `d` between a directory
/// holding `x` and a link to the secret's directory.
fn swapper(dir: &Path, name: &str) -> String {
    let target = dir.join(name);
    format!(
        "python3 -c '
import os
secret, sdir = {target:?}, {dir:?}
os.mkdir(\"real\"); open(\"real/x\", \"w\").write(\"plain\\n\")
open(\"ready\", \"w\").close()
while True:
    os.symlink(secret, \"l1\")
    os.rename(\"l1\", \"stdout\")
    with open(\"p1\", \"w\") as f: f.write(\"plain\\n\")
    os.rename(\"p1\", \"stdout\")
    os.rename(\"real\", \"d\")
    os.rename(\"d\", \"real\")
    os.symlink(sdir, \"d\")
    os.unlink(\"d\")
'"
    )
}

/// How the reads of one batch ended.
#[derive(Default, Debug)]
struct Outcomes {
    plain: usize,
    refused: usize,
    other: usize,
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn a_symlink_swapping_task_never_gets_a_host_file_served() {
    need_containment();
    let c = cluster(&[]);
    let (dir, name, secret) = host_secret(&c);
    let id = start_task(&c, &swapper(&dir, name));
    let task = c.task(&id).expect("task in /api/state");
    let fw = task["framework_id"].as_str().unwrap().to_string();
    let agent = task["agent_address"].as_str().unwrap().to_string();
    let sandbox = c.agent_work_dir(0).join("sandboxes").join(&fw).join(&id);
    wait_for("the swapping task to start", T, || {
        sandbox.join("ready").exists()
    });

    // 1. The agent API, 1,000 concurrent reads a batch (ReadFile, TailFile
    //    and ListFiles, of the swapped file and through the swapped
    //    directory), until both outcomes of the race were seen.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(async {
        let client = AgentFilesClient::connect(format!("http://{agent}"))
            .await
            .unwrap();
        let mut total = Outcomes::default();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut reads = Vec::new();
            for i in 0..1000 {
                let mut client = client.clone();
                let (fw, id) = (fw.clone(), id.clone());
                let path = if i % 2 == 0 { "stdout" } else { "d/x" };
                reads.push(tokio::spawn(async move {
                    let r = match i % 3 {
                        0 => client
                            .read_file(ReadFileRequest {
                                framework_id: fw,
                                task_id: id,
                                path: path.into(),
                                offset: 0,
                                length: 0,
                            })
                            .await
                            .map(|r| String::from_utf8_lossy(&r.into_inner().data).into_owned()),
                        1 => client
                            .tail_file(TailFileRequest {
                                framework_id: fw,
                                task_id: id,
                                path: path.into(),
                                length: 0,
                            })
                            .await
                            .map(|r| String::from_utf8_lossy(&r.into_inner().data).into_owned()),
                        _ => client
                            .list_files(ListFilesRequest {
                                framework_id: fw,
                                task_id: id,
                                path: "d".into(),
                            })
                            .await
                            .map(|r| format!("{:?}", r.into_inner().entries)),
                    };
                    (path, r)
                }));
            }
            for r in reads {
                let (path, r) = r.await.unwrap();
                match r {
                    Ok(body) => {
                        assert!(
                            !body.contains(&secret),
                            "the host's secret was served for '{path}'"
                        );
                        total.plain += 1;
                    }
                    Err(s) if s.code() == tonic::Code::PermissionDenied => total.refused += 1,
                    // A read between two renames: gone for a moment.
                    Err(s) if s.code() == tonic::Code::NotFound => total.other += 1,
                    Err(s) => panic!("read of '{path}': {s:?}"),
                }
            }
            if (total.plain > 0 && total.refused > 0) || Instant::now() > deadline {
                return total;
            }
        }
    });
    assert!(
        seen.plain > 0 && seen.refused > 0,
        "the race never happened (the test would pass by accident): {seen:?}"
    );
    eprintln!("agent API: {seen:?}");

    // 2. The master's HTTP endpoint, 300 reads from 6 threads.
    let addr = c.master_addr();
    let path = format!("/api/tasks/{fw}/{id}/files/stdout");
    let http: Vec<(u16, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    (0..50)
                        .filter_map(|_| http_get(&addr, &path))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(http.len() >= 250, "only {} answers", http.len());
    for (code, body) in &http {
        assert!(!body.contains(&secret), "served over HTTP ({code})");
    }
    assert!(http.iter().any(|(c, _)| *c == 200), "no read succeeded");

    // 3. `mezz logs`, 50 runs from 5 threads, and more until one of them
    // caught the file between two swaps (on a busy machine the task may
    // hold it as a link through a whole batch).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut logs: Vec<(Option<i32>, String)> = Vec::new();
    while logs.len() < 50 || !logs.iter().any(|(c, _)| *c == Some(0)) {
        let batch: Vec<(Option<i32>, String)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..5)
                .map(|_| {
                    s.spawn(|| {
                        (0..10)
                            .map(|_| {
                                let out = c.mezz(&["logs", &id], T);
                                (out.status.code(), text(&out.stdout) + &text(&out.stderr))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        for (code, out) in &batch {
            assert!(!out.contains(&secret), "mezz logs printed it ({code:?})");
        }
        logs.extend(batch);
        if Instant::now() > deadline {
            break;
        }
    }
    assert!(
        logs.iter().any(|(c, _)| *c == Some(0)),
        "no `mezz logs` of {} succeeded: {:?}",
        logs.len(),
        &logs[..logs.len().min(5)]
    );
    let _ = c.mezz(&["kill", &id], T);
}

/// The probes a task runs: each line `WROTE <what>` is a containment
/// failure; `uid=N` is who it ran as. A root task (allowed by the agent)
/// keeps CAP_DAC_OVERRIDE: it may read its own launch spec and write to
/// the host's `/`, so those two are probed for unprivileged tasks only.
fn probe_script(c: &Cluster, other_sandbox: &Path, root: bool) -> String {
    let work = c.agent_work_dir(0);
    let master = c.dir.path().join("master");
    let unprivileged = if root {
        ""
    } else {
        "try launch-spec sh -c 'cat .mezz/launch.json | grep -q .'
try root-dir sh -c 'echo x > /pwned-by-task'
"
    };
    format!(
        "echo uid=$(id -u)
try() {{ what=$1; shift; if ( \"$@\" ) 2>/dev/null; then echo \"WROTE $what\"; fi; }}
try other-sandbox sh -c 'echo x > {other}/pwned'
try other-stdout sh -c 'echo x >> {other}/stdout'
try other-list ls {other}
try master-dir sh -c 'echo x > {master}/pwned'
try master-files sh -c 'ls -A {master} | grep -q .'
try checkpoint sh -c 'echo x > {work}/meta/pwned'
try checkpoint-list ls {work}/meta
{unprivileged}for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs; do
  [ -e \"$f\" ] && try \"$f\" sh -c \"echo $$ > $f\"
done
try unmount-work umount -l {work}
try remount-cgroup mount -o remount,rw /sys/fs/cgroup
echo own=$(echo y > mine && cat mine)
echo done",
        other = other_sandbox.display(),
        master = master.display(),
        work = work.display(),
    )
}

fn assert_contained(c: &Cluster, other_sandbox: &Path, out: &str) {
    assert!(
        out.contains("own=y"),
        "the task could not use its sandbox: {out}"
    );
    assert!(out.contains("done"), "{out}");
    let escapes: Vec<&str> = out.lines().filter(|l| l.starts_with("WROTE")).collect();
    assert!(escapes.is_empty(), "escapes: {escapes:?}\n{out}");
    // And on the host, nothing arrived.
    for p in [
        other_sandbox.join("pwned"),
        c.dir.path().join("master/pwned"),
        c.agent_work_dir(0).join("meta/pwned"),
    ] {
        assert!(!p.exists(), "{} was written", p.display());
    }
    let stdout = std::fs::read_to_string(other_sandbox.join("stdout")).unwrap();
    assert!(!stdout.contains('x'), "the other task's stdout: {stdout}");
}

fn sandbox_of(c: &Cluster, id: &str) -> PathBuf {
    let fw = c.task(id).expect("task")["framework_id"]
        .as_str()
        .unwrap()
        .to_string();
    c.agent_work_dir(0).join("sandboxes").join(fw).join(id)
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn an_unprivileged_task_cannot_write_outside_its_sandbox() {
    need_containment();
    let c = cluster(&[]);
    let other = c.start_sleeper();
    let other_sandbox = sandbox_of(&c, &other);
    assert!(other_sandbox.join("stdout").exists());
    let out = c.mezz(
        &[
            "run",
            "--cpus",
            "0.2",
            "--mem",
            "64",
            "--",
            &probe_script(&c, &other_sandbox, false),
        ],
        T,
    );
    let all = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let uid = need_nobody();
    assert!(all.contains(&format!("uid={uid}\n")), "not nobody: {all}");
    assert_contained(&c, &other_sandbox, &all);
    assert!(!Path::new("/pwned-by-task").exists());
    // The launch spec is not served either.
    let out = c.mezz(&["logs", &other, "--list"], T);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains(".mezz"),
        "{}",
        text(&out.stdout)
    );
    let _ = c.mezz(&["kill", &other], T);
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn a_root_task_is_contained_too() {
    need_containment();
    // The framework asks for root (its user), and this agent allows it.
    let c = cluster(&["--allow-root-tasks"]);
    let other = c.start_sleeper();
    let other_sandbox = sandbox_of(&c, &other);
    let out = Command::new(MEZZ)
        .args(["run", "--master", &c.master_addr()])
        .args(["--cpus", "0.2", "--mem", "64", "--"])
        .arg(probe_script(&c, &other_sandbox, true))
        .env("USER", "root")
        .env_remove("MEZZ_MASTER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("uid=0\n"), "not root: {all}");
    assert_contained(&c, &other_sandbox, &all);
    let _ = c.mezz(&["kill", &other], T);
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn a_framework_cannot_ask_for_root_unless_the_agent_allows_it() {
    need_containment();
    let c = cluster(&[]);
    let out = Command::new(MEZZ)
        .args(["run", "--master", &c.master_addr()])
        .args(["--cpus", "0.1", "--mem", "32", "--", "id -u"])
        .env("USER", "root")
        .env_remove("MEZZ_MASTER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The framework's root is replaced by the agent's task user.
    assert_eq!(all.trim(), need_nobody().to_string());
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn an_agent_whose_task_user_cannot_reach_the_work_dir_refuses_to_start() {
    need_containment();
    let top = tempfile::tempdir().unwrap(); // 0700: nobody cannot pass
    let closed = top.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let out = mezz(
        &[
            "agent",
            "--master",
            "127.0.0.1:1",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--work-dir",
            &closed.join("work").display().to_string(),
            "--gpus",
            "none",
        ],
        T,
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("'nobody'"), "{err}");
    assert!(err.contains(&closed.display().to_string()), "{err}");
    assert!(err.contains("chmod"), "{err}");
}

#[test]
#[ignore = "needs root, cgroups and namespaces"]
fn a_command_health_check_sees_only_what_its_task_sees() {
    need_containment();
    let c = cluster(&[]);
    let other = c.start_sleeper();
    let other_sandbox = sandbox_of(&c, &other);
    let master = c.dir.path().join("master");
    // The check runs the sandbox's own script, as checks often do: the
    // task's code, which must be held as the task is.
    let script = format!(
        "printf '%s\\n' 'echo x > {other}/pwned; echo x > {master}/pwned; ls {meta} && echo x > meta-seen; echo uid=$(id -u) > checked' > check.sh && sleep 300",
        other = other_sandbox.display(),
        master = master.display(),
        meta = c.agent_work_dir(0).join("meta").display(),
    );
    let out = c.mezz(
        &[
            "run",
            "--detach",
            "--cpus",
            "0.2",
            "--mem",
            "64",
            "--health-cmd",
            "sh check.sh",
            "--health-interval",
            "1s",
            "--",
            &script,
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let sandbox = sandbox_of(&c, &id);
    wait_for("the health check to run", T, || {
        std::fs::read_to_string(sandbox.join("checked")).is_ok_and(|s| s.ends_with('\n'))
    });
    let uid = need_nobody();
    let checked = std::fs::read_to_string(sandbox.join("checked")).unwrap();
    assert_eq!(checked, format!("uid={uid}\n"));
    assert!(
        !sandbox.join("meta-seen").exists(),
        "the check saw the checkpoint"
    );
    assert!(
        !other_sandbox.join("pwned").exists(),
        "the check wrote into another sandbox"
    );
    assert!(
        !master.join("pwned").exists(),
        "the check wrote into the master's data dir"
    );
    let _ = c.mezz(&["kill", &id], T);
    let _ = c.mezz(&["kill", &other], T);
}
