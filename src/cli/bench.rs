//! `mezz bench tasks`: a throughput benchmark a user can run against any
//! cluster. A framework on the SDK launches `--count` copies of one command,
//! at most `--concurrency` at a time, waits for every one to end, and
//! reports tasks per second and the launch → RUNNING and launch → FINISHED
//! latencies (p50/p99), as seen by the framework.
//!
//! The bookkeeping ([`Bench`]) has no I/O and takes the time as an
//! argument; [`BenchScheduler`] is the SDK shell around it.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use mezz_sdk::{proto, Driver, FrameworkId, Resources, Scheduler, TaskBuilder, TaskState};

use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Launch many short tasks and report tasks/s and launch latencies.
    Tasks(TasksArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  mezz bench tasks -- true\n  mezz bench tasks --count 10000 --concurrency 64 --json -- true\n\nEach task is a separate launch, isolated as any task on its agent (its own\ncgroup, and namespaces where the agent uses them). Latencies are measured\nby the framework from the moment it sends the launch."
)]
pub struct TasksArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// How many tasks to run in all.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// At most this many tasks launched and not yet ended at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
    /// CPUs for each task.
    #[arg(long, default_value_t = 0.01)]
    pub cpus: f64,
    /// Memory for each task, in MB.
    #[arg(long, default_value_t = 8.0)]
    pub mem: f64,
    /// Role to run under.
    #[arg(long, default_value = "*")]
    pub role: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The command each task runs (a single argument with spaces or shell
    /// symbols runs through /bin/sh -c).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn main(args: BenchArgs) -> Result<ExitCode> {
    match args.command {
        BenchCommand::Tasks(a) => tasks(a).await,
    }
}

/// p50 and p99 (and the extremes) of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub samples: usize,
}

impl Summary {
    /// Nearest-rank percentiles; `None` for no samples.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            // Nearest rank: the smallest value with at least p of the
            // samples at or below it.
            let r = (p * ms.len() as f64).ceil() as usize;
            ms[r.clamp(1, ms.len()) - 1]
        };
        Some(Summary {
            p50: rank(0.50),
            p99: rank(0.99),
            min: ms[0],
            max: ms[ms.len() - 1],
            samples: ms.len(),
        })
    }
}

/// What `--json` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub count: u64,
    pub concurrency: u64,
    pub finished: u64,
    pub failed: u64,
    /// From the first launch to the last task's end.
    pub seconds: f64,
    pub tasks_per_second: f64,
    pub launch_to_running_ms: Option<Summary>,
    pub launch_to_finished_ms: Option<Summary>,
    /// The first few failures: task id and why.
    pub failures: Vec<String>,
}

/// The benchmark's bookkeeping, without I/O.
pub struct Bench {
    need: Resources,
    role: String,
    count: u64,
    concurrency: u64,
    template: TaskBuilder,
    prefix: String,
    launched: u64,
    /// Launch time and whether RUNNING was seen, of each task not yet ended.
    in_flight: HashMap<String, (Instant, bool)>,
    /// Offers held while every slot is taken.
    held: Vec<proto::Offer>,
    first_launch: Option<Instant>,
    last_end: Option<Instant>,
    to_running: Vec<Duration>,
    to_finished: Vec<Duration>,
    finished: u64,
    failed: u64,
    failures: Vec<String>,
}

/// What the bookkeeping asks the driver to do.
#[derive(Debug)]
pub enum Call {
    Launch {
        offer_id: String,
        tasks: Vec<proto::TaskInfo>,
    },
    Decline(Vec<String>),
    Suppress,
    Teardown,
}

/// How many failures the report names.
const FAILURES_SHOWN: usize = 5;

impl Bench {
    pub fn new(
        need: Resources,
        role: String,
        count: u64,
        concurrency: u64,
        template: TaskBuilder,
        prefix: String,
    ) -> Self {
        Bench {
            need,
            role,
            count,
            concurrency: concurrency.max(1),
            template,
            prefix,
            launched: 0,
            in_flight: HashMap::new(),
            held: Vec::new(),
            first_launch: None,
            last_end: None,
            to_running: Vec::new(),
            to_finished: Vec::new(),
            finished: 0,
            failed: 0,
            failures: Vec::new(),
        }
    }

