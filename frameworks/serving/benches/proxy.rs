//! What the serving proxy adds: latency at a fixed request rate, and
//! requests per second at a fixed concurrency, each measured against calling
//! a replica directly in the same run.
//!
//! Everything is on 127.0.0.1 in this process, on runtimes with threads of
//! their own, as separate processes would be: each replica (a small hyper
//! server on one thread, answering a short JSON body as a model server
//! answers a prediction), the proxy (`mezz_serving::proxy::serve`, two
//! worker threads, as the serving daemon runs it on two cores) and the load
//! generator (hyper HTTP/1.1 client connections, kept alive).
//!
//! - **Open loop**: requests are scheduled at a fixed rate (default 1,000/s
//!   to the replica directly and as many through the proxy, taking turns),
//!   by a pacing thread, whatever the answers do, over 16 connections per
//!   path; a request's latency counts from its scheduled time, so a stall
//!   delays every request scheduled behind it and shows in the figures (no
//!   coordinated omission).
//! - **Closed loop**: N connections each send their next request as soon as
//!   the last one is answered (default 16 and 64): requests per second
//!   directly and through the proxy, taking turns in slices after a warm-up
//!   of each; and the same with three replicas (directly: the connections
//!   spread over them).
//!
//! Both paths take turns within each phase because, on a machine shared with
//! other work, the load moves from second to second far more than the proxy
//! moves the figures. The CPU time each runtime's threads used per request
//! is read from /proc (Linux), to tell where the time goes when all of them
//! share a few cores.
//!
//! Run: `cargo bench -p mezz-serving --bench proxy`. Settings, from the
//! environment: `MEZZ_BENCH_SECS` (measured seconds per path and phase,
//! default 4),
//! `MEZZ_BENCH_RATE` (open-loop requests per second, default 1000),
//! `MEZZ_BENCH_CONCURRENCY` (closed-loop connections, comma-separated,
//! default `16,64`), `MEZZ_BENCH_PROXY_WORKERS` (the proxy runtime's
//! worker threads, default 2).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mezz_serving::metrics::Registry;
use mezz_serving::proxy::{serve, Backends, Routes};
use tokio::runtime::Runtime;

/// What the replica answers: the size of a small model's prediction.
const ANSWER: &str = r#"{"model":"m","version":"v1","predictions":[[0.12,0.88]]}"#;
/// What the client sends: a small prediction request.
const ASK: &str = r#"{"instances":[[1.0,2.0,3.0,4.0]]}"#;
/// Connections the open loop spreads its requests over.
const OPEN_CONNECTIONS: usize = 16;
/// Turns each path of a closed-loop phase takes.
const SLICES: u32 = 4;
/// Replicas behind the proxy in the last closed-loop phase.
const REPLICAS: usize = 3;
/// Linux reports thread CPU times in /proc in units of USER_HZ, which is
/// 100 on every architecture this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            panic!("{name}={v:?} is not a valid number; unset it or give a number")
        }),
        Err(_) => default,
    }
}

fn runtime(name: &str, workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A replica: answers every request with `ANSWER` once its body is read.
async fn replica(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors and the like: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let _ = req.into_body().collect().await;
                let mut r = Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(r)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let a = l.local_addr().expect("the port's address");
    (l, a)
}

/// One kept-alive HTTP/1.1 connection of the load generator.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: hyper::header::HeaderValue,
}

impl Connection {
    async fn open(to: SocketAddr) -> Connection {
        let stream = tokio::net::TcpStream::connect(to)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {to}: {e}"));
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap_or_else(|e| panic!("HTTP handshake with {to}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = to
            .to_string()
            .parse()
            .expect("an address is a header value");
        Connection { sender, host }
    }

    /// One request; whether it was answered 200 with the whole body.
    async fn ask(&mut self) -> bool {
        if self.sender.ready().await.is_err() {
            return false;
        }
        let mut req = Request::new(Full::new(Bytes::from_static(ASK.as_bytes())));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = hyper::Uri::from_static("/v1/models/m:predict");
        let h = req.headers_mut();
        h.insert(hyper::header::HOST, self.host.clone());
        h.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        let Ok(answer) = self.sender.send_request(req).await else {
            return false;
        };
        let ok = answer.status() == StatusCode::OK;
        match answer.into_body().collect().await {
            Ok(body) => ok && body.to_bytes().len() == ANSWER.len(),
            Err(_) => false,
        }
    }
}

async fn connections(targets: &[SocketAddr], n: usize) -> Vec<Connection> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(Connection::open(targets[i % targets.len()]).await);
    }
    out
}

