//! `mezz serve`: model services on the cluster. `deploy`, `scale`,
//! `update`, `ls`, `show` and `rm` talk to the cluster's serving framework (the daemon,
//! started in the background on first use) over its local API; `daemon` is
//! that framework process itself. The framework lives in
//! `frameworks/serving`; this is the terminal around it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use mezz_serving::{daemon, service, Client, DeployRequest, ServiceView};

mod args;

pub use args::*;

use super::daemon_start::{absolute, FrameworkDaemon};
use crate::client;

pub async fn main(args: ServeArgs) -> Result<ExitCode> {
    match args.command {
        ServeCommand::Deploy(a) => deploy(a).await,
        ServeCommand::Scale(a) => scale(a).await,
        ServeCommand::Update(a) => update(a).await,
        ServeCommand::Canary(a) => canary(a).await,
        ServeCommand::Promote(a) => canary_end(a, "promote").await,
        ServeCommand::Rollback(a) => canary_end(a, "rollback").await,
        ServeCommand::Ls(a) => ls(a).await,
        ServeCommand::Show(a) => show(a).await,
        ServeCommand::Rm(a) => rm(a).await,
        ServeCommand::Daemon(a) => run_daemon(a).await,
        ServeCommand::Proxy(a) => run_proxy(a).await,
    }
}

fn duration(flag: &str, text: &str) -> Result<Duration> {
    crate::duration::parse(text).map_err(|e| anyhow!("{flag}: {e}"))
}

/// The masters and the state directory of a command.
fn resolve(state: &StateArg) -> Result<(Vec<String>, PathBuf)> {
    DAEMON.resolve(state.master.master.as_deref(), state.state_dir.as_deref())
}

/// How `mezz serve` finds or starts its daemon.
const DAEMON: FrameworkDaemon = FrameworkDaemon {
    command: "serve",
    name: "serving",
    kind: mezz_serving::store::KIND,
};

/// A client of the running daemon, starting one in the background (its
/// output in `daemon.log` of the state directory) when none answers.
async fn daemon_client(state: &StateArg) -> Result<Client> {
    let (masters, dir) = resolve(state)?;
    let store = mezz_serving::store::open(&dir)?;
    DAEMON
        .client(&masters, &store, |info| async move {
            let c = Client::new(info);
            c.health().await.ok().map(|_| c)
        })
        .await
}