    pub fn done(&self) -> bool {
        self.finished + self.failed >= self.count
    }

    pub fn offers(&mut self, offers: Vec<proto::Offer>, now: Instant) -> Vec<Call> {
        self.held.extend(offers);
        self.pump(now)
    }

    pub fn rescinded(&mut self, offer_id: &str) {
        self.held.retain(|o| o.id != offer_id);
    }

    /// Launches on held offers while slots are free. Each offer is used by
    /// one launch (what the tasks leave of it goes back to the master,
    /// which offers it again); offers are kept while every slot is taken,
    /// and declined once every task is launched.
    fn pump(&mut self, now: Instant) -> Vec<Call> {
        let mut out = Vec::new();
        let mut keep = Vec::new();
        for offer in std::mem::take(&mut self.held) {
            let slots = self
                .concurrency
                .saturating_sub(self.in_flight.len() as u64)
                .min(self.count - self.launched);
            if slots == 0 {
                keep.push(offer);
                continue;
            }
            let mut left = Resources::from_proto(&offer.resources).unwrap_or_default();
            let mut tasks = Vec::new();
            while (tasks.len() as u64) < slots {
                // Resources reserved for the role first, as the master
                // checks them.
                let Some(take) = left.take_for_role(&self.need, &self.role) else {
                    break;
                };
                left.subtract(&take);
                let id = format!("{}-{}", self.prefix, self.launched);
                self.launched += 1;
                let mut task = self.template.clone().resources(&take).build(&offer);
                task.task_id = id.clone();
                self.in_flight.insert(id, (now, false));
                tasks.push(task);
            }
            if tasks.is_empty() {
                // Too small for even one task.
                out.push(Call::Decline(vec![offer.id]));
            } else {
                self.first_launch.get_or_insert(now);
                out.push(Call::Launch {
                    offer_id: offer.id,
                    tasks,
                });
            }
        }
        if self.launched >= self.count {
            if !keep.is_empty() {
                out.push(Call::Decline(keep.drain(..).map(|o| o.id).collect()));
            }
            out.push(Call::Suppress);
        }
        self.held = keep;
        out
    }

    pub fn update(&mut self, status: &proto::TaskStatus, now: Instant) -> Vec<Call> {
        let state = status.state();
        let Some((at, running)) = self.in_flight.get_mut(&status.task_id) else {
            return Vec::new();
        };
        if state == TaskState::Running && !*running {
            *running = true;
            self.to_running.push(now.duration_since(*at));
        }
        if !state.is_terminal() {
            return Vec::new();
        }
        let at = *at;
        self.in_flight.remove(&status.task_id);
        self.last_end = Some(now);
        if state == TaskState::Finished {
            self.finished += 1;
            self.to_finished.push(now.duration_since(at));
        } else {
            self.failed += 1;
            if self.failures.len() < FAILURES_SHOWN {
                self.failures.push(format!(
                    "{}: {}{}",
                    status.task_id,
                    state.short_name(),
                    if status.message.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", status.message)
                    }
                ));
            }
        }
        if self.done() {
            return vec![Call::Teardown];
        }
        self.pump(now)
    }

    pub fn report(&self) -> Report {
        let seconds = match (self.first_launch, self.last_end) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let ended = self.finished + self.failed;
        Report {
            count: self.count,
            concurrency: self.concurrency,
            finished: self.finished,
            failed: self.failed,
            seconds,
            tasks_per_second: if seconds > 0.0 {
                ended as f64 / seconds
            } else {
                0.0
            },
            launch_to_running_ms: Summary::of(&self.to_running),
            launch_to_finished_ms: Summary::of(&self.to_finished),
            failures: self.failures.clone(),
        }
    }
}

struct BenchScheduler {
    bench: Bench,
}