/// Latencies in microseconds, and requests that failed.
#[derive(Default)]
struct Sample {
    micros: Vec<u64>,
    failed: u64,
    /// Open loop: how long after its scheduled time each request was
    /// sent (the pacing thread's lateness, waiting for a free connection,
    /// and waking the task that sends it).
    late_micros: Vec<u64>,
    /// Closed loop: the measured window.
    window: Duration,
    /// Every request sent, warm-up included (for CPU per request).
    sent: u64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Summary {
    count: usize,
    failed: u64,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    rps: f64,
    late_p99: u64,
    sent: u64,
}

fn summarize(mut s: Sample) -> Summary {
    s.micros.sort_unstable();
    s.late_micros.sort_unstable();
    let m = &s.micros;
    Summary {
        count: m.len(),
        failed: s.failed,
        p50: percentile(m, 50.0),
        p90: percentile(m, 90.0),
        p99: percentile(m, 99.0),
        max: m.last().copied().unwrap_or(0),
        rps: if s.window.is_zero() {
            0.0
        } else {
            m.len() as f64 / s.window.as_secs_f64()
        },
        late_p99: percentile(&s.late_micros, 99.0),
        sent: s.sent,
    }
}

/// Latencies, from their scheduled time, of requests released by `rx`
/// onto `conns`, counting those scheduled from `measured_from` on.
fn open_pool(
    conns: Vec<Connection>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Instant>,
    measured_from: Instant,
) -> Vec<tokio::task::JoinHandle<Sample>> {
    // Whichever connection is free takes the next request.
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    conns
        .into_iter()
        .map(|mut conn| {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut s = Sample::default();
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(at) = next else { break };
                    let released = Instant::now();
                    s.sent += 1;
                    let ok = conn.ask().await;
                    let took = at.elapsed();
                    if at < measured_from {
                        continue;
                    }
                    if ok {
                        s.micros.push(took.as_micros() as u64);
                        s.late_micros
                            .push(released.saturating_duration_since(at).as_micros() as u64);
                    } else {
                        s.failed += 1;
                    }
                }
                s
            })
        })
        .collect()
}

async fn gather(workers: Vec<tokio::task::JoinHandle<Sample>>) -> Sample {
    let mut all = Sample::default();
    for w in workers {
        let s = w.await.expect("a load generator task");
        all.micros.extend(s.micros);
        all.late_micros.extend(s.late_micros);
        all.failed += s.failed;
        all.sent += s.sent;
    }
    all
}

/// `rate` requests per second to `direct` and as many to `proxy`, taking
/// turns (one every half interval), for `warm` then `secs`, each path over
/// `OPEN_CONNECTIONS` connections of its own. Both paths see the same
/// moments of the machine's load, which on a shared machine moves the
/// figures far more than the proxy does.
async fn open_loop(
    direct: SocketAddr,
    proxy: SocketAddr,
    rate: u64,
    warm: Duration,
    secs: Duration,
) -> (Sample, Sample) {
    let direct_conns = connections(&[direct], OPEN_CONNECTIONS).await;
    let proxy_conns = connections(&[proxy], OPEN_CONNECTIONS).await;
    let (direct_tx, direct_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let (proxy_tx, proxy_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = Instant::now() + Duration::from_millis(20);
    let measured_from = start + warm;
    let turns = 2 * ((warm + secs).as_secs_f64() * rate as f64) as u64;
    let half = Duration::from_secs_f64(0.5 / rate as f64);
    // A thread of its own paces the requests: the runtime's timer ticks
    // in whole milliseconds, a thread's sleep is finer.
    let pacer = std::thread::spawn(move || {
        for i in 0..turns {
            let at = start + half.mul_f64(i as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let tx = if i % 2 == 0 { &direct_tx } else { &proxy_tx };
            if tx.send(at).is_err() {
                return;
            }
        }
    });
    let direct_workers = open_pool(direct_conns, direct_rx, measured_from);
    let proxy_workers = open_pool(proxy_conns, proxy_rx, measured_from);
    let direct = gather(direct_workers).await;
    let proxy = gather(proxy_workers).await;
    pacer.join().expect("the pacing thread");
    (direct, proxy)
}

/// Every connection of `conns` asking again as soon as answered, for `d`:
/// the connections back, and the requests that completed within `d`.
async fn closed_slice(conns: Vec<Connection>, d: Duration) -> (Vec<Connection>, Sample) {
    let until = Instant::now() + d;
    let workers: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let mut s = Sample::default();
                loop {
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    s.sent += 1;
                    let ok = conn.ask().await;
                    let done = Instant::now();
                    if done > until {
                        break;
                    }
                    if ok {
                        s.micros.push(done.duration_since(sent).as_micros() as u64);
                    } else {
                        s.failed += 1;
                    }
                }
                (conn, s)
            })
        })
        .collect();
    let mut back = Vec::new();
    let mut all = Sample {
        window: d,
        ..Default::default()
    };
    for w in workers {
        let (conn, s) = w.await.expect("a load generator task");
        back.push(conn);
        all.micros.extend(s.micros);
        all.failed += s.failed;
        all.sent += s.sent;
    }
    (back, all)
}

