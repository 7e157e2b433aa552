//! What the CLI writes: every command people type goes quietly when its
//! reader goes away (`mezz ps --json | head`), as `ls | head` does, and
//! logs carry ANSI colours only on a terminal.

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

/// Runs `mezz ARGS` with its stdout a pipe nobody reads any more, so its
/// first write fails; returns the exit status and stderr.
fn with_closed_stdout(args: &[&str]) -> (std::process::ExitStatus, String) {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
    drop(read);
    let child = Command::new(MEZZ)
        .args(args)
        .env_remove("MEZZ_MASTER")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mezz");
    let out = child.wait_with_output().expect("wait");
    (out.status, text(&out.stderr))
}

#[test]
fn every_command_goes_quietly_when_its_reader_is_gone() {
    let c = Cluster::start("cpus:2;mem:1024;disk:1000;ports:[31000-31009]", &[]);
    let master = c.master_addr();
    let out = c.mezz(&["run", "--name", "hello", "--", "echo", "hello"], T);
    assert_eq!(text(&out.stdout), "hello\n", "{}", text(&out.stderr));
    let task = c.state()["tasks"][0]["id"]
        .as_str()
        .expect("the task's id")
        .to_string();

    let m = master.as_str();
    let commands: Vec<Vec<&str>> = vec![
        vec!["ps", "--all", "--master", m],
        vec!["ps", "--all", "--json", "--master", m],
        vec!["agents", "--master", m],
        vec!["agents", "--json", "--master", m],
        vec!["frameworks", "--json", "--master", m],
        vec!["masters", "--master", m],
        vec!["roles", "--master", m],
        vec!["quota", "ls", "--master", m],
        vec!["logs", &task, "--master", m],
    ];
    for full in commands {
        let (status, stderr) = with_closed_stdout(&full);
        assert_eq!(
            status.signal(),
            Some(libc::SIGPIPE),
            "mezz {full:?} dies of SIGPIPE like other tools ({status}): {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "mezz {full:?}: {stderr}"
        );
    }
    // `mezz run` owns a task: it ends it, then exits with the status a
    // shell gives a program killed by SIGPIPE.
    for full in [
        vec!["run", "--master", m, "--", "echo", "hi"],
        vec!["run", "--master", m, "--detach", "--", "true"],
    ] {
        let (status, stderr) = with_closed_stdout(&full);
        assert_eq!(
            status.code(),
            Some(141),
            "mezz {full:?} ({status}): {stderr}"
        );
        assert!(!stderr.contains("panicked"), "mezz {full:?}: {stderr}");
    }
    for args in [&["--help"][..], &["ps", "--help"], &["--version"]] {
        let (status, stderr) = with_closed_stdout(args);
        assert_eq!(status.signal(), Some(libc::SIGPIPE), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }

    // The issue's own words, through a shell and `head`.
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "set -o pipefail; {MEZZ} ps --all --json --master {master} | head -c 10 >/dev/null; \
                 echo \"status $?\""
            ),
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("bash");
    let stdout = text(&out.stdout);
    assert!(
        stdout == "status 0\n" || stdout == "status 141\n",
        "{stdout}{}",
        text(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn a_run_whose_reader_goes_away_kills_its_task() {
    let c = Cluster::start("cpus:2;mem:1024;disk:1000;ports:[31000-31009]", &[]);
    let master = c.master_addr();
    // `yes` writes forever; `head` reads one line and goes.
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "{MEZZ} run --name endless --master {master} -- yes | head -n 1; \
                 echo \"status ${{PIPESTATUS[0]}}\""
            ),
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("bash");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(stdout, "y\nstatus 141\n", "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("killing task"), "{stderr}");
    // Killed by the time `mezz run` is gone, not after the framework's
    // failover timeout.
    let state = c.state();
    let task = state["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "endless")
        .cloned()
        .unwrap_or_else(|| panic!("no task named endless: {state}"));
    assert_eq!(task["state"], "KILLED", "{task}");
}

#[test]
fn logs_in_a_file_have_no_colour_codes() {
    let c = Cluster::start("cpus:1;mem:256;disk:100;ports:[31000-31009]", &[]);
    let master_log = c.dir.path().join("master.log");
    let agent_log = c.dir.path().join("agent-0.log");
    for log in [master_log, agent_log] {
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.contains("INFO"), "{}: {text}", log.display());
        assert!(!text.contains('\x1b'), "{}: {text}", log.display());
    }
}