impl BenchScheduler {
    fn act(&mut self, driver: &Driver, calls: Vec<Call>) {
        for call in calls {
            match call {
                // What the tasks leave of the offer comes back at once
                // (no refuse filter): the next tasks need it as soon as
                // a slot frees, not after the master's default 5 s.
                Call::Launch { offer_id, tasks } => driver.accept(
                    [offer_id],
                    vec![proto::Operation {
                        operation: Some(proto::operation::Operation::Launch(proto::Launch {
                            tasks,
                        })),
                    }],
                    Some(proto::Filters {
                        refuse_seconds: Some(0.0),
                    }),
                ),
                Call::Decline(ids) => driver.decline(ids, None),
                Call::Suppress => driver.suppress(),
                Call::Teardown => driver.teardown(),
            }
        }
    }
}

impl Scheduler for BenchScheduler {
    fn subscribed(&mut self, _: &Driver, id: &FrameworkId, _reconnected: bool) {
        tracing::info!(%id, "subscribed");
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let calls = self.bench.offers(offers, Instant::now());
        self.act(driver, calls);
    }

    fn rescinded(&mut self, _: &Driver, offer_id: &mezz_sdk::OfferId) {
        self.bench.rescinded(offer_id.as_str());
    }

    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        let calls = self.bench.update(status, Instant::now());
        self.act(driver, calls);
    }
}

