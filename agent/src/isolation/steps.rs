//! The steps that isolate one task run, in the manner of Mesos isolators
//! (prepare / recover / cleanup) and Nomad's task-runner hooks: an ordered
//! list the launch runs through. Before the wrapper spawns, each step's
//! `prepare` fills in its part of the run's launch spec (and creates what
//! the run needs); at agent start each step's `recover` removes what it
//! left behind for runs no longer on record; when a run ends, `cleanup`
//! releases what `prepare` made, in reverse order. [`Steps::standard`] is
//! the agent's list: GPUs, user, cgroup, namespaces. The order matters:
//! the cgroup step denies the GPUs the GPU step did not give, and the
//! namespace step hides what the task must not see.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mezz_proto::v1::TaskInfo;

use super::{Isolator, Limits, Selected};
use crate::gpu::Gpu;
use crate::launch_spec::LaunchSpec;
use crate::task_user::RunAs;

/// Where the host mounts its cgroup hierarchies; tasks see it read-only.
pub const CGROUP_MOUNTS: &str = "/sys/fs/cgroup";

/// One task run on its way to the wrapper, as the steps see it.
pub struct Run<'a> {
    /// The task as launched.
    pub task: &'a TaskInfo,
    /// Who its command runs as.
    pub run_as: &'a RunAs,
    /// The name of the run's cgroup (see [`super::run_cgroup_name`]).
    pub cgroup_name: &'a str,
    /// The launch spec the steps fill in.
    pub spec: &'a mut LaunchSpec,
    /// Minors of the agent's GPUs the task was not given: the GPU step
    /// sets them, the cgroup step denies them.
    pub denied_gpu_minors: Vec<u32>,
    /// The cgroup made for the run (relative to the hierarchies), once the
    /// cgroup step has made it; the launch checkpoints it.
    pub cgroup: Option<String>,
}

/// What the steps learned from a run that ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ended {
    /// The kernel's OOM killer acted in the run's cgroup.
    pub oom_killed: bool,
    /// The CPU time the run's processes used, in seconds.
    pub cpu_seconds: Option<f64>,
    /// The most memory the run's cgroup held at once, in bytes.
    pub peak_memory_bytes: Option<u64>,
}

/// What `recover` is told about the runs the agent still has on record.
pub struct Known {
    /// This agent's tag (see [`super::owner_tag`]).
    pub owner: String,
    /// The cgroups of every run on record.
    pub cgroups: HashSet<String>,
}

/// One step of a run's isolation.
pub trait Step: Send + Sync {
    /// Its name, for logs and errors.
    fn name(&self) -> &'static str;
    /// Before the wrapper spawns: fill in the spec, make what the run
    /// needs. An error fails the launch and names what is wrong.
    fn prepare(&self, run: &mut Run<'_>) -> Result<(), String>;
    /// At agent start, before any launch: remove what this step left for
    /// runs not in `known`; returns a line for each thing removed.
    fn recover(&self, _known: &Known) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    /// After the run ended (or failed to start): release what `prepare`
    /// made for the run whose cgroup is `cgroup`. Idempotent.
    fn cleanup(&self, _cgroup: &str, _ended: &mut Ended) -> Result<(), String> {
        Ok(())
    }
}

/// The GPUs a task was given: their environment (`CUDA_VISIBLE_DEVICES`,
/// `MEZZ_GPU_DEVICES`) and the minors of the others, to deny.
pub struct GpuStep {
    /// This machine's GPUs.
    pub gpus: Vec<Gpu>,
}

impl Step for GpuStep {
    fn name(&self) -> &'static str {
        "gpus"
    }

    fn prepare(&self, run: &mut Run<'_>) -> Result<(), String> {
        let given: Vec<String> = crate::resources::of_task(run.task)
            .set_items(crate::gpu::RESOURCE)
            .into_iter()
            .map(str::to_string)
            .collect();
        let gpus = crate::gpu::assign(&self.gpus, &given)?;
        run.spec.env.extend(gpus.env);
        run.denied_gpu_minors = gpus.denied_minors;
        Ok(())
    }
}

/// The user the command runs as, and its `USER`.
pub struct UserStep;