/// The replica command: one argument as a shell line, several as they are
/// (each quoted for the shell that runs them).
fn shell_command(args: &[String]) -> String {
    if let [one] = args {
        return one.clone();
    }
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until `name` has `want` healthy replicas and nothing else going
/// on, saying what changes on the way.
async fn wait_healthy(client: &Client, name: &str, want: u32, wait: Duration) -> Result<()> {
    let deadline = Instant::now() + wait;
    let mut said = String::new();
    loop {
        let v = client
            .get(name)
            .await?
            .ok_or_else(|| anyhow!("service {name} was removed meanwhile"))?;
        if v.healthy >= want {
            return Ok(());
        }
        // A command that ends at once would be restarted for ever: say so
        // now rather than after --wait.
        if v.healthy == 0 {
            if let Some(r) = v.replica_list.iter().find(|r| r.restarts >= 2) {
                let task = r.task_id.as_deref().unwrap_or("TASK");
                return Err(anyhow!(
                    "service {name}: replica {task} ended {} times without answering its health check{}; `mezz logs {task} --stderr` shows its output; the service stays deployed: fix the command and `mezz serve update {name} -- CMD`, or `mezz serve rm {name}`",
                    r.restarts,
                    if r.message.is_empty() { String::new() } else { format!(" ({})", r.message) }
                ));
            }
        }
        let now = format!("{}/{} healthy {}", v.healthy, want, v.message);
        if now != said {
            eprintln!(
                "mezz serve: {name}: {}/{} replicas healthy{}",
                v.healthy,
                want,
                if v.message.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", v.message)
                }
            );
        }
        said = now;
        if Instant::now() > deadline {
            return Err(anyhow!(
                "service {name} has {} of {want} replicas healthy after {wait:?}; it stays deployed: `mezz serve show {name}` shows each replica, `mezz logs TASK --stderr` its output, `mezz serve rm {name}` removes it",
                v.healthy
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A client of the serving framework of `masters` (its state directory
/// from `$MEZZ_SERVE_STATE`, as for `mezz serve`, else the default),
/// starting it in the background when none answers.
pub(crate) async fn client_of(masters: &[String]) -> Result<Client> {
    daemon_client(&StateArg {
        master: super::MasterArg {
            master: Some(masters.join(",")),
        },
        state_dir: std::env::var_os("MEZZ_SERVE_STATE")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
    })
    .await
}

async fn deploy(args: DeployArgs) -> Result<ExitCode> {
    // Everything that can be refused is checked before anything runs.
    let size = match &args.size {
        Some(s) => {
            let (masters, _) = resolve(&args.state)?;
            Some(super::sizes::menu(&masters).await?.get(s)?)
        }
        None => None,
    };
    let wait = duration("--wait", &args.wait)?;
    let request = DeployRequest {
        name: args.name.clone(),
        replicas: args.replicas,
        cpus: args.cpus.or(size.map(|s| s.cpus)).unwrap_or(1.0),
        mem: args.mem.or(size.map(|s| s.mem)).unwrap_or(512.0),
        gpus: args.gpus.or(size.map(|s| s.gpus)).unwrap_or(0),
        health_path: args.health_path.clone(),
        port_env: args.port_env.clone(),
        health_grace_secs: duration("--health-grace", &args.health_grace)?.as_secs_f64(),
        command: shell_command(&args.command),
    };
    // The same check the jobs framework makes of a job of kind serve, and
    // the serving framework of every request.
    request.validate()?;
    if args.print_job {
        let section = mezz_jobs::service::ServeSection {
            replicas: Some(request.replicas),
            health_path: Some(request.health_path.clone()),
            port_env: Some(request.port_env.clone()),
            health_grace: Some(args.health_grace.clone()),
        };
        return super::job::print_job(&mezz_jobs::service::serve_job_file(
            &request.name,
            (request.cpus, request.mem, request.gpus),
            &request.command,
            &section,
        ));
    }
    // A cluster that does not answer would leave the service waiting
    // silently: say so now, with nothing started.
    let (masters, _) = resolve(&args.state)?;
    client::leader(&masters).await?;
    let client = daemon_client(&args.state).await?;
    let view = client.deploy(&request).await?;
    eprintln!(
        "mezz serve: deploying {} ({} replicas of {} CPUs, {} MB{}) behind {}",
        view.name,
        view.replicas,
        view.cpus,
        view.mem,
        if view.gpus > 0 {
            format!(", {} GPU(s)", view.gpus)
        } else {
            String::new()
        },
        view.url
    );
    wait_healthy(&client, &view.name, view.replicas, wait).await?;
    println!("{}", view.url);
    Ok(ExitCode::SUCCESS)
}

fn not_found(name: &str) -> anyhow::Error {
    anyhow!("no service named '{name}'; `mezz serve ls` lists them")
}

async fn scale(args: ScaleArgs) -> Result<ExitCode> {
    if service::validate_name(&args.name).is_err() {
        return Err(not_found(&args.name));
    }
    let wait = duration("--wait", &args.wait)?;
    let client = daemon_client(&args.state).await?;
    let view = client.scale(&args.name, args.replicas).await?;
    wait_healthy(&client, &view.name, view.replicas, wait).await?;
    eprintln!("mezz serve: {} has {} replicas", view.name, view.replicas);
    Ok(ExitCode::SUCCESS)
}

async fn update(args: UpdateArgs) -> Result<ExitCode> {
    if service::validate_name(&args.name).is_err() {
        return Err(not_found(&args.name));
    }
    let wait = duration("--wait", &args.wait)?;
    let pace = mezz_serving::service::Pace {
        max_surge: args.max_surge,
        max_unavailable: args.max_unavailable,
    };
    pace.validate()?;
    let client = daemon_client(&args.state).await?;
    let started = client
        .update(&args.name, &shell_command(&args.command), pace)
        .await?;
    let target = started.version;
    let how = if pace == Default::default() {
        "one replica at a time".to_string()
    } else {
        format!(
            "up to {} extra and {} short at a time",
            pace.max_surge, pace.max_unavailable
        )
    };
    eprintln!(
        "mezz serve: updating {} to version {target}, {how}",
        args.name
    );
    let deadline = Instant::now() + wait;
    loop {
        let v = client
            .get(&args.name)
            .await?
            .ok_or_else(|| anyhow!("service {} was removed meanwhile", args.name))?;
        // Done once the old replicas, drained, are gone too.
        let old_left = v
            .replica_list
            .iter()
            .any(|r| !r.canary && r.version != target);
        if v.update.is_empty() {
            if v.version != target {
                return Err(anyhow!("{}: {}", args.name, v.note));
            }
            if !old_left {
                eprintln!("mezz serve: {} runs version {target}", args.name);
                return Ok(ExitCode::SUCCESS);
            }
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "the update of {} is not done after {wait:?} ({}); it goes on: `mezz serve show {}` shows how far",
                args.name,
                v.note,
                args.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn canary(args: CanaryArgs) -> Result<ExitCode> {
    if service::validate_name(&args.name).is_err() {
        return Err(not_found(&args.name));
    }
    let wait = duration("--wait", &args.wait)?;
    let client = daemon_client(&args.state).await?;
    client
        .canary(&args.name, &shell_command(&args.command), args.weight)
        .await?;
    let deadline = Instant::now() + wait;
    loop {
        let v = client
            .get(&args.name)
            .await?
            .ok_or_else(|| anyhow!("service {} was removed meanwhile", args.name))?;
        let canary: Vec<_> = v.replica_list.iter().filter(|r| r.canary).collect();
        if canary.iter().any(|r| r.state == "healthy") {
            eprintln!(
                "mezz serve: the canary of {} takes {}% of the requests; `mezz serve promote {}` or `mezz serve rollback {}`",
                args.name, args.weight, args.name, args.name
            );
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(r) = canary.iter().find(|r| r.restarts >= 2) {
            return Err(anyhow!(
                "the canary of {} ended {} times without answering its health check{}; `mezz serve rollback {}` stops it",
                args.name,
                r.restarts,
                if r.message.is_empty() { String::new() } else { format!(" ({})", r.message) },
                args.name
            ));
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "the canary of {} is not healthy after {wait:?}; `mezz serve show {}` shows it",
                args.name,
                args.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn canary_end(args: NameArgs, how: &str) -> Result<ExitCode> {
    if service::validate_name(&args.name).is_err() {
        return Err(not_found(&args.name));
    }
    let client = daemon_client(&args.state).await?;
    let v = client.canary_end(&args.name, how).await?;
    if how == "promote" {
        let target = v.version;
        eprintln!(
            "mezz serve: promoting the canary of {}: updating to version {target}",
            args.name
        );
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let v = client
                .get(&args.name)
                .await?
                .ok_or_else(|| anyhow!("service {} was removed meanwhile", args.name))?;
            if v.update.is_empty() {
                if v.version == target {
                    eprintln!("mezz serve: {} runs version {target}", args.name);
                    return Ok(ExitCode::SUCCESS);
                }
                return Err(anyhow!("{}: {}", args.name, v.note));
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "the update of {} is not done after 10 minutes; `mezz serve show {}` shows how far",
                    args.name,
                    args.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    eprintln!("mezz serve: the canary of {} is stopped", args.name);
    Ok(ExitCode::SUCCESS)
}

async fn ls(args: LsArgs) -> Result<ExitCode> {
    let client = daemon_client(&args.state).await?;
    let list = client.list().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<10} {:<8} {:<28} COMMAND",
        "NAME", "STATE", "HEALTHY", "URL"
    );
    for v in list {
        println!(
            "{:<20} {:<10} {:<8} {:<28} {}",
            v.name,
            v.state,
            format!("{}/{}", v.healthy, v.replicas),
            v.url,
            v.command
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show_text(v: &ServiceView) -> String {
    let mut out = format!(
        "name:     {}\nstate:    {}\nurl:      {}\nreplicas: {} wanted, {} healthy\neach:     {} CPUs, {} MB, {} GPUs\nhealth:   GET {}\ncommand:  {}\n",
        v.name, v.state, v.url, v.replicas, v.healthy, v.cpus, v.mem, v.gpus, v.health_path, v.command
    );
    out.push_str(&format!(
        "version:  {}{}\n",
        v.version,
        if v.update.is_empty() {
            String::new()
        } else {
            format!(" ({})", v.update)
        }
    ));
    if !v.note.is_empty() {
        out.push_str(&format!("update:   {}\n", v.note));
    }
    if let Some(w) = v.canary_weight {
        out.push_str(&format!("canary:   {w}% of the requests\n"));
    }
    if !v.message.is_empty() {
        out.push_str(&format!("message:  {}\n", v.message));
    }
    out.push_str(&format!(
        "\n{:<28} {:<8} {:<11} {:<22} {:<10} MESSAGE\n",
        "TASK", "VERSION", "STATE", "ADDRESS", "RESTARTS"
    ));
    for r in &v.replica_list {
        out.push_str(&format!(
            "{:<28} {:<8} {:<11} {:<22} {:<10} {}\n",
            r.task_id.as_deref().unwrap_or("-"),
            if r.canary {
                format!("{} (c)", r.version)
            } else {
                r.version.to_string()
            },
            r.state,
            r.address.as_deref().unwrap_or("-"),
            r.restarts,
            r.message
        ));
    }
    out
}

async fn show(args: ShowArgs) -> Result<ExitCode> {
    if service::validate_name(&args.name).is_err() {
        return Err(not_found(&args.name));
    }
    let client = daemon_client(&args.state).await?;
    let v = client
        .get(&args.name)
        .await?
        .ok_or_else(|| not_found(&args.name))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", show_text(&v));
    }
    Ok(ExitCode::SUCCESS)
}

async fn rm(args: NameArgs) -> Result<ExitCode> {
    if service::validate_name(&args.name).is_err() {
        return Err(not_found(&args.name));
    }
    let client = daemon_client(&args.state).await?;
    client.remove(&args.name).await?;
    // Gone from the book once every kill is confirmed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(&args.name).await?.is_some() {
        if Instant::now() > deadline {
            return Err(anyhow!(
                "service {} is still stopping after 60 s; `mezz serve show {}` shows it",
                args.name,
                args.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("mezz serve: removed {}", args.name);
    Ok(ExitCode::SUCCESS)
}

async fn run_daemon(args: DaemonArgs) -> Result<ExitCode> {
    let (masters, state_dir) = resolve(&args.state)?;
    let config = daemon::Config {
        masters,
        state_dir,
        failover_timeout: duration("--failover-timeout", &args.failover_timeout)?,
        proxy_command: Some(vec![
            std::env::current_exe()
                .context("locating the mezz binary")?
                .into(),
            "serve".into(),
            "proxy".into(),
        ]),
    };
    if !daemon::run(config, super::shutdown_signal()).await? {
        eprintln!("mezz serve: a daemon already serves this state directory");
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_proxy(args: ProxyArgs) -> Result<ExitCode> {
    let config = mezz_serving::relay::Config {
        state_dir: absolute(&args.state_dir)?,
        orphan_timeout: duration("--orphan-timeout", &args.orphan_timeout)?,
    };
    if !mezz_serving::relay::run(config, super::shutdown_signal()).await? {
        eprintln!("mezz serve: a proxy process already serves this state directory");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_arguments_run_as_they_are() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shell_command(&v(&["python3 m.py $PORT"])),
            "python3 m.py $PORT"
        );
        assert_eq!(
            shell_command(&v(&["python3", "m.py", "it's", "a b"])),
            r"python3 m.py 'it'\''s' 'a b'"
        );
    }
}
