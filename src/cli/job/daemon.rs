//! `mezz job daemon`: the jobs framework's process. It keeps no state of
//! its own: jobs live in the masters, and [`mezz_jobs::engine::Engine`]
//! reads and records them there through [`MasterStore`]. The state
//! directory only holds the lock (one daemon per directory), the log, the
//! framework ids (one per role) and `daemon.json`, whose address answers
//! a liveness probe, so that `mezz job submit` can start a daemon when
//! none runs.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use mezz_jobs::engine::{BoxFuture, Engine, Event, Forwarder, Store, StoreError, FRAMEWORK_NAME};
use mezz_proto::auth::AuthChannel;
use mezz_proto::v1::operator_client::OperatorClient;
use mezz_proto::v1::{
    ControlJobRequest, FireScheduleRequest, GetJobRequest, JobRecord, ListJobsRequest,
    SubmitJobsRequest, UpdateJobRequest,
};
use mezz_sdk::daemon::{Daemon, DaemonInfo};
use mezz_sdk::proto;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Mutex;

use crate::client;

/// What the state directory holds, for the refusal of a directory open to
/// others.
pub const HOLDS: &str = "the jobs framework's ids and log";

/// The daemon's kind in the default state directory's path.
pub const KIND: &str = "jobs";

/// The masters' job calls, made on the leader (found again after a
/// failover).
pub struct MasterStore {
    masters: Vec<String>,
    leader: Mutex<Option<OperatorClient<AuthChannel>>>,
}

impl MasterStore {
    /// A store over `masters`.
    pub fn new(masters: Vec<String>) -> MasterStore {
        MasterStore {
            masters,
            leader: Mutex::new(None),
        }
    }

    /// Runs `call` on the leader; once more on a newly found leader when
    /// the one known fails for want of a leader.
    async fn call<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn(OperatorClient<AuthChannel>) -> BoxFuture<'static, Result<T, tonic::Status>>,
    {
        let mut last = String::new();
        for _ in 0..2 {
            let client = {
                let mut held = self.leader.lock().await;
                match held.as_ref() {
                    Some(c) => c.clone(),
                    None => match client::leader(&self.masters).await {
                        Ok((c, _)) => held.insert(c).clone(),
                        Err(e) => return Err(StoreError::Unavailable(format!("{e:#}"))),
                    },
                }
            };
            match call(client).await {
                Ok(v) => return Ok(v),
                Err(s) => match s.code() {
                    tonic::Code::Aborted => return Err(StoreError::Conflict(s.message().into())),
                    tonic::Code::FailedPrecondition
                    | tonic::Code::InvalidArgument
                    | tonic::Code::NotFound
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated => {
                        return Err(StoreError::Refused(s.message().into()))
                    }
                    _ => {
                        last = s.message().to_string();
                        *self.leader.lock().await = None;
                    }
                },
            }
        }
        Err(StoreError::Unavailable(last))
    }
}

impl Store for MasterStore {
    fn active(&self) -> BoxFuture<'_, Result<Vec<JobRecord>, StoreError>> {
        Box::pin(self.call(|mut c| {
            Box::pin(async move {
                let r = c
                    .list_jobs(ListJobsRequest {
                        active: true,
                        limit: 100_000,
                        ..Default::default()
                    })
                    .await?;
                Ok(r.into_inner().jobs)
            })
        }))
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<JobRecord>, StoreError>> {
        let name = name.to_string();
        Box::pin(async move {
            let r = self
                .call(move |mut c| {
                    let name = name.clone();
                    Box::pin(
                        async move { Ok(c.get_job(GetJobRequest { name }).await?.into_inner()) },
                    )
                })
                .await;
            match r {
                Ok(j) => Ok(Some(j)),
                // Not found is an answer here, not a refusal.
                Err(StoreError::Refused(m)) if m.starts_with("no job") => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn update(
        &self,
        job: JobRecord,
        expected: u64,
    ) -> BoxFuture<'_, Result<JobRecord, StoreError>> {
        Box::pin(self.call(move |mut c| {
            let job = job.clone();
            Box::pin(async move {
                let r = c
                    .update_job(UpdateJobRequest {
                        job: Some(job),
                        expected_version: expected,
                    })
                    .await?;
                Ok(r.into_inner())
            })
        }))
    }

    fn fire(&self, fire: FireScheduleRequest) -> BoxFuture<'_, Result<JobRecord, StoreError>> {
        Box::pin(self.call(move |mut c| {
            let fire = fire.clone();
            Box::pin(async move { Ok(c.fire_schedule(fire).await?.into_inner()) })
        }))
    }

    fn children<'a>(
        &'a self,
        parent: &'a str,
    ) -> BoxFuture<'a, Result<Vec<JobRecord>, StoreError>> {
        let parent = parent.to_string();
        Box::pin(self.call(move |mut c| {
            let parent = parent.clone();
            Box::pin(async move {
                let r = c
                    .list_jobs(ListJobsRequest {
                        parent,
                        limit: 100_000,
                        summary: true,
                        ..Default::default()
                    })
                    .await?;
                Ok(r.into_inner().jobs)
            })
        }))
    }