impl Step for UserStep {
    fn name(&self) -> &'static str {
        "user"
    }

    fn prepare(&self, run: &mut Run<'_>) -> Result<(), String> {
        if let RunAs::User(a) = run.run_as {
            run.spec.env.insert("USER".into(), a.name.clone());
            run.spec.user = Some(a.name.clone());
        }
        Ok(())
    }
}

/// The run's cgroup, through the isolator: created with the task's limits
/// (and the GPUs it was not given denied), joined by the command, removed
/// with whatever is left in it when the run ends.
pub struct CgroupStep {
    /// The cgroup backend.
    pub isolator: Arc<dyn Isolator>,
    /// The bound of every task's `pids.max`.
    pub pids_cap: u64,
}

impl Step for CgroupStep {
    fn name(&self) -> &'static str {
        "cgroup"
    }

    fn prepare(&self, run: &mut Run<'_>) -> Result<(), String> {
        let mut limits = Limits::of_task(run.task, self.pids_cap);
        limits.denied_gpu_minors = run.denied_gpu_minors.clone();
        let prepared = self
            .isolator
            .prepare(run.cgroup_name, &limits)
            .map_err(|e| e.to_string())?;
        run.cgroup = Some(prepared.cgroup);
        run.spec.cgroup_procs = prepared.procs_files;
        Ok(())
    }

    fn recover(&self, known: &Known) -> Result<Vec<String>, String> {
        self.isolator
            .recover(&known.owner, &known.cgroups)
            .map(|removed| {
                removed
                    .into_iter()
                    .map(|c| format!("cgroup '{c}'"))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    fn cleanup(&self, cgroup: &str, ended: &mut Ended) -> Result<(), String> {
        // Asked before the cgroup goes, with its accounting.
        ended.oom_killed |= self.isolator.oom_killed(cgroup);
        ended.cpu_seconds = self.isolator.cpu_usage_ns(cgroup).map(|ns| ns as f64 / 1e9);
        ended.peak_memory_bytes = self.isolator.peak_memory_bytes(cgroup);
        self.isolator.cleanup(cgroup).map_err(|e| e.to_string())
    }
}

/// The task's own PID, mount and UTS namespaces (made by the wrapper): its
/// hostname is its task id, the agent's work dir and the hidden paths are
/// out of sight, the directories of GPU nodes inside them come back, and
/// the cgroup mounts are read-only.
pub struct NamespaceStep {
    /// Tasks get their own namespaces.
    pub enabled: bool,
    /// What tasks must not see.
    pub hidden: Vec<PathBuf>,
    /// The directories of the machine's GPU device nodes.
    pub gpu_dirs: Vec<PathBuf>,
}

impl NamespaceStep {
    /// The step for `gpus`: fake GPU nodes live in the work dir, which is
    /// hidden, so their directory comes back (the wrapper binds back only
    /// what a hidden directory covers; /dev is not).
    pub fn new(enabled: bool, hidden: Vec<PathBuf>, gpus: &[Gpu]) -> Self {
        let mut gpu_dirs: Vec<PathBuf> = gpus
            .iter()
            .filter_map(|g| g.device.parent())
            .map(Path::to_path_buf)
            .collect();
        gpu_dirs.dedup();
        NamespaceStep {
            enabled,
            hidden,
            gpu_dirs,
        }
    }
}

impl Step for NamespaceStep {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    fn prepare(&self, run: &mut Run<'_>) -> Result<(), String> {
        run.spec.namespaces = self.enabled;
        run.spec.hostname = Some(run.task.task_id.clone());
        if self.enabled {
            run.spec.hide = self.hidden.clone();
            run.spec.expose = self.gpu_dirs.clone();
            run.spec.read_only = vec![PathBuf::from(CGROUP_MOUNTS)];
        }
        Ok(())
    }
}

/// The ordered steps of every launch.
pub struct Steps {
    steps: Vec<Box<dyn Step>>,
}

impl Steps {
    /// These steps, in this order.
    pub fn new(steps: Vec<Box<dyn Step>>) -> Self {
        Steps { steps }
    }

    /// The agent's steps: GPUs, user, cgroup, namespaces.
    pub fn standard(isolation: &Selected, gpus: &[Gpu], hidden: &[PathBuf]) -> Self {
        Steps::new(vec![
            Box::new(GpuStep {
                gpus: gpus.to_vec(),
            }),
            Box::new(UserStep),
            Box::new(CgroupStep {
                isolator: Arc::clone(&isolation.isolator),
                pids_cap: isolation.pids_cap,
            }),
            Box::new(NamespaceStep::new(
                isolation.namespaces,
                hidden.to_vec(),
                gpus,
            )),
        ])
    }

    /// The steps' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.name()).collect()
    }

    /// Runs every step's `prepare` in order and stops at the first error.
    /// What the steps before it made stays in `run` (its cgroup) for the
    /// caller to record and clean up, as after any failed launch.
    pub fn prepare(&self, run: &mut Run<'_>) -> Result<(), String> {
        self.steps.iter().try_for_each(|s| s.prepare(run))
    }

    /// Every step's `recover`, in order: the lines of what was removed. A
    /// step that fails is logged; the others still run.
    pub fn recover(&self, known: &Known) -> Vec<String> {
        let mut removed = Vec::new();
        for step in &self.steps {
            match step.recover(known) {
                Ok(lines) => removed.extend(lines),
                Err(e) => tracing::warn!("recovering {}: {e}", step.name()),
            }
        }
        removed
    }

    /// Every step's `cleanup` for the run whose cgroup is `cgroup`, in
    /// reverse order. Each runs even when one before it failed; the errors
    /// come back with what was learned.
    pub fn cleanup(&self, cgroup: &str) -> (Ended, Vec<String>) {
        let mut ended = Ended::default();
        let mut errors = Vec::new();
        for step in self.steps.iter().rev() {
            if let Err(e) = step.cleanup(cgroup, &mut ended) {
                errors.push(e);
            }
        }
        (ended, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuUuid;
    use crate::isolation::none::NoIsolation;
    use crate::task_user::Account;
    use mezz_proto::v1::{resource, Resource, Set};

    fn gpu(index: u32, dir: &str) -> Gpu {
        Gpu {
            id: GpuUuid(format!("GPU-{index}")),
            index,
            minor: index,
            name: "Fake".into(),
            memory_mb: 1024,
            device: PathBuf::from(format!("{dir}/nvidia{index}")),
        }
    }

    fn task(gpus: &[&str]) -> TaskInfo {
        let mut t = TaskInfo {
            task_id: "web".into(),
            ..Default::default()
        };
        if !gpus.is_empty() {
            t.resources.push(Resource {
                name: crate::gpu::RESOURCE.into(),
                value: Some(resource::Value::Set(Set {
                    item: gpus.iter().map(|s| s.to_string()).collect(),
                })),
                ..Default::default()
            });
        }
        t
    }

    fn selected(namespaces: bool) -> Selected {
        Selected {
            isolator: Arc::new(NoIsolation),
            namespaces,
            pids_cap: 1000,
        }
    }

    fn prepare(
        steps: &Steps,
        task: &TaskInfo,
        run_as: &RunAs,
    ) -> (LaunchSpec, Result<(), String>, Option<String>) {
        let mut spec = LaunchSpec {
            argv: vec!["true".into()],
            env: Default::default(),
            cwd: PathBuf::from("/sb"),
            stdout: PathBuf::from("/sb/stdout"),
            stderr: PathBuf::from("/sb/stderr"),
            exit_status: PathBuf::from("/sb/.mezz/exit_status.json"),
            child_pid: PathBuf::from("/sb/.mezz/child.pid"),
            cgroup_procs: Vec::new(),
            namespaces: false,
            hostname: None,
            user: None,
            hide: Vec::new(),
            expose: Vec::new(),
            read_only: Vec::new(),
        };
        let mut run = Run {
            task,
            run_as,
            cgroup_name: "web.0123abcd.a1",
            spec: &mut spec,
            denied_gpu_minors: Vec::new(),
            cgroup: None,
        };
        let r = steps.prepare(&mut run);
        let cgroup = run.cgroup.take();
        (spec, r, cgroup)
    }

    #[test]
    fn the_standard_steps_run_in_order() {
        let steps = Steps::standard(&selected(true), &[], &[]);
        assert_eq!(steps.names(), ["gpus", "user", "cgroup", "namespaces"]);
    }

    #[test]
    fn each_step_fills_in_its_part_of_the_spec() {
        let gpus = [gpu(0, "/w/dev"), gpu(1, "/w/dev")];
        let hidden = [PathBuf::from("/w")];
        let steps = Steps::standard(&selected(true), &gpus, &hidden);
        let alice = RunAs::User(Account {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
        });
        let (spec, r, cgroup) = prepare(&steps, &task(&["GPU-1"]), &alice);
        r.unwrap();
        assert_eq!(
            spec.env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
            Some("1")
        );
        assert_eq!(spec.env.get("USER").map(String::as_str), Some("alice"));
        assert_eq!(spec.user.as_deref(), Some("alice"));
        assert_eq!(cgroup.as_deref(), Some("web.0123abcd.a1"));
        assert!(spec.namespaces);
        assert_eq!(spec.hostname.as_deref(), Some("web"));
        assert_eq!(spec.hide, hidden);
        assert_eq!(spec.expose, [PathBuf::from("/w/dev")]);
        assert_eq!(spec.read_only, [PathBuf::from(CGROUP_MOUNTS)]);
    }

    #[test]
    fn without_namespaces_nothing_is_hidden_and_the_agents_user_is_kept() {
        let steps = Steps::standard(
            &selected(false),
            &[gpu(0, "/w/dev")],
            &[PathBuf::from("/w")],
        );
        let (spec, r, _) = prepare(&steps, &task(&[]), &RunAs::Agent);
        r.unwrap();
        assert!(!spec.namespaces);
        assert_eq!(spec.hostname.as_deref(), Some("web"));
        assert!(spec.hide.is_empty() && spec.expose.is_empty() && spec.read_only.is_empty());
        assert_eq!(spec.user, None);
        assert!(!spec.env.contains_key("USER"));
        assert!(!spec.env.contains_key("CUDA_VISIBLE_DEVICES"));
    }

    /// Records what it saw; fails when told to.
    struct Probe {
        fail: bool,
        seen: std::sync::Mutex<Vec<String>>,
    }
    impl Step for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn prepare(&self, run: &mut Run<'_>) -> Result<(), String> {
            self.seen
                .lock()
                .unwrap()
                .push(format!("denied {:?}", run.denied_gpu_minors));
            if self.fail {
                Err("probe says no".into())
            } else {
                Ok(())
            }
        }
        fn cleanup(&self, cgroup: &str, ended: &mut Ended) -> Result<(), String> {
            self.seen.lock().unwrap().push(format!("cleanup {cgroup}"));
            ended.oom_killed = true;
            Err("cleanup failed".into())
        }
    }

    #[test]
    fn a_failing_step_stops_the_launch_and_later_steps_see_earlier_ones() {
        let probe = Arc::new(Probe {
            fail: true,
            seen: Default::default(),
        });
        struct Shared(Arc<Probe>);
        impl Step for Shared {
            fn name(&self) -> &'static str {
                self.0.name()
            }
            fn prepare(&self, run: &mut Run<'_>) -> Result<(), String> {
                self.0.prepare(run)
            }
            fn cleanup(&self, cgroup: &str, ended: &mut Ended) -> Result<(), String> {
                self.0.cleanup(cgroup, ended)
            }
        }
        let steps = Steps::new(vec![
            Box::new(GpuStep {
                gpus: vec![gpu(0, "/dev"), gpu(1, "/dev")],
            }),
            Box::new(Shared(Arc::clone(&probe))),
            Box::new(UserStep),
        ]);
        let alice = RunAs::User(Account {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
        });
        let (spec, r, _) = prepare(&steps, &task(&["GPU-0"]), &alice);
        assert_eq!(r.unwrap_err(), "probe says no");
        // The GPU step ran before it, the user step never did.
        assert_eq!(*probe.seen.lock().unwrap(), ["denied [1]"]);
        assert_eq!(spec.user, None);
        // Cleanup runs every step and reports what failed.
        let (ended, errors) = steps.cleanup("mezzanine/web.1");
        assert!(ended.oom_killed);
        assert_eq!(errors, ["cleanup failed"]);
        // A GPU the agent does not have fails at the GPU step.
        let (_, r, _) = prepare(&steps, &task(&["GPU-9"]), &alice);
        assert!(r.unwrap_err().contains("GPU-9"));
    }
}
