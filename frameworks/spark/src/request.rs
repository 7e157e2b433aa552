//! What a submitter asks for, before Java and Spark are found: the one
//! form that `mezz spark submit`'s flags and a job file's `spark:` section
//! (`kind: spark`) both fill in, turned into an [`AppSpec`] by
//! [`AppRequest::resolve`] for both. Field names in errors come from the
//! caller (`--executors` on the command line, `spark.executors` in a job
//! file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mezz_sdk::sizes::Size;
use serde::{Deserialize, Serialize};

use crate::app::{parse_memory_mb, AppSpec, Role, SparkInstall, WORKER_OVERHEAD_MB};
use crate::locate::{find_java, find_spark, python_path};

/// Executors of an application that does not say.
pub const DEFAULT_EXECUTORS: u32 = 2;
/// Workers replaced at most over an application's life, unless it says.
pub const DEFAULT_MAX_REPLACEMENTS: u32 = 3;

/// An application as asked for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRequest {
    /// The application: a `.py` file or a jar.
    pub app: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// The main class of a jar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Executors, each on a worker task of its own (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executors: Option<u32>,
    /// Cores of each executor (default 1, or the size's CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_cores: Option<u32>,
    /// Heap of each executor, `512m`, `2g` (default 1g, or the size's
    /// memory less the worker's overhead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_memory: Option<String>,
    /// Heap of the driver (default 1g).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_memory: Option<String>,
    /// Whole GPUs of each executor's worker task (default 0, or the
    /// size's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_per_executor: Option<u32>,
    /// Spark settings.
    #[serde(default)]
    pub conf: BTreeMap<String, String>,
    /// Python files for the executors' path.
    #[serde(default)]
    pub py_files: Vec<String>,
    /// The Python with pyspark, for the driver and the executors (default
    /// `$PYSPARK_PYTHON`, else `python3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// Spark's directory (default `$SPARK_HOME`, else the pyspark
    /// package).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spark_home: Option<String>,
    /// Workers replaced at most when they die while the application runs
    /// (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replacements: Option<u32>,
}

/// How big an application's tasks are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sizing {
    /// Executors.
    pub executors: u32,
    /// Cores of each.
    pub executor_cores: u32,
    /// Heap of each, MB.
    pub executor_memory_mb: u64,
    /// Heap of the driver, MB.
    pub driver_memory_mb: u64,
    /// GPUs of each worker task.
    pub gpus_per_executor: u32,
}

impl Sizing {
    /// What one agent must hold for the largest task of the application:
    /// CPUs, memory (MB) and GPUs.
    pub fn largest_task(&self) -> (f64, f64, u32) {
        let spec = AppSpec {
            executor_cores: self.executor_cores,
            executor_memory_mb: self.executor_memory_mb,
            driver_memory_mb: self.driver_memory_mb,
            ..placeholder()
        };
        let (mut cpus, mut mem) = (0.0f64, 0.0f64);
        for role in [Role::Master, Role::Worker(0), Role::Driver] {
            let r = spec.resources(role);
            cpus = cpus.max(r.scalar(mezz_sdk::CPUS));
            mem = mem.max(r.scalar(mezz_sdk::MEM));
        }
        (cpus, mem, self.gpus_per_executor)
    }
}

/// An application of nothing, for its sizes alone.
fn placeholder() -> AppSpec {
    AppSpec {
        id: String::new(),
        name: String::new(),
        app: PathBuf::new(),
        args: Vec::new(),
        class: None,
        executors: 0,
        executor_cores: 0,
        executor_memory_mb: 0,
        driver_memory_mb: 0,
        gpus_per_executor: 0,
        conf: Vec::new(),
        py_files: Vec::new(),
        install: SparkInstall {
            home: PathBuf::new(),
            java_home: None,
            python: None,
        },
    }
}

