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
    /// Health check failures this long after a replica starts do not
    /// count, until its first success (loading a model takes time).
    #[serde(default = "default_grace")]
    pub health_grace_secs: f64,
    /// The command, run by `/bin/sh -c`.
    pub command: String,
}

fn default_grace() -> f64 {
    120.0
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
    /// The service version the slot runs.
    #[serde(default)]
    pub version: u64,
    /// That version's command.
    #[serde(default)]
    pub command: String,
    /// A canary replica: it takes the canary's share of the traffic and
    /// is not counted among the replicas.
    #[serde(default)]
    pub canary: bool,
}

/// A canary: one replica of another command taking a share of the
/// requests.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Canary {
    /// Its version.
    pub version: u64,
    /// Its command.
    pub command: String,
    /// Its share of the requests, in percent (1 to 99).
    pub weight: u32,
}

/// A rolling update under way.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Update {
    /// The version being replaced, and its command: what a failing update
    /// goes back to.
    pub from_version: u64,
    /// The command of `from_version`.
    pub from_command: String,
    /// This is the way back from a failed update: it is not rolled back
    /// again.
    #[serde(default)]
    pub rolling_back: bool,
    /// How fast it goes.
    #[serde(default)]
    pub pace: Pace,
}

/// How a rolling update trades spare capacity for speed (Kubernetes' and
/// Nomad's two knobs): at most `max_surge` replicas more than wanted run
/// at once, and at most `max_unavailable` fewer than wanted are healthy.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pace {
    /// New replicas started beyond the number wanted.
    pub max_surge: u32,
    /// Replicas the service may be short of healthy ones.
    pub max_unavailable: u32,
}

impl Default for Pace {
    /// One new replica at a time, never one healthy replica fewer.
    fn default() -> Pace {
        Pace {
            max_surge: 1,
            max_unavailable: 0,
        }
    }
}

impl Pace {
    /// Refuses a pace at which an update could never move.
    ///
    /// ```
    /// use mezz_serving::service::Pace;
    /// assert!(Pace { max_surge: 0, max_unavailable: 0 }.validate().is_err());
    /// assert!(Pace { max_surge: 0, max_unavailable: 1 }.validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_surge == 0 && self.max_unavailable == 0 {
            return Err(Error::BadRequest(
                "--max-surge 0 with --max-unavailable 0 leaves the update no room to move: allow one of them at least 1".into(),
            ));
        }
        Ok(())
    }
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
    /// The version `spec.command` is: 1 at deploy, one more per update.
    #[serde(default)]
    pub version: u64,
    /// The highest version ever given, a rolled-back one included: the
    /// next update's is one more.
    #[serde(default)]
    pub last_version: u64,
    /// The rolling update under way, if any.
    #[serde(default)]
    pub update: Option<Update>,
    /// The canary, if any.
    #[serde(default)]
    pub canary: Option<Canary>,
    /// What the last update came to (e.g. why it was rolled back).
    #[serde(default)]
    pub note: String,
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
        if !(self.health_grace_secs.is_finite() && self.health_grace_secs >= 0.0) {
            return Err(Error::BadRequest(
                "--health-grace must be a duration, e.g. 2m".into(),
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
            health_grace_secs: 120.0,
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
