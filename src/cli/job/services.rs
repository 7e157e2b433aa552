//! The attempts of jobs of kind `jupyter` and `serve` (see
//! [`mezz_jobs::service`]): each starts, or takes back, a notebook of the
//! Jupyter framework or a deployment of the serving framework, through
//! the same requests and clients as `mezz jupyter start` and `mezz serve
//! deploy` (each framework's daemon is started in the background when none
//! answers), follows it, and tells the jobs engine the attempt's statuses.

use std::time::Duration;

use anyhow::Result;
use mezz_jobs::engine::Event;
use mezz_jobs::gang::{AttemptHandle, AttemptStart};
use mezz_jobs::service::service_name;
use mezz_jobs::{JobSpec, Kind};
use mezz_sdk::proto;
use mezz_sdk::TaskState;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

/// How often a service is looked at.
const POLL: Duration = Duration::from_secs(1);
/// How long a stop on the job's kill is waited for.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// How an attempt's service ended.
struct End {
    state: TaskState,
    exit_code: Option<i32>,
    message: String,
}

impl End {
    fn failed(message: String) -> End {
        End {
            state: TaskState::Failed,
            exit_code: None,
            message,
        }
    }
}

/// One framework's service, as the follower needs it.
trait Service: Send + Sync {
    /// Starts it, unless one of that name runs already (taken back).
    async fn ensure(&self, spec: &JobSpec, name: &str) -> Result<()>;
    /// `None` once it is gone; else whether it is up (its agent then),
    /// or a failure that ends it.
    async fn look(&self, name: &str) -> Result<Option<Look>>;
    /// Stops it.
    async fn stop(&self, name: &str) -> Result<()>;
    /// What its end by its own command is called.
    fn gone(&self) -> &'static str;
}

enum Look {
    Starting,
    /// Up, on this agent, with news of where it answers.
    Up(String, String),
    Failed(String),
}

struct Notebooks(mezz_jupyter::Client);

/// The notebook a job of kind jupyter asks for, as `mezz jupyter start`
/// would (the Python is checked for Jupyter here).
fn notebook_request(spec: &JobSpec, name: &str) -> Result<mezz_jupyter::StartRequest> {
    let section = spec.jupyter.clone().unwrap_or_default();
    crate::cli::jupyter::start_request(
        Some(name.to_string()),
        (spec.cpus, spec.mem, spec.gpus),
        section.idle_timeout().map_err(anyhow::Error::msg)?,
        section.notebook_dir.as_deref().map(std::path::Path::new),
        section.python.as_deref().unwrap_or("python3"),
    )
}

/// The deployment a job of kind serve asks for, checked as `mezz serve
/// deploy` checks its own: each replica runs the job's command with its
/// env, in its workdir.
fn deployment_request(spec: &JobSpec, name: &str) -> Result<mezz_serving::DeployRequest> {
    let section = spec.serve.clone().unwrap_or_default();
    let mut command = String::new();
    for (k, v) in &spec.env {
        command += &format!("export {k}={}; ", shell_quote(v));
    }
    if let Some(w) = &spec.workdir {
        command += &format!("cd {} && ", shell_quote(w));
    }
    command += spec.command.as_deref().unwrap_or("true");
    let request = mezz_serving::DeployRequest {
        name: name.to_string(),
        replicas: section.replicas.unwrap_or(1),
        cpus: spec.cpus,
        mem: spec.mem,
        gpus: spec.gpus,
        health_path: section
            .health_path
            .clone()
            .unwrap_or_else(|| "/health".into()),
        port_env: section.port_env.clone().unwrap_or_else(|| "PORT".into()),
        health_grace_secs: section
            .health_grace()
            .map_err(anyhow::Error::msg)?
            .as_secs_f64(),
        command,
    };
    request.validate()?;
    Ok(request)
}

/// Checks a job of kind jupyter or serve as its attempt would start it,
/// before it is submitted; other kinds pass.
pub(super) fn check(spec: &JobSpec) -> Result<()> {
    let name = service_name(&spec.name);
    match spec.kind {
        Kind::Jupyter => notebook_request(spec, &name).map(drop),
        Kind::Serve => deployment_request(spec, &name).map(drop),
        _ => Ok(()),
    }
}

impl Service for Notebooks {
    async fn ensure(&self, spec: &JobSpec, name: &str) -> Result<()> {
        if self.0.get(name).await?.is_none() {
            self.0.start(&notebook_request(spec, name)?).await?;
        }
        Ok(())
    }

    async fn look(&self, name: &str) -> Result<Option<Look>> {
        Ok(self.0.get(name).await?.map(|v| match v.state.as_str() {
            "running" => Look::Up(
                v.agent_id.unwrap_or_default(),
                format!(
                    "the notebook answers at {} (`mezz jupyter url {name}` gives its token)",
                    v.url.unwrap_or_default()
                ),
            ),
            "failed" => Look::Failed(v.message),
            _ => Look::Starting,
        }))
    }

