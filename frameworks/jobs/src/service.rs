//! Jobs whose attempt is a long-running service of another framework of
//! this tree: `kind: jupyter` (a notebook server of the Jupyter framework)
//! and `kind: serve` (a deployment of the serving framework: replicas
//! behind a proxy, health-checked). The file's `jupyter:` or `serve:`
//! section holds what `mezz jupyter start` and `mezz serve deploy` take as
//! flags; the job's resources size the notebook or each replica, and a
//! served job's `command`, `env` and `workdir` make each replica's command.
//!
//! The service is named after the job (dots become `-`: a scheduled run
//! `demo.1796612400` serves as `demo-1796612400`), so `mezz jupyter url`
//! and `mezz serve show` find it by that name. An attempt starts the
//! service (or takes back the one of that name that runs), is RUNNING once
//! the notebook answers or every replica is healthy, and ends FINISHED
//! when the service is stopped or removed by its own command (or when a
//! notebook stops idle), FAILED when it cannot start, and KILLED when the
//! job is killed, which stops the service. The runner lives with the
//! command line, which holds both frameworks' clients.

use serde::{Deserialize, Serialize};

/// The `jupyter:` section: the notebook server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JupyterSection {
    /// Stop the server after this long without activity (`30m`); default
    /// never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Where the notebook files live on the agent's host (absolute);
    /// default `$MEZZ_JUPYTER_NOTEBOOKS/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notebook_dir: Option<String>,
    /// The Python that runs the server (default `python3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

/// The `serve:` section: the deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// Replicas (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// The path the health check asks each replica (default `/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// The variable that carries a replica's port (default `PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_env: Option<String>,
    /// Failed health checks this soon after a replica starts do not count
    /// (default `2m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_grace: Option<String>,
}

/// Memory (MB) of a notebook that names neither a size nor `mem`, as
/// `mezz jupyter start`.
pub const JUPYTER_MEM: f64 = 1024.0;
/// Memory (MB) of a replica that names neither a size nor `mem`, as `mezz
/// serve deploy`.
pub const SERVE_MEM: f64 = 512.0;

/// The service's name: the job's, with `.` made `-` (notebook and service
/// names are letters, digits, `-` and `_`).
pub fn service_name(job: &str) -> String {
    job.replace('.', "-")
}

fn duration(field: &str, text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{field}: '{text}' is not a duration ({e}); write e.g. 30m or 2h"))
}

impl JupyterSection {
    /// Checks what can be checked anywhere: the durations and paths.
    pub fn check(&self) -> Result<(), String> {
        if let Some(t) = &self.idle_timeout {
            if duration("`jupyter.idle_timeout`", t)?.is_zero() {
                return Err("`jupyter.idle_timeout`: must be longer than 0".into());
            }
        }
        if let Some(d) = &self.notebook_dir {
            if !d.starts_with('/') {
                return Err(format!(
                    "`jupyter.notebook_dir`: '{d}' is not an absolute path"
                ));
            }
        }
        Ok(())
    }

    /// The idle timeout, once checked.
    pub fn idle_timeout(&self) -> Result<Option<std::time::Duration>, String> {
        self.idle_timeout
            .as_deref()
            .map(|t| duration("`jupyter.idle_timeout`", t))
            .transpose()
    }
}

impl ServeSection {
    /// Checks what can be checked anywhere; the serving framework checks
    /// the whole request again when it is deployed.
    pub fn check(&self) -> Result<(), String> {
        if self.replicas == Some(0) {
            return Err("`serve.replicas`: a deployment needs at least one replica".into());
        }
        if let Some(p) = &self.health_path {
            if !p.starts_with('/') {
                return Err(format!("`serve.health_path`: '{p}' does not start with /"));
            }
        }
        if let Some(e) = &self.port_env {
            let ok = !e.is_empty()
                && !e.starts_with(|c: char| c.is_ascii_digit())
                && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(format!(
                    "`serve.port_env`: '{e}' is not an environment variable name"
                ));
            }
        }
        self.health_grace()?;
        Ok(())
    }

    /// The health grace (default two minutes).
    pub fn health_grace(&self) -> Result<std::time::Duration, String> {
        match &self.health_grace {
            Some(t) => duration("`serve.health_grace`", t),
            None => Ok(std::time::Duration::from_secs(120)),
        }
    }
}

/// The job file (as JSON) of the notebook that `mezz jupyter start`'s
/// flags ask for.
pub fn jupyter_job_file(
    name: &str,
    (cpus, mem, gpus): (f64, f64, u32),
    section: &JupyterSection,
) -> serde_json::Value {
    serde_json::json!({
        "kind": "jupyter", "name": name, "cpus": cpus, "mem": mem, "gpus": gpus,
        "jupyter": section,
    })
}

/// The job file (as JSON) of the deployment that `mezz serve deploy`'s
/// flags ask for; each replica runs `command` through the shell.
pub fn serve_job_file(
    name: &str,
    (cpus, mem, gpus): (f64, f64, u32),
    command: &str,
    section: &ServeSection,
) -> serde_json::Value {
    serde_json::json!({
        "kind": "serve", "name": name, "cpus": cpus, "mem": mem, "gpus": gpus,
        "command": command, "serve": section,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_checked_and_services_named_after_the_job() {
        assert_eq!(service_name("demo.1796612400"), "demo-1796612400");
        assert!(JupyterSection::default().check().is_ok());
        let j = JupyterSection {
            notebook_dir: Some("notes".into()),
            ..Default::default()
        };
        assert!(j.check().unwrap_err().contains("absolute"));
        let s = ServeSection {
            replicas: Some(0),
            ..Default::default()
        };
        assert!(s.check().unwrap_err().contains("at least one replica"));
        let s = ServeSection {
            health_grace: Some("soon".into()),
            ..Default::default()
        };
        assert!(s.check().unwrap_err().contains("`serve.health_grace`"));
        assert_eq!(
            ServeSection::default().health_grace().unwrap().as_secs(),
            120
        );
    }

    #[test]
    fn the_flags_job_files_read_back() {
        let sizes = mezz_sdk::sizes::Sizes::builtin();
        let s = ServeSection {
            replicas: Some(3),
            health_grace: Some("30s".into()),
            ..Default::default()
        };
        let file = serve_job_file("echo", (0.5, 128.0, 0), "python3 -m http.server $PORT", &s);
        let job = crate::JobSpec::parse(&file.to_string(), &sizes).unwrap();
        assert_eq!(job.serve.as_ref(), Some(&s));
        assert_eq!((job.cpus, job.mem), (0.5, 128.0));
        let j = JupyterSection {
            idle_timeout: Some("1h".into()),
            ..Default::default()
        };
        let file = jupyter_job_file("explore", (1.0, 2048.0, 1), &j);
        let job = crate::JobSpec::parse(&file.to_string(), &sizes).unwrap();
        assert_eq!(job.jupyter.as_ref(), Some(&j));
        assert_eq!(job.gpus, 1);
    }
}