async fn tasks(args: TasksArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    if !(args.cpus.is_finite() && args.cpus >= 0.0 && args.mem.is_finite() && args.mem >= 0.0) {
        return Err(anyhow!("--cpus and --mem must be non-negative numbers"));
    }
    if args.cpus == 0.0 && args.mem == 0.0 {
        return Err(anyhow!("give each task some --cpus or --mem"));
    }
    if args.count == 0 {
        return Err(anyhow!("--count must be at least 1"));
    }
    if args.concurrency == 0 {
        return Err(anyhow!("--concurrency must be at least 1"));
    }
    let need = Resources::new()
        .with_scalar("cpus", args.cpus)
        .with_scalar("mem", args.mem);
    let cmd = &args.command;
    let shellish = |s: &str| {
        s.chars()
            .any(|c| c.is_whitespace() || "|&;<>()$`\\\"'*?[#~=%".contains(c))
    };
    // The id is replaced per task; the builder only carries the command.
    let template = if cmd.len() == 1 && shellish(&cmd[0]) {
        TaskBuilder::shell("bench", cmd[0].clone())
    } else {
        TaskBuilder::exec("bench", cmd[0].clone(), cmd[1..].iter().cloned())
    }
    .name("bench")
    .resources(&need);
    let prefix = format!("bench-{:08x}", rand_u32());
    let framework = proto::FrameworkInfo {
        name: "mezz-bench".into(),
        role: args.role.clone(),
        user: std::env::var("USER").unwrap_or_default(),
        ..Default::default()
    };
    let scheduler = BenchScheduler {
        bench: Bench::new(
            need,
            args.role.clone(),
            args.count,
            args.concurrency,
            template,
            prefix,
        ),
    };
    let done = client::driver()?
        .masters(masters)
        .framework(framework)
        .connect_timeout(Duration::from_secs(8))
        .run(scheduler)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let report = done.bench.report();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(if report.failed == 0 && report.finished == report.count {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn text(r: &Report) -> String {
    let line = |name: &str, s: &Option<Summary>| match s {
        Some(s) => format!(
            "{name}: p50 {:.2} ms, p99 {:.2} ms (min {:.2}, max {:.2}, {} samples)\n",
            s.p50, s.p99, s.min, s.max, s.samples
        ),
        None => format!("{name}: no samples\n"),
    };
    let mut out = format!(
        "{} tasks ({} finished, {} failed) at concurrency {} in {:.2} s: {:.1} tasks/s\n",
        r.count, r.finished, r.failed, r.concurrency, r.seconds, r.tasks_per_second
    );
    out += &line("launch → RUNNING", &r.launch_to_running_ms);
    out += &line("launch → FINISHED", &r.launch_to_finished_ms);
    for f in &r.failures {
        out += &format!("failed: {f}\n");
    }
    out
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // The prefix only keeps two runs' ids apart; the time will do if the
    // random source fails.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    }
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, cpus: f64, mem: f64) -> proto::Offer {
        proto::Offer {
            id: id.into(),
            agent_id: "a1".into(),
            resources: Resources::new()
                .with_scalar("cpus", cpus)
                .with_scalar("mem", mem)
                .to_proto(),
            ..Default::default()
        }
    }

    fn status(task: &str, state: TaskState) -> proto::TaskStatus {
        let mut s = proto::TaskStatus {
            task_id: task.into(),
            ..Default::default()
        };
        s.set_state(state);
        s
    }

    fn bench(count: u64, concurrency: u64) -> Bench {
        let need = Resources::new()
            .with_scalar("cpus", 0.5)
            .with_scalar("mem", 8.0);
        let t = TaskBuilder::exec("x", "true", Vec::<String>::new()).resources(&need);
        Bench::new(need, "*".into(), count, concurrency, t, "b".into())
    }

    fn launched(calls: &[Call]) -> Vec<String> {
        calls
            .iter()
            .flat_map(|c| match c {
                Call::Launch { tasks, .. } => tasks.iter().map(|t| t.task_id.clone()).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(&d).expect("samples");
        assert_eq!((s.p50, s.p99, s.min, s.max), (50.0, 99.0, 1.0, 100.0));
        assert_eq!(Summary::of(&[]), None);
        let one = Summary::of(&[Duration::from_millis(7)]).expect("one");
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
    }

    #[test]
    fn launches_up_to_concurrency_and_what_the_offer_holds() {
        let now = Instant::now();
        let mut b = bench(10, 3);
        // 2 cpus hold 4 tasks of 0.5, but only 3 slots are free.
        let calls = b.offers(vec![offer("o1", 2.0, 100.0)], now);
        assert_eq!(launched(&calls), ["b-0", "b-1", "b-2"]);
        // Every slot taken: the next offer is held, not declined.
        let calls = b.offers(vec![offer("o2", 1.0, 100.0)], now);
        assert!(calls.is_empty(), "{calls:?}");
        // A task ends: the held offer takes the next one.
        let calls = b.update(&status("b-1", TaskState::Finished), now);
        assert_eq!(launched(&calls), ["b-3"]);
    }

    #[test]
    fn an_offer_too_small_is_declined() {
        let mut b = bench(10, 3);
        let calls = b.offers(vec![offer("o1", 0.25, 100.0)], Instant::now());
        assert!(matches!(calls.as_slice(), [Call::Decline(ids)] if ids == &["o1"]));
    }

    #[test]
    fn counts_latencies_and_tears_down_when_all_ended() {
        let t0 = Instant::now();
        let mut b = bench(2, 2);
        let calls = b.offers(vec![offer("o1", 4.0, 100.0)], t0);
        assert_eq!(launched(&calls), ["b-0", "b-1"]);
        assert!(matches!(calls.last(), Some(Call::Suppress)));
        let t1 = t0 + Duration::from_millis(2);
        assert!(b.update(&status("b-0", TaskState::Running), t1).is_empty());
        let t2 = t0 + Duration::from_millis(5);
        b.update(&status("b-0", TaskState::Finished), t2);
        // An update of a task not ours changes nothing.
        assert!(b.update(&status("zz", TaskState::Failed), t2).is_empty());
        let t3 = t0 + Duration::from_millis(10);
        let calls = b.update(&status("b-1", TaskState::Failed), t3);
        assert!(matches!(calls.as_slice(), [Call::Teardown]));
        let r = b.report();
        assert_eq!((r.finished, r.failed), (1, 1));
        assert_eq!(r.launch_to_running_ms.map(|s| s.p50), Some(2.0));
        assert_eq!(r.launch_to_finished_ms.map(|s| s.p99), Some(5.0));
        assert!((r.tasks_per_second - 200.0).abs() < 1e-6, "{r:?}");
        assert_eq!(r.failures.len(), 1);
    }
}
