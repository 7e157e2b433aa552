//! Agent-side launch overhead: sandbox, cgroup creation and limits, launch
//! spec, wrapper spawn, namespaces, command exec, up to the wrapper's
//! `started PID` line (the moment the agent reports RUNNING); then teardown:
//! SIGKILL to the task, wrapper reaped, cgroup emptied and removed.
//!
//!     sudo cargo bench -p mezz-agent --bench launch_overhead [-- RUNS]
//!
//! Needs root and cgroups for the isolated figures; without them it
//! measures the unisolated path and says so. `MEZZ_BENCH_WRAPPER=PATH`
//! runs another wrapper program (the static one `mezz` installs as
//! `<work-dir>/bin/mezz-task-wrapper`, say) instead of this crate's.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mezz_agent::executor;
use mezz_agent::isolation::{self, IsolationMode, Limits};
use mezz_agent::launch_spec::LaunchSpec;

const WRAPPER: &str = env!("CARGO_BIN_EXE_task-wrapper");

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let wrapper_program = std::env::var("MEZZ_BENCH_WRAPPER").unwrap_or_else(|_| WRAPPER.into());
    let sel = isolation::select(IsolationMode::Auto, "mezzanine-bench", None).expect("isolation");
    println!(
        "isolation: {} cgroups, namespaces: {}; wrapper {wrapper_program}; {runs} runs of `sleep 600`",
        sel.isolator.kind(),
        sel.namespaces
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        cpus: 0.5,
        mem_mb: 128.0,
        pids_max: 256,
        denied_gpu_minors: vec![0, 1],
    };
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let (mut cg, mut files) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let t0 = Instant::now();
        let sandbox = dir.path().join(format!("t{i}"));
        executor::prepare_sandbox(&sandbox, None).expect("sandbox");
        let tc = Instant::now();
        let prepared = sel
            .isolator
            .prepare(&format!("bench{i}"), &limits)
            .expect("cgroup");
        cg.push(tc.elapsed());
        let meta = sandbox.join(".mezz");
        let spec = LaunchSpec {
            argv: vec!["sleep".into(), "600".into()],
            env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
            cwd: sandbox.clone(),
            stdout: sandbox.join("stdout"),
            stderr: sandbox.join("stderr"),
            exit_status: meta.join("exit_status.json"),
            child_pid: meta.join("child.pid"),
            cgroup_procs: prepared.procs_files.clone(),
            namespaces: sel.namespaces,
            hostname: Some(format!("bench{i}")),
            user: None,
            hide: Vec::new(),
            expose: Vec::new(),
            read_only: Vec::new(),
        };
        let spec_path = executor::write_spec(&sandbox, &spec).expect("spec");
        files.push(t0.elapsed() - cg[cg.len() - 1]);
        let mut wrapper = Command::new(&wrapper_program)
            .arg("__launch")
            .arg(&spec_path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("wrapper");
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().expect("pipe"))
            .read_line(&mut line)
            .expect("start line");
        up.push(t0.elapsed());
        let pgid: i32 = line
            .trim()
            .strip_prefix("started ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("wrapper said '{line}'"));
        let t1 = Instant::now();
        executor::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = wrapper.wait();
        sel.isolator.cleanup(&prepared.cgroup).expect("cleanup");
        down.push(t1.elapsed());
    }
    report("launch to RUNNING", &mut up);
    report("teardown", &mut down);
    report("  of which cgroup", &mut cg);
    report("  of which files", &mut files);
}

fn report(what: &str, v: &mut [Duration]) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<18} median {:.2} ms   p99 {:.2} ms   min {:.2} ms   max {:.2} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(v[0]),
        ms(v[v.len() - 1])
    );
}
