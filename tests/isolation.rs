//! Isolation and GPUs end to end: real `mezz` master and agent processes,
//! tasks launched with `mezz run`. Needs root and cgroup v1/v2, so a
//! plain `cargo test` reports these tests as ignored (see
//! `common/needs.rs`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

fn open_script(nodes: &[String]) -> String {
    format!(
        "python3 -c 'import os,errno,sys\nfor p in sys.argv[1:]:\n  try:\n    os.close(os.open(p, os.O_RDWR)); print(p, \"OK\")\n  except OSError as e:\n    print(p, errno.errorcode[e.errno])\nprint(\"devices=\" + os.environ.get(\"MEZZ_GPU_DEVICES\", \"\"))' {} {}",
        nodes[0], nodes[1]
    )
}

#[test]
#[ignore = "needs root and cgroups"]
fn fake_gpus_are_confined_by_the_devices_cgroup() {
    need_root_cgroups();
    let c = Cluster::start_with_agent_args(
        "cpus:2;mem:2048;disk:1000;ports:[31000-31100]",
        &["--fake-gpus", "2"],
    );
    let dev = c.agent_work_dir(0).join("dev");
    let nodes: Vec<String> = (0..2)
        .map(|i| dev.join(format!("nvidia{i}")).display().to_string())
        .collect();
    let agents = c.state()["agents"].clone();
    assert!(
        agents.to_string().contains("fake-gpu-1"),
        "agent does not advertise its GPUs: {agents}"
    );

    // CPU-only work runs on an agent whose every machine is a GPU one, and
    // never sees a GPU.
    let out = c.mezz(
        &[
            "run",
            "--cpus",
            "0.5",
            "--mem",
            "64",
            "--",
            &open_script(&nodes),
        ],
        T,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for n in &nodes {
        assert!(stdout.contains(&format!("{n} EPERM")), "{stdout}");
    }
    assert!(stdout.lines().any(|l| l == "devices="), "{stdout}");
    // Half of the agent is kept back for its two idle GPUs: a CPU-only
    // task larger than the other half waits, and says why.
    let agent = &c.state()["agents"][0];
    assert_eq!(agent["idle_gpus"], 2.0, "{agent}");
    assert_eq!(agent["held_for_gpus"]["cpus"], 1.0, "{agent}");
    assert_eq!(agent["held_for_gpus"]["mem"], 1024.0, "{agent}");
    let out = c.mezz(
        &[
            "run",
            "--cpus",
            "1.5",
            "--mem",
            "64",
            "--timeout",
            "3s",
            "--",
            "true",
        ],
        T,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("keeps cpus:1;mem:1024 for its 2 idle GPUs"),
        "{err}"
    );
    // CPU-only work holding all it may use leaves a GPU task its GPU.
    let sleeper = c.mezz(
        &[
            "run", "--detach", "--cpus", "1", "--mem", "1024", "--", "sleep", "300",
        ],
        T,
    );
    assert_eq!(sleeper.status.code(), Some(0), "{}", text(&sleeper.stderr));

    let out = c.mezz(
        &[
            "run",
            "--gpus",
            "1",
            "--cpus",
            "0.1",
            "--mem",
            "64",
            "--",
            &open_script(&nodes),
        ],
        T,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let given = stdout
        .lines()
        .find_map(|l| l.strip_prefix("devices="))
        .unwrap_or_default()
        .to_string();
    assert!(nodes.contains(&given), "MEZZ_GPU_DEVICES={given}: {stdout}");
    let other = nodes.iter().find(|n| **n != given).unwrap();
    assert!(stdout.contains(&format!("{given} ENXIO")), "{stdout}");
    assert!(stdout.contains(&format!("{other} EPERM")), "{stdout}");

    // A task without GPUs is refused both nodes (above, and in
    // agent/tests/isolation.rs).
}

/// Four fake GPUs in two NVLink pairs (0-1 on two links, 2-3 on four)
/// across NUMA nodes: the agent advertises the topology, and a task that
/// asks for two GPUs gets the four-link pair, then the next one the other
/// pair, never two strangers.
#[test]
#[ignore = "needs root and cgroups"]
fn several_gpus_are_the_best_connected_ones() {
    need_root_cgroups();
    let c = Cluster::start_with_agent_args(
        "cpus:2;mem:2048;disk:1000;ports:[31000-31100]",
        &[
            "--fake-gpus",
            "4",
            "--fake-gpu-topology",
            "0-1=NV2,2-3=NV4,*=SYS",
        ],
    );
    let agent = &c.state()["agents"][0];
    assert_eq!(
        agent["attributes"]["gpu_topology"],
        "fake-gpu-0,fake-gpu-1,fake-gpu-2,fake-gpu-3;NV2,SYS,SYS,SYS,SYS,NV4",
        "{agent}"
    );
    let two = ["run", "--gpus", "2", "--cpus", "0.1", "--mem", "32"];
    // The first holds the NVLink-4 pair while the second asks.
    let hold = "echo cuda=$CUDA_VISIBLE_DEVICES; sleep 300";
    let first = c.mezz(
        &[&two[..], &["--detach", "--", "sh", "-c", hold]].concat(),
        T,
    );
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let first_id = text(&first.stdout).trim().to_string();
    wait_for("the first task's GPUs", T, || {
        let s = c.state();
        s["tasks"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                t["id"] == first_id.as_str() && t["gpus"].as_array().is_some_and(|g| g.len() == 2)
            })
        })
    });
    let state = c.state();
    let task = state["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == first_id.as_str()))
        .expect("the first task")
        .clone();
    assert_eq!(
        task["gpus"],
        serde_json::json!(["fake-gpu-2", "fake-gpu-3"]),
        "{task}"
    );
    let echo = "echo cuda=$CUDA_VISIBLE_DEVICES";
    let second = c.mezz(&[&two[..], &["--", "sh", "-c", echo]].concat(), T);
    let stdout = text(&second.stdout);
    assert_eq!(
        second.status.code(),
        Some(0),
        "{stdout}{}",
        text(&second.stderr)
    );
    assert!(stdout.contains("cuda=0,1"), "{stdout}");
    let _ = c.mezz(&["kill", &first_id], T);
}