    fn submit(&self, jobs: Vec<JobRecord>) -> BoxFuture<'_, Result<Vec<JobRecord>, StoreError>> {
        Box::pin(self.call(move |mut c| {
            let jobs = jobs.clone();
            Box::pin(async move {
                Ok(c.submit_jobs(SubmitJobsRequest { jobs })
                    .await?
                    .into_inner()
                    .jobs)
            })
        }))
    }

    fn control<'a>(
        &'a self,
        name: &'a str,
        action: &'a str,
    ) -> BoxFuture<'a, Result<JobRecord, StoreError>> {
        let (name, action) = (name.to_string(), action.to_string());
        Box::pin(self.call(move |mut c| {
            let request = ControlJobRequest {
                name: name.clone(),
                action: action.clone(),
            };
            Box::pin(async move { Ok(c.control_job(request).await?.into_inner()) })
        }))
    }

    fn output<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async move {
            let unavailable = |e: anyhow::Error| StoreError::Unavailable(format!("{e:#}"));
            let state = client::state(&self.masters, true)
                .await
                .map_err(unavailable)?;
            let task = super::view::attempt_task(state, task_id).ok_or_else(|| {
                StoreError::Refused(format!("task {task_id} is not known with an agent"))
            })?;
            let mut tail = crate::cli::logs::Tail::connect(
                &task.agent_address,
                &task.framework_id,
                &task.id,
                "stdout",
            )
            .await
            .map_err(unavailable)?;
            let mut text: Vec<u8> = Vec::new();
            loop {
                let (n, _) = tail
                    .step_with(&mut |d| {
                        text.extend_from_slice(d);
                        if text.len() > 2 * OUTPUT_KEPT {
                            text.drain(..text.len() - OUTPUT_KEPT);
                        }
                    })
                    .await
                    .map_err(unavailable)?;
                if n == 0 {
                    break;
                }
            }
            let from = text.len().saturating_sub(OUTPUT_KEPT);
            Ok(String::from_utf8_lossy(&text[from..]).into_owned())
        })
    }
}

/// How much of a task's standard output [`MasterStore::output`] keeps.
const OUTPUT_KEPT: usize = 64 * 1024;

/// How a role's framework id file is named in the state directory.
fn framework_id_file(dir: &Path, role: &str) -> std::path::PathBuf {
    let safe: String = role
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("framework-id.{safe}"))
}