fn existing(path: &Path, what: &str) -> Result<PathBuf, String> {
    std::fs::canonicalize(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

impl AppRequest {
    /// The sizes of the application's tasks, from the request and the
    /// named `size` (which sizes each executor's worker task); `field`
    /// names a field in errors.
    pub fn sizing(
        &self,
        size: Option<&Size>,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Sizing, String> {
        let executors = self.executors.unwrap_or(DEFAULT_EXECUTORS);
        if executors == 0 {
            return Err(format!(
                "{} 0: an application needs at least one executor",
                field("executors")
            ));
        }
        let executor_cores = self
            .executor_cores
            .or_else(|| size.map(|s| (s.cpus.floor() as u32).max(1)))
            .unwrap_or(1);
        if executor_cores == 0 {
            return Err(format!(
                "{} 0: an executor needs at least one core",
                field("executor_cores")
            ));
        }
        let executor_memory_mb = match (&self.executor_memory, size) {
            (Some(m), _) => {
                parse_memory_mb(m).map_err(|e| format!("{}: {e}", field("executor_memory")))?
            }
            (None, Some(s)) => (s.mem as u64).saturating_sub(WORKER_OVERHEAD_MB).max(512),
            (None, None) => 1024,
        };
        let driver_memory_mb = parse_memory_mb(self.driver_memory.as_deref().unwrap_or("1g"))
            .map_err(|e| format!("{}: {e}", field("driver_memory")))?;
        for k in self.conf.keys() {
            if k.trim().is_empty() {
                return Err(format!("{}: a setting has an empty name", field("conf")));
            }
        }
        Ok(Sizing {
            executors,
            executor_cores,
            executor_memory_mb,
            driver_memory_mb,
            gpus_per_executor: self.gpus_per_executor.or(size.map(|s| s.gpus)).unwrap_or(0),
        })
    }

    /// The application `id` (task ids and the framework's name are made
    /// from it): files checked, Java and Spark found on this machine (the
    /// same paths must hold on every agent).
    pub fn resolve(
        &self,
        id: &str,
        size: Option<&Size>,
        field: &dyn Fn(&str) -> String,
    ) -> Result<AppSpec, String> {
        let s = self.sizing(size, field)?;
        let app = existing(Path::new(&self.app), "the application")?;
        let py_files = self
            .py_files
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| existing(Path::new(f), &field("py_files")).map(|p| p.display().to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let java_home = find_java().map_err(|e| e.to_string())?;
        let python = self
            .python
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("PYSPARK_PYTHON").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("python3"));
        let (home, pyspark_python) = find_spark(self.spark_home.as_deref().map(Path::new), &python)
            .map_err(|e| e.to_string())?;
        let is_python = app.extension().is_some_and(|e| e == "py");
        let python = pyspark_python.or_else(|| is_python.then(|| python_path(&python)));
        let name = app
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "spark".into());
        Ok(AppSpec {
            id: id.to_string(),
            name,
            app,
            args: self.args.clone(),
            class: self.class.clone(),
            executors: s.executors,
            executor_cores: s.executor_cores,
            executor_memory_mb: s.executor_memory_mb,
            driver_memory_mb: s.driver_memory_mb,
            gpus_per_executor: s.gpus_per_executor,
            conf: self
                .conf
                .iter()
                .map(|(k, v)| (k.trim().to_string(), v.clone()))
                .collect(),
            py_files,
            install: SparkInstall {
                home,
                java_home,
                python,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(f: &str) -> String {
        format!("--{}", f.replace('_', "-"))
    }

    #[test]
    fn sizes_come_from_the_request_then_the_size_then_defaults() {
        let r = AppRequest {
            app: "/x.py".into(),
            ..Default::default()
        };
        let s = r.sizing(None, &flag).unwrap();
        assert_eq!(
            (
                s.executors,
                s.executor_cores,
                s.executor_memory_mb,
                s.driver_memory_mb
            ),
            (2, 1, 1024, 1024)
        );
        let big = Size {
            cpus: 4.0,
            mem: 8192.0,
            gpus: 1,
        };
        let s = r.sizing(Some(&big), &flag).unwrap();
        assert_eq!(
            (s.executor_cores, s.executor_memory_mb, s.gpus_per_executor),
            (4, 8192 - 768, 1)
        );
        // The largest task is an executor's worker: its heap and overhead.
        assert_eq!(s.largest_task(), (4.0, 8192.0, 1));
        let r = AppRequest {
            executors: Some(0),
            ..r
        };
        assert_eq!(
            r.sizing(None, &flag).unwrap_err(),
            "--executors 0: an application needs at least one executor"
        );
    }
}
