//! Keeps N long-running tasks alive, restarting failed ones (3 times, with
//! backoff), and keeps its framework id in a file, so a keeper restarted
//! within a minute takes its running tasks back instead of starting more:
//! `cargo run -p mezz-sdk --example keeper -- --master 127.0.0.1:5050 --tasks 2 --id-file /tmp/keeper.id`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mezz_sdk::{place, RetryPolicy, SdkError, Strategy, TaskBuilder, TaskRequest, TaskTracker};
use mezz_sdk::{proto, Change, Driver, DriverBuilder, FrameworkId, Phase, Resources, Scheduler};

/// How long a failed-over keeper waits for reconciliation before launching.
const RECOVERY: Duration = Duration::from_secs(3);
pub struct Keeper {
    pub tasks: TaskTracker,
    needs: Resources,
    command: String,
}

impl Scheduler for Keeper {
    fn subscribed(&mut self, driver: &Driver, id: &FrameworkId, reconnected: bool) {
        println!("subscribed {id} reconnected={reconnected}");
        if reconnected {
            // The driver reconciles; learn what runs before launching more.
            self.tasks.recover_until(Instant::now() + RECOVERY);
            driver.wake_after(RECOVERY);
        }
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let due = self.tasks.due(Instant::now());
        let requests: Vec<_> = due
            .iter()
            .map(|k| TaskRequest::new(k, self.needs.clone()))
            .collect();
        let plan = place(Strategy::Spread, &offers, &requests);
        let (tasks, command) = (&mut self.tasks, &self.command);
        plan.launch(driver, |p| {
            let id = tasks.launched(&p.key, Some(p.agent_id.clone()));
            TaskBuilder::shell(id.unwrap_or_default(), command.as_str())
        });
        let unused = plan.unused_offers();
        if !unused.is_empty() {
            driver.decline(unused, Some(2.0));
        }
    }

    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        println!("{} {}", status.task_id, status.state().short_name());
        let now = Instant::now();
        match self.tasks.update(status, now) {
            Some(Change::Restart { at }) => driver.wake_after(at - now),
            Some(Change::Running) if self.tasks.tasks().all(|t| t.phase == Phase::Running) => {
                println!("all {} tasks running", self.tasks.tasks().count());
            }
            _ => {}
        }
    }

    fn wakeup(&mut self, driver: &Driver) {
        driver.revive(); // offers again for what is due now
    }
}

/// Runs a keeper of `n` copies of `command` until it is killed.
pub async fn keep(masters: Vec<String>, n: usize, id: PathBuf, cmd: &str) -> KeepResult {
    let mut tasks = TaskTracker::new(RetryPolicy::up_to(3));
    (0..n).for_each(|i| tasks.add(format!("keep-{i}")));
    let needs = Resources::parse("cpus:0.1;mem:32").expect("a valid literal");
    let keeper = Keeper {
        tasks,
        needs,
        command: cmd.into(),
    };
    let mut framework = proto::FrameworkInfo::default();
    (framework.name, framework.failover_timeout_secs) = ("keeper".into(), 60.0);
    let driver = DriverBuilder::new().masters(masters).framework(framework);
    driver.framework_id_file(id).run(keeper).await
}

type KeepResult = Result<Keeper, SdkError>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: keeper [--master ADDR[,ADDR…]] [--tasks N] [--id-file PATH]";
    let (mut masters, mut n, mut id) = ("127.0.0.1:5050".into(), 2, PathBuf::from("keeper.id"));
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--master", Some(v)) => masters = v.clone(),
            ("--tasks", Some(v)) => n = v.parse().map_err(|_| usage)?,
            ("--id-file", Some(v)) => id = v.into(),
            _ => return Err(usage.into()),
        }
    }
    keep(mezz_sdk::parse_master_list(&masters)?, n, id, "sleep 3600").await?;
    Ok(())
}