    async fn stop(&self, name: &str) -> Result<()> {
        Ok(self.0.stop(name).await?)
    }

    fn gone(&self) -> &'static str {
        "the notebook stopped (`mezz jupyter stop`, or idle past its timeout)"
    }
}

struct Deployments(mezz_serving::Client);

impl Service for Deployments {
    async fn ensure(&self, spec: &JobSpec, name: &str) -> Result<()> {
        if self.0.get(name).await?.is_none() {
            self.0.deploy(&deployment_request(spec, name)?).await?;
        }
        Ok(())
    }

    async fn look(&self, name: &str) -> Result<Option<Look>> {
        Ok(self.0.get(name).await?.map(|v| {
            if v.state == "running" {
                let agent = v
                    .replica_list
                    .iter()
                    .find_map(|r| r.agent_id.clone())
                    .unwrap_or_default();
                Look::Up(
                    agent,
                    format!(
                        "{} of {} replicas healthy behind {}",
                        v.healthy, v.replicas, v.url
                    ),
                )
            } else {
                Look::Starting
            }
        }))
    }

    async fn stop(&self, name: &str) -> Result<()> {
        Ok(self.0.remove(name).await?)
    }

    fn gone(&self) -> &'static str {
        "the deployment was removed (`mezz serve rm`)"
    }
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Follows `name` until it ends, or until `kill` turns true (then it is
/// stopped); tells `running` once when it is up.
async fn follow(
    service: &impl Service,
    spec: &JobSpec,
    name: &str,
    mut kill: watch::Receiver<bool>,
    running: &(dyn Fn(String, String) + Sync),
) -> End {
    if let Err(e) = service.ensure(spec, name).await {
        return End::failed(format!("{name} could not start: {e:#}"));
    }
    let mut up = false;
    loop {
        tokio::select! {
            _ = kill.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        if *kill.borrow() {
            return stop(service, name).await;
        }
        match service.look(name).await {
            Ok(None) => {
                return End {
                    state: TaskState::Finished,
                    exit_code: Some(0),
                    message: service.gone().into(),
                }
            }
            Ok(Some(Look::Up(agent, news))) if !up => {
                up = true;
                running(agent, news);
            }
            Ok(Some(Look::Failed(why))) => {
                let _ = service.stop(name).await;
                return End::failed(format!("{name} failed: {why}"));
            }
            Ok(Some(_)) => {}
            // The framework's daemon may be restarting: look again.
            Err(e) => tracing::warn!(service = %name, "cannot look at the service: {e:#}"),
        }
    }
}

/// Stops `name` on the job's kill and waits for it to be gone.
async fn stop(service: &impl Service, name: &str) -> End {
    if let Err(e) = service.stop(name).await {
        tracing::warn!(service = %name, "stopping the service: {e:#}");
    }
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(None) = service.look(name).await {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    End {
        state: TaskState::Killed,
        exit_code: None,
        message: format!("{name} stopped on request"),
    }
}

/// Runs a service attempt (see the module's text) against `masters`,
/// telling `events` its statuses; the handle stops the service.
pub fn run(
    start: AttemptStart,
    masters: Vec<String>,
    events: UnboundedSender<Event>,
) -> AttemptHandle {
    let AttemptStart { spec, task_id } = start;
    let (kill_tx, kill_rx) = watch::channel(false);
    tokio::spawn(async move {
        let name = service_name(&spec.name);
        let tell = |state: TaskState, agent: &str, exit_code: Option<i32>, message: String| {
            let _ = events.send(Event::Status {
                role: spec.role.clone(),
                status: proto::TaskStatus {
                    task_id: task_id.clone(),
                    agent_id: agent.to_string(),
                    state: state as i32,
                    exit_code,
                    message,
                    timestamp: mezz_proto::unix_now(),
                    ..Default::default()
                },
            });
        };
        let running = |agent: String, news: String| {
            tracing::info!(attempt = %task_id, service = %name, "the service is up");
            tell(TaskState::Running, &agent, None, String::new());
            let _ = events.send(Event::Note {
                task_id: task_id.clone(),
                text: news,
            });
        };
        let end = match spec.kind {
            Kind::Jupyter => match crate::cli::jupyter::client_of(&masters).await {
                Ok(c) => follow(&Notebooks(c), &spec, &name, kill_rx, &running).await,
                Err(e) => End::failed(format!("the Jupyter framework cannot be reached: {e:#}")),
            },
            Kind::Serve => match crate::cli::serve::client_of(&masters).await {
                Ok(c) => follow(&Deployments(c), &spec, &name, kill_rx, &running).await,
                Err(e) => End::failed(format!("the serving framework cannot be reached: {e:#}")),
            },
            other => End::failed(format!("kind {other:?} is not a service")),
        };
        tell(end.state, "", end.exit_code, end.message);
    });
    AttemptHandle::new(move || {
        let _ = kill_tx.send(true);
    })
}