/// The two paths of a closed-loop phase, each over `n` connections of its
/// own: after a warm-up of each, they take turns for `SLICES` slices each,
/// `secs` per path in all, so that both see the same spells of the
/// machine's load. The samples, and each path's CPU use by thread name.
async fn closed_loop(
    direct: &[SocketAddr],
    proxy: SocketAddr,
    n: usize,
    warm: Duration,
    secs: Duration,
) -> [(Sample, HashMap<String, u64>); 2] {
    let mut pools = [connections(direct, n).await, connections(&[proxy], n).await];
    let mut out: [(Sample, HashMap<String, u64>); 2] = Default::default();
    for pool in &mut pools {
        let (back, _) = closed_slice(std::mem::take(pool), warm).await;
        *pool = back;
    }
    let slice = secs / SLICES;
    for _ in 0..SLICES {
        for (pool, (sample, cpu)) in pools.iter_mut().zip(out.iter_mut()) {
            let before = cpu_ticks();
            let (back, s) = closed_slice(std::mem::take(pool), slice).await;
            *pool = back;
            for (name, used) in used_between(&before, cpu_ticks()) {
                *cpu.entry(name).or_default() += used;
            }
            sample.micros.extend(s.micros);
            sample.failed += s.failed;
            sample.sent += s.sent;
            sample.window += s.window;
        }
    }
    out
}

/// CPU ticks used so far by this process's threads, by thread name.
fn cpu_ticks() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (name) state ppid ...": the name may hold spaces, so split
        // after its closing parenthesis; utime and stime are the 14th and
        // 15th fields, the 12th and 13th after it.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        *out.entry(name).or_default() += ticks(11) + ticks(12);
    }
    out
}

/// CPU microseconds per request of the runtime `name`, from the ticks
/// its threads used.
fn cpu_micros(used: &HashMap<String, u64>, name: &str, requests: u64) -> f64 {
    let ticks = used.get(name).copied().unwrap_or(0);
    ticks as f64 / TICKS_PER_SECOND * 1e6 / requests.max(1) as f64
}