/// Runs the daemon until `shutdown`; false when another daemon holds the
/// state directory.
pub async fn run(
    masters: Vec<String>,
    dir: &Path,
    failover_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<bool> {
    let Some(daemon) = Daemon::start(dir, HOLDS)? else {
        return Ok(false);
    };
    let (listener, info) = daemon.listen(&masters).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    tokio::spawn(answer_probes(listener, tx.clone()));
    daemon.publish(&info)?;
    tracing::info!(address = %info.address, dir = %dir.display(), "jobs daemon running");

    let gang_tx = tx.clone();
    let state_dir = dir.to_path_buf();
    let driver_masters = masters.clone();
    let user = std::env::var("USER").unwrap_or_default();
    let start_driver = move |role: &str| {
        let framework = proto::FrameworkInfo {
            name: FRAMEWORK_NAME.into(),
            role: role.to_string(),
            user: user.clone(),
            failover_timeout_secs: failover_timeout.as_secs_f64(),
            capabilities: vec![proto::Capability::GpuResources as i32],
            ..Default::default()
        };
        let builder = match client::driver() {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Event::Ended {
                    role: role.to_string(),
                    why: format!("{e:#}"),
                });
                return;
            }
        };
        let builder = builder
            .masters(driver_masters.clone())
            .framework(framework)
            .framework_id_file(framework_id_file(&state_dir, role));
        let tx = tx.clone();
        let role = role.to_string();
        tokio::spawn(async move {
            let why = match builder.run(Forwarder::new(&role, tx.clone())).await {
                Ok(_) => "the driver stopped".to_string(),
                Err(e) => e.to_string(),
            };
            let _ = tx.send(Event::Ended { role, why });
        });
    };
    let gang_masters = masters.clone();
    let gang_user = std::env::var("USER").unwrap_or_default();
    let start_gang = move |g: mezz_jobs::gang::AttemptStart| match client::driver() {
        _ if g.spec.kind.is_service() => {
            super::services::run(g, gang_masters.clone(), gang_tx.clone())
        }
        Ok(b) if g.spec.kind == mezz_jobs::Kind::Spark => mezz_jobs::gang::run_spark(
            g,
            b.masters(gang_masters.clone()),
            gang_user.clone(),
            gang_tx.clone(),
        ),
        Ok(b) => mezz_jobs::gang::run_tensorflow(
            g,
            b.masters(gang_masters.clone()),
            gang_user.clone(),
            gang_tx.clone(),
        ),
        Err(e) => {
            let _ = gang_tx.send(Event::Status {
                role: g.spec.role.clone(),
                status: proto::TaskStatus {
                    task_id: g.task_id,
                    state: proto::TaskState::Failed as i32,
                    message: format!("no driver for the gang: {e:#}"),
                    ..Default::default()
                },
            });
            mezz_jobs::gang::AttemptHandle::new(|| {})
        }
    };
    let engine = Engine::new(
        MasterStore::new(masters),
        Arc::new(mezz_proto::unix_now),
        Box::new(start_driver),
    )
    .with_delegated(Box::new(start_gang));
    engine.run(rx, shutdown).await;
    daemon.state().clear_daemon(info.pid);
    Ok(true)
}

/// Answers every connection to the daemon's address with a one-line
/// HTTP response naming the framework: the liveness probe of `mezz job
/// submit`. A `POST /wake` (sent by `mezz job submit` and the framework
/// commands after they submit) also makes the engine read the jobs at
/// once instead of at its next pass.
async fn answer_probes(listener: tokio::net::TcpListener, events: UnboundedSender<Event>) {
    use tokio::io::AsyncReadExt;
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            // The request line is all that is read: at most 64 bytes.
            let mut head = [0u8; 64];
            let n = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut head))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            if head[..n].starts_with(b"POST /wake ") {
                let _ = events.send(Event::Wake);
            }
            let body = format!("{FRAMEWORK_NAME}\n");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        });
    }
}

/// Asks the daemon `info` names to read the jobs now (see
/// `answer_probes`); a daemon that does not answer reads them at its next
/// pass anyway.
pub async fn wake(info: &DaemonInfo) {
    use tokio::io::AsyncReadExt;
    let poke = async {
        let mut s = tokio::net::TcpStream::connect(&info.address).await.ok()?;
        s.write_all(b"POST /wake HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), poke).await;
}

/// Whether the daemon `info` names answers as the jobs daemon.
pub async fn answers(info: &DaemonInfo) -> bool {
    use tokio::io::AsyncReadExt;
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(&info.address).await.ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).contains(FRAMEWORK_NAME))
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
