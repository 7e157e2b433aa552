//! Launches three `echo` tasks, waits for them, exits 0 when all finished:
//! `cargo run -p mezz-sdk --example hello -- --master 127.0.0.1:5050`

use std::collections::BTreeMap;
use std::time::Duration;

use mezz_sdk::{proto, Driver, DriverBuilder, FrameworkId, Resources, Scheduler, TaskBuilder};

const TASKS: usize = 3;

#[derive(Default)]
struct Hello {
    launched: usize,
    /// Ended tasks and whether they finished (reconciliation repeats updates).
    ended: BTreeMap<String, bool>,
}

impl Scheduler for Hello {
    fn subscribed(&mut self, _: &Driver, id: &FrameworkId, reconnected: bool) {
        println!("subscribed as {id} (reconnected: {reconnected})");
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let needs = Resources::parse("cpus:0.1;mem:32").expect("valid resources");
        for offer in offers {
            let mut left = Resources::from_proto(&offer.resources).unwrap_or_default();
            let mut tasks = Vec::new();
            while self.launched < TASKS && left.contains(&needs) {
                left.subtract(&needs);
                self.launched += 1;
                let id = format!("hello-{}", self.launched);
                let task = TaskBuilder::shell(id, "echo hello from $MEZZ_TASK_ID");
                tasks.push(task.resources(&needs).build(&offer));
            }
            if tasks.is_empty() {
                driver.decline([offer.id], Some(60.0));
            } else {
                println!("launching {} task(s) on {}", tasks.len(), offer.hostname);
                driver.launch([offer.id], tasks);
            }
        }
        if self.launched == TASKS {
            driver.suppress();
        }
    }

    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        let state = status.state();
        println!(
            "{} {} {}",
            status.task_id,
            state.short_name(),
            status.message
        );
        if !state.is_terminal() {
            return;
        }
        let finished = state == proto::TaskState::Finished;
        self.ended.insert(status.task_id.clone(), finished);
        if self.ended.len() == TASKS {
            driver.teardown();
        }
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt::init(); // RUST_LOG=debug shows the driver at work
    let args: Vec<String> = std::env::args().skip(1).collect();
    let masters = match args.as_slice() {
        [] => "127.0.0.1:5050",
        [flag, value] if flag == "--master" => value.as_str(),
        _ => fail("usage: hello [--master ADDR[,ADDR…]]"),
    };
    let masters = mezz_sdk::parse_master_list(masters).unwrap_or_else(|e| fail(e));
    let framework = proto::FrameworkInfo {
        name: "hello".into(),
        failover_timeout_secs: 60.0,
        ..Default::default()
    };
    let result = DriverBuilder::new()
        .masters(masters)
        .framework(framework)
        .connect_timeout(Duration::from_secs(10))
        .run(Hello::default())
        .await;
    match result.map(|hello| hello.ended.values().filter(|ok| !**ok).count()) {
        Ok(0) => println!("all {TASKS} tasks finished"),
        Ok(failed) => fail(format!("{failed} of {TASKS} tasks did not finish")),
        Err(e) => fail(e),
    }
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("hello: {message}");
    std::process::exit(1)
}