#[test]
#[ignore = "needs root and cgroups"]
fn without_a_driver_nvml_says_so_once() {
    need_root_cgroups();
    if Path::new("/dev/nvidiactl").exists() {
        eprintln!("this machine has an NVIDIA driver; the fallback line is not expected");
        return;
    }
    let c = Cluster::start_with_agent_args("cpus:1;mem:512", &["--gpus", "auto"]);
    let agent = c.agents[0].as_ref().unwrap();
    wait_for("the NVML fallback line", T, || {
        agent.log_text().contains("NVML is not available")
    });
    let log = agent.log_text();
    assert!(log.contains("advertising no GPUs"), "{log}");
    assert_eq!(log.matches("NVML is not available").count(), 1, "{log}");
}

#[test]
#[ignore = "needs root and cgroups"]
fn memory_limit_fails_the_task_with_the_memory_reason() {
    need_root_cgroups();
    let c = Cluster::start("cpus:2;mem:2048;disk:1000;ports:[31000-31100]", &[]);
    let out = c.mezz(
        &[
            "run",
            "--name",
            "hog",
            "--cpus",
            "0.1",
            "--mem",
            "64",
            "--",
            "python3 -c 'x = bytearray(400 * 1024 * 1024)'",
        ],
        T,
    );
    assert_ne!(out.status.code(), Some(0));
    let tasks = c.state()["tasks"].clone();
    let hog = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "hog")
        .cloned()
        .unwrap_or_else(|| panic!("no task 'hog' in {tasks}"));
    assert_eq!(hog["state"], "FAILED", "{hog}");
    assert!(
        hog["message"]
            .as_str()
            .unwrap_or("")
            .contains("memory limit exceeded"),
        "{hog}"
    );
}

fn task_cgroups(task_id: &str) -> Vec<String> {
    std::fs::read_dir("/sys/fs/cgroup/memory/mezzanine")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{task_id}.")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root and cgroups"]
fn a_task_in_a_cgroup_survives_an_agent_restart() {
    need_root_cgroups();
    let mut c = Cluster::start("cpus:2;mem:2048;disk:1000;ports:[31000-31100]", &[]);
    let out = c.mezz(
        &[
            "run",
            "--detach",
            "--cpus",
            "0.1",
            "--mem",
            "64",
            "--",
            "sleep 3; exit 3",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    c.wait_task_state(&id, "RUNNING", T);
    let v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
    if v1 {
        assert_eq!(task_cgroups(&id).len(), 1, "the task has no cgroup");
    }
    c.agents[0].as_mut().unwrap().kill9();
    c.start_agent(0);
    c.wait_agents_connected(1);
    assert_eq!(c.task(&id).unwrap()["state"], "RUNNING");
    let t = c.wait_task_state(&id, "FAILED", T);
    assert_eq!(t["exit_code"], 3, "{t}");
    if v1 {
        assert!(
            task_cgroups(&id).is_empty(),
            "the recovered task's cgroup was not removed"
        );
    }
}
