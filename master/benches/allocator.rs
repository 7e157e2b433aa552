//! Allocator benchmarks: a full cycle over A agents and F frameworks with
//! random demand, and the incremental cycle after one agent's resources are
//! freed. Also prints the heap the allocator's state takes for 10,000
//! agents (counted by a wrapping global allocator).
//!
//! `cargo bench -p mezz-master --bench allocator`; figures in BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use mezz_master::allocator::{Allocator, FrameworkState, RoleConfig, Scope};
use mezz_proto::{AgentId, FrameworkId, Resources};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const ROLES: [&str; 6] = ["eng", "eng/ml", "eng/web", "data", "ops", "research"];

struct Setup {
    alloc: Allocator,
    agents: Vec<(AgentId, Resources)>,
    frameworks: Vec<(FrameworkId, FrameworkState)>,
}

fn setup(n_agents: usize, n_frameworks: usize) -> Setup {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut alloc = Allocator::new();
    alloc.set_role(
        "eng/ml",
        RoleConfig {
            weight: 2.0,
            guarantee: Resources::parse("cpus:500;mem:2000000").unwrap_or_default(),
            limit: Resources::new(),
        },
    );
    alloc.set_role(
        "ops",
        RoleConfig {
            weight: 1.0,
            guarantee: Resources::new(),
            limit: Resources::parse("cpus:2000").unwrap_or_default(),
        },
    );
    let mut agents = Vec::with_capacity(n_agents);
    for i in 0..n_agents {
        let cpus = 8 * (1 + rng.next(8));
        let mut r = Resources::new()
            .with_scalar("cpus", cpus as f64)
            .with_scalar("mem", (cpus * 4096) as f64)
            .with_scalar("disk", 100_000.0)
            .with_ranges("ports", &[(31000, 32000)]);
        if i % 10 == 0 {
            r = r.with_set("gpus", (0..4).map(|g| format!("GPU-{i:05}-{g}")));
        }
        let id = AgentId(format!("agent-{i:05}"));
        alloc.update_agent(&id, &r, &r);
        agents.push((id, r));
    }
    let mut frameworks = Vec::with_capacity(n_frameworks);
    for i in 0..n_frameworks {
        // Random demand already placed: what each framework holds.
        let c = rng.next(64);
        let allocated = Resources::new()
            .with_scalar("cpus", c as f64)
            .with_scalar("mem", (c * 2048) as f64);
        let st = FrameworkState {
            role: ROLES[rng.next(ROLES.len() as u64) as usize].to_string(),
            active: rng.next(10) != 0,
            gpu_capable: i % 10 == 0,
            allocated,
        };
        let id = FrameworkId(format!("fw-{i:04}"));
        alloc.update_framework(&id, &st);
        frameworks.push((id, st));
    }
    Setup {
        alloc,
        agents,
        frameworks,
    }
}

fn no_filters(_: &FrameworkId, _: &AgentId) -> bool {
    false
}

fn cycle(c: &mut Criterion, a: usize, f: usize) {
    let s = setup(a, f);
    let mut g = c.benchmark_group("allocator/cycle");
    g.sample_size(10);
    g.bench_function(format!("{a}x{f}"), |b| {
        b.iter_batched(
            || s.alloc.clone(),
            |mut alloc| alloc.allocate(Scope::All, &no_filters),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn event(c: &mut Criterion, a: usize, f: usize) {
    let Setup {
        mut alloc,
        agents,
        frameworks,
    } = setup(a, f);
    let index: std::collections::HashMap<&FrameworkId, usize> = frameworks
        .iter()
        .enumerate()
        .map(|(i, f)| (&f.0, i))
        .collect();
    let offers = alloc.allocate(Scope::All, &no_filters);
    // Who got each agent, and what they hold, to give it back later.
    let mut holder: Vec<Option<usize>> = vec![None; agents.len()];
    let mut held: Vec<Resources> = frameworks.iter().map(|f| f.1.allocated.clone()).collect();
    let agent_index: std::collections::HashMap<&AgentId, usize> =
        agents.iter().enumerate().map(|(i, a)| (&a.0, i)).collect();
    for o in &offers {
        let ai = agent_index.get(&o.agent).copied().unwrap_or(0);
        let fi = index.get(&o.framework).copied().unwrap_or(0);
        holder[ai] = Some(fi);
        held[fi].add(&o.resources);
    }
    let mut next = 0usize;
    let mut g = c.benchmark_group("allocator/event");
    g.bench_function(format!("{a}x{f}"), |b| {
        b.iter(|| {
            // One agent's resources are freed (its tasks ended) ...
            let ai = next % agents.len();
            next += 7;
            let (id, total) = &agents[ai];
            if let Some(fi) = holder[ai] {
                held[fi].subtract(total);
                let mut st = frameworks[fi].1.clone();
                st.allocated = held[fi].clone();
                alloc.update_framework(&frameworks[fi].0, &st);
            }
            alloc.update_agent(id, total, total);
            // ... and the cycle that follows looks at that agent only.
            let out = alloc.allocate(Scope::Agents(std::slice::from_ref(id)), &no_filters);
            holder[ai] = None;
            for o in out {
                if let Some(&fi) = index.get(&o.framework) {
                    held[fi].add(&o.resources);
                    holder[ai] = Some(fi);
                }
            }
        })
    });
    g.finish();
}

fn memory(a: usize, f: usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let s = setup(a, f);
    let with_inputs = LIVE.load(Ordering::Relaxed) - before;
    let inputs: isize = 0;
    drop(s.agents);
    drop(s.frameworks);
    let state = LIVE.load(Ordering::Relaxed) - before - inputs;
    eprintln!(
        "allocator/memory/{a}x{f}: state {:.1} MB, {:.0} bytes per agent (with the bench's own copies of the inputs {:.1} MB)",
        state as f64 / 1e6,
        state as f64 / a as f64,
        with_inputs as f64 / 1e6
    );
    drop(s.alloc);
}

fn benches(c: &mut Criterion) {
    memory(10_000, 1000);
    memory(50_000, 5000);
    cycle(c, 1000, 100);
    cycle(c, 10_000, 1000);
    cycle(c, 50_000, 5000);
    event(c, 10_000, 1000);
    event(c, 50_000, 5000);
}

criterion_group!(allocator, benches);
criterion_main!(allocator);