fn cpu_line(used: &HashMap<String, u64>, requests: u64) -> String {
    if used.is_empty() {
        return "n/a".into();
    }
    ["client", "proxy", "replica"]
        .iter()
        .map(|name| format!("{name} {:.0}", cpu_micros(used, name, requests)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What each thread name used between two readings.
fn used_between(
    before: &HashMap<String, u64>,
    after: HashMap<String, u64>,
) -> HashMap<String, u64> {
    after
        .into_iter()
        .map(|(name, t)| {
            let used = t.saturating_sub(before.get(&name).copied().unwrap_or(0));
            (name, used)
        })
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "? GiB".into());
    format!("{cores} cores ({model}), {mem}")
}

fn ms(micros: u64) -> String {
    format!("{:.3}", micros as f64 / 1000.0)
}

fn main() {
    let secs = Duration::from_secs_f64(env_or("MEZZ_BENCH_SECS", 4.0_f64).max(0.5));
    let rate: u64 = env_or("MEZZ_BENCH_RATE", 1000_u64).max(1);
    let concurrency: Vec<usize> = std::env::var("MEZZ_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| {
                    panic!("MEZZ_BENCH_CONCURRENCY: {c:?} is not a positive number of connections")
                })
        })
        .collect();
    let warm_open = Duration::from_secs(1);
    let warm_closed = Duration::from_millis(500);

    println!("machine: {}", machine());
    let load_start = loadavg();
    println!("load average at start: {load_start}");

    // One runtime per party, each with threads of its own: each replica
    // (one event loop, as a small model server has), the proxy (as the
    // serving daemon's runtime, a worker per core on two cores) and the
    // load generator.
    let replica_rts: Vec<Runtime> = (0..REPLICAS).map(|_| runtime("replica", 1)).collect();
    let proxy_rt = runtime("proxy", env_or("MEZZ_BENCH_PROXY_WORKERS", 2_usize).max(1));
    let client_rt = runtime("client", 2);

    let replicas: Vec<SocketAddr> = replica_rts
        .iter()
        .map(|rt| {
            rt.block_on(async {
                let (l, a) = bind().await;
                tokio::spawn(replica(l));
                a
            })
        })
        .collect();
    let to_one = |addrs: &[SocketAddr]| Backends {
        stable: addrs.iter().map(|a| a.to_string()).collect(),
        canary: vec![],
        weight: 0,
    };
    let routes = Routes::default();
    routes.set("one", to_one(&replicas[..1]));
    routes.set("three", to_one(&replicas));
    let proxy = |service: &'static str| {
        let routes = routes.clone();
        proxy_rt.block_on(async move {
            let (l, a) = bind().await;
            tokio::spawn(serve(l, service.into(), routes, Registry::default()));
            a
        })
    };
    let proxy_one = proxy("one");
    let proxy_three = proxy("three");

    println!(
        "client, proxy and replicas share this machine's cores; {:.1} s measured per path and phase",
        secs.as_secs_f64()
    );
    println!();
    println!(
        "open loop: {rate} requests/s direct and {rate}/s through the proxy, taking turns, \
         {OPEN_CONNECTIONS} connections each; latency from the scheduled send (ms):"
    );
    println!(
        "{:<8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "path", "requests", "failed", "p50", "p90", "p99", "max", "late p99"
    );
    let before = cpu_ticks();
    let (direct, through) =
        client_rt.block_on(open_loop(replicas[0], proxy_one, rate, warm_open, secs));
    let used = used_between(&before, cpu_ticks());
    let open = [summarize(direct), summarize(through)];
    for (label, s) in ["direct", "proxy"].iter().zip(&open) {
        println!(
            "{:<8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10}",
            label,
            s.count,
            s.failed,
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            ms(s.late_p99),
        );
    }
    let added = |f: fn(&Summary) -> u64| (f(&open[1]) as f64 - f(&open[0]) as f64) / 1000.0;
    println!(
        "added by the proxy: p50 {:+.3} ms, p90 {:+.3} ms, p99 {:+.3} ms (target: p99 under 1 ms); \
         proxy CPU {:.0} µs/request",
        added(|s| s.p50),
        added(|s| s.p90),
        added(|s| s.p99),
        cpu_micros(&used, "proxy", open[1].sent),
    );

    println!();
    println!(
        "closed loop: each connection asks again once answered; direct and proxy take turns, \
         {SLICES} slices each:"
    );
    println!(
        "{:<20} {:>6} {:>10} {:>8} {:>8} {:>6} {:>9}   cpu µs/request",
        "path", "conns", "requests/s", "p50 ms", "p99 ms", "failed", "vs direct"
    );
    let mut phases: Vec<(String, usize, Vec<SocketAddr>, SocketAddr)> = concurrency
        .iter()
        .map(|&n| ("1 replica".to_string(), n, vec![replicas[0]], proxy_one))
        .collect();
    let most = concurrency.iter().copied().max().unwrap_or(64);
    phases.push((
        format!("{REPLICAS} replicas"),
        most,
        replicas.clone(),
        proxy_three,
    ));
    for (what, n, direct, through) in phases {
        let [d, p] = client_rt.block_on(closed_loop(&direct, through, n, warm_closed, secs));
        let (d_used, p_used) = (d.1, p.1);
        let (d, p) = (summarize(d.0), summarize(p.0));
        let ratio = if d.rps > 0.0 {
            format!("{:.0}%", 100.0 * p.rps / d.rps)
        } else {
            "n/a".into()
        };
        for (label, s, used, ratio) in [
            ("direct", &d, &d_used, String::new()),
            ("proxy", &p, &p_used, ratio),
        ] {
            println!(
                "{:<20} {:>6} {:>10.0} {:>8} {:>8} {:>6} {:>9}   {}",
                format!("{label}, {what}"),
                n,
                s.rps,
                ms(s.p50),
                ms(s.p99),
                s.failed,
                ratio,
                cpu_line(used, s.sent),
            );
        }
    }
    println!();
    println!("load average at start: {load_start}; at end: {}", loadavg());
    // The runtimes' servers run until the process ends.
    client_rt.shutdown_background();
    proxy_rt.shutdown_background();
    for rt in replica_rts {
        rt.shutdown_background();
    }
}
