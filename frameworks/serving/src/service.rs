//! A service's record (what is persisted), the deploy request and the
//! checks on them. Pure: no I/O.

use serde::{Deserialize, Serialize};

use crate::Error;

/// What `mezz serve deploy` asks for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeployRequest {
    /// The service's name.
    pub name: String,
    /// How many replicas.
    pub replicas: u32,
    /// CPUs per replica.
    pub cpus: f64,
    /// Memory per replica, MB.
    pub mem: f64,
    /// GPUs per replica.
    pub gpus: u32,
    /// The path the health check asks (`/health`).
    pub health_path: String,
    /// The environment variable that carries the replica's port.
    pub port_env: String,
    /// The command, run by `/bin/sh -c`.
    pub command: String,
}

/// One replica slot: a tracker key (its attempts are `KEY.N`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Slot {
    /// The tracker key.
    pub key: String,
    /// Set once the slot is being given up (scale down, rm): it is killed
    /// and forgotten, never replaced.
    #[serde(default)]
    pub retiring: bool,
    /// `HOST:PORT` of the current attempt, once placed: where the proxy
    /// sends requests, also after a restart of the daemon.
    #[serde(default)]
    pub address: Option<String>,
}

/// A service: the desired state, persisted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Service {
    /// What was asked, with the current replica count.
    pub spec: DeployRequest,
    /// The proxy's port on 127.0.0.1, fixed at deploy.
    pub proxy_port: u16,
    /// The replica slots, live and retiring.
    pub slots: Vec<Slot>,
    /// Set once `rm` was asked: the service goes when its replicas have.
    #[serde(default)]
    pub removing: bool,
}

impl Service {
    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.proxy_port)
    }
}

/// Service names: letters, digits, '-' and '_', up to 40, starting with a
/// letter or digit (they are part of task ids and file names).
///
/// ```
/// use mezz_serving::service::validate_name;
/// assert!(validate_name("resnet-50").is_ok());
/// assert!(validate_name("a/b").is_err());
/// assert!(validate_name("").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "'{name}' is not a service name: use up to 40 letters, digits, '-' and '_', starting with a letter or digit"
        )))
    }
}

impl DeployRequest {
    /// Checks everything that can be checked without the cluster.
    pub fn validate(&self) -> Result<(), Error> {
        validate_name(&self.name)?;
        if self.replicas == 0 {
            return Err(Error::BadRequest(
                "--replicas must be at least 1 (`mezz serve rm NAME` removes a service)".into(),
            ));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.cpus) || !positive(self.mem) {
            return Err(Error::BadRequest(
                "--cpus and --mem must be positive numbers".into(),
            ));
        }
        if !self.health_path.starts_with('/') {
            return Err(Error::BadRequest(format!(
                "--health-path '{}' must start with '/'",
                self.health_path
            )));
        }
        let env_ok = !self.port_env.is_empty()
            && !self.port_env.starts_with(|c: char| c.is_ascii_digit())
            && self
                .port_env
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !env_ok {
            return Err(Error::BadRequest(format!(
                "--port-env '{}' is not an environment variable name",
                self.port_env
            )));
        }
        if self.command.trim().is_empty() {
            return Err(Error::BadRequest(
                "no command: put it after `--`, e.g. `-- python3 model.py`".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> DeployRequest {
        DeployRequest {
            name: "m".into(),
            replicas: 2,
            cpus: 0.5,
            mem: 128.0,
            gpus: 0,
            health_path: "/health".into(),
            port_env: "PORT".into(),
            command: "python3 model.py".into(),
        }
    }

    #[test]
    fn bad_requests_are_named() {
        assert!(req().validate().is_ok());
        let e = DeployRequest {
            replicas: 0,
            ..req()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("--replicas"), "{e}");
        let e = DeployRequest {
            health_path: "health".into(),
            ..req()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("--health-path"), "{e}");
        let e = DeployRequest {
            port_env: "1X".into(),
            ..req()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("--port-env"), "{e}");
        let e = DeployRequest {
            command: " ".into(),
            ..req()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("no command"), "{e}");
    }
}
