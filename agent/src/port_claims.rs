//! Port claims of the agents of one machine. Several agents can run on one
//! host (`mezz dev --agents N`, one agent per NUMA node or GPU tray); when
//! two of them offer overlapping port ranges, two tasks can be handed the
//! same host:port and the second cannot bind. Before it registers, an agent
//! records its port ranges in a claims file shared by the agents of the
//! host, under an advisory lock, and refuses to start when a live agent of
//! the same cluster already claims an overlapping range in the same
//! work-dir root or on the same advertised host.
//!
//! Where it can tell: agents that run as the same user on this machine
//! (they share the claims directory: `/run/mezzanine` for root, else
//! `$XDG_RUNTIME_DIR/mezzanine`, else `$TMPDIR/mezzanine-<uid>`) and name a
//! master address in common. Agents of other clusters, other users, other
//! machines (a work dir on a shared filesystem) or other containers with
//! their own `/run` are not compared. A claims file that cannot be used is
//! a warning, not a reason to stop: the check is a guard, not a lock on the
//! ports themselves.
//!
//! The comparison is pure ([`conflict`]); the file and its lock are the thin
//! shell around it ([`claim`]). It owns nothing else of the agent.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The claims file in the claims directory.
const CLAIMS_FILE: &str = "agent-ports.json";
/// The file whose advisory lock guards [`CLAIMS_FILE`].
const LOCK_FILE: &str = "agent-ports.lock";
/// How long to wait for another agent to let go of the lock.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// One agent's claim on port ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The agent's id.
    pub agent_id: String,
    /// The address it advertises (`host:port` of its API).
    pub address: String,
    /// The host part of `address` (else the hostname): tasks of agents
    /// with the same advertised host share one network.
    pub host: String,
    /// Its `--work-dir`; the same work dir is the same agent (the
    /// checkpoint lock lets only one run there).
    pub work_dir: PathBuf,
    /// The directory holding the work dir: agents in one root are agents
    /// of one machine.
    pub root: PathBuf,
    /// The masters it registers with: claims are compared only within a
    /// cluster.
    pub masters: Vec<String>,
    /// The port ranges it offers, inclusive.
    pub ports: Vec<(u64, u64)>,
    /// The process that runs it, and that process's start time (in clock
    /// ticks since boot, from `/proc/PID/stat`), so a reused pid does not
    /// keep a dead agent's claim alive.
    pub pid: u32,
    /// See `pid`.
    pub started: u64,
}

/// Another agent already claims some of our ports.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "ports {mine} overlap ports {theirs} of agent {agent} ({address}, work dir {work_dir}, pid \
     {pid}), which runs on the same {why}; give each agent of a host its own range, e.g. \
     --resources 'ports:[{hint}]'"
)]
pub struct Conflict {
    /// Our overlapping range, `begin-end`.
    pub mine: String,
    /// Theirs, `begin-end`.
    pub theirs: String,
    /// The other agent's id.
    pub agent: String,
    /// Its advertised address.
    pub address: String,
    /// Its work dir.
    pub work_dir: String,
    /// Its process.
    pub pid: u32,
    /// "host (127.0.0.1)" or "work-dir root (/var/lib/mezz)".
    pub why: String,
    /// A range of the same size that nobody here claims.
    pub hint: String,
}

/// The first claim of `others` that `mine` must not overlap, as a
/// [`Conflict`]. Claims of the same work dir are ours (a restart), dead
/// ones (`alive` says no) and other clusters' do not count.
pub fn conflict(
    mine: &Claim,
    others: &[Claim],
    alive: impl Fn(&Claim) -> bool,
) -> Option<Conflict> {
    let relevant: Vec<&Claim> = others
        .iter()
        .filter(|o| o.work_dir != mine.work_dir)
        .filter(|o| o.masters.iter().any(|m| mine.masters.contains(m)))
        .filter(|o| o.root == mine.root || o.host == mine.host)
        .filter(|o| alive(o))
        .collect();
    for other in &relevant {
        let Some((m, t)) = first_overlap(&mine.ports, &other.ports) else {
            continue;
        };
        let why = if other.host == mine.host {
            format!("host ({})", mine.host)
        } else {
            format!("work-dir root ({})", mine.root.display())
        };
        let taken: Vec<(u64, u64)> = relevant.iter().flat_map(|o| o.ports.clone()).collect();
        let size = mine.ports.iter().map(|(b, e)| e - b + 1).sum::<u64>();
        return Some(Conflict {
            mine: range_text(m),
            theirs: range_text(t),
            agent: other.agent_id.clone(),
            address: other.address.clone(),
            work_dir: other.work_dir.display().to_string(),
            pid: other.pid,
            why,
            hint: free_range(&taken, size.max(1)).map_or_else(|| "…".to_string(), range_text),
        });
    }
    None
}

fn range_text((b, e): (u64, u64)) -> String {
    if b == e {
        b.to_string()
    } else {
        format!("{b}-{e}")
    }
}

/// The first pair of ranges, one from each list, that overlap.
fn first_overlap(a: &[(u64, u64)], b: &[(u64, u64)]) -> Option<((u64, u64), (u64, u64))> {
    a.iter()
        .flat_map(|&x| b.iter().map(move |&y| (x, y)))
        .find(|&((ab, ae), (bb, be))| ab <= be && bb <= ae)
}

/// The lowest range of `size` ports from 31000 up that overlaps none of
/// `taken`.
fn free_range(taken: &[(u64, u64)], size: u64) -> Option<(u64, u64)> {
    let mut begin = 31000u64;
    while begin + size - 1 <= 65535 {
        let end = begin + size - 1;
        match taken
            .iter()
            .filter(|&&(b, e)| b <= end && begin <= e)
            .map(|&(_, e)| e)
            .max()
        {
            Some(e) => begin = e + 1,
            None => return Some((begin, end)),
        }
    }
    None
}

/// Where the agents of this user on this machine keep their claims.
pub fn default_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/mezzanine");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("mezzanine"),
        _ => std::env::temp_dir().join(format!("mezzanine-{}", nix::unistd::geteuid())),
    }
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), or
/// `None` when it does not run.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn is_alive(c: &Claim) -> bool {
    process_start(c.pid) == Some(c.started)
}

/// Our claim, held while the agent runs; dropping it withdraws it.
#[derive(Debug)]
pub struct Held {
    dir: PathBuf,
    work_dir: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        let work_dir = self.work_dir.clone();
        let result = with_claims(&self.dir, |claims| {
            claims.retain(|c| c.work_dir != work_dir);
            Ok::<(), ()>(())
        });
        if let Err(e) = result {
            tracing::debug!("could not withdraw the port claim: {e}");
        }
    }
}

/// Records `mine` in the claims of `dir`, unless a live agent there
/// already claims overlapping ports (see [`conflict`]). `Ok(None)` when the
/// claims file cannot be used: that is logged, and the agent goes on.
pub fn claim(dir: &Path, mine: Claim) -> Result<Option<Held>, Box<Conflict>> {
    let work_dir = mine.work_dir.clone();
    let outcome = with_claims(dir, |claims| {
        claims.retain(is_alive);
        if let Some(c) = conflict(&mine, claims, |_| true) {
            return Err(Box::new(c));
        }
        claims.retain(|c| c.work_dir != mine.work_dir);
        claims.push(mine.clone());
        Ok(())
    });
    match outcome {
        Ok(Ok(())) => Ok(Some(Held {
            dir: dir.to_path_buf(),
            work_dir,
        })),
        Ok(Err(conflict)) => Err(conflict),
        Err(e) => {
            tracing::warn!(
                "cannot check this agent's ports against other agents of this host ({e}); \
                 make sure no other agent here offers the same ports"
            );
            Ok(None)
        }
    }
}

/// Runs `change` on the claims of `dir` under the lock, and writes them
/// back (atomically, by rename) when it returns `Ok`.
fn with_claims<T>(
    dir: &Path,
    change: impl FnOnce(&mut Vec<Claim>) -> Result<(), T>,
) -> std::io::Result<Result<(), T>> {
    std::fs::create_dir_all(dir)?;
    let _lock = lock(&dir.join(LOCK_FILE))?;
    let path = dir.join(CLAIMS_FILE);
    let mut claims = read_claims(&path)?;
    if let Err(e) = change(&mut claims) {
        return Ok(Err(e));
    }
    let tmp = dir.join(format!("{CLAIMS_FILE}.{}", std::process::id()));
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(&claims).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(Ok(()))
}

fn read_claims(path: &Path) -> std::io::Result<Vec<Claim>> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_string(&mut text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    // Claims are soft state that live agents rebuild: an unreadable file
    // is replaced, not a reason to stop.
    Ok(serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!(
            "ignoring the unreadable port claims in {}: {e}",
            path.display()
        );
        Vec::new()
    }))
}

/// An exclusive advisory lock on `path`, waiting up to [`LOCK_WAIT`].
fn lock(path: &Path) -> std::io::Result<nix::fcntl::Flock<File>> {
    use nix::fcntl::{Flock, FlockArg};
    let deadline = Instant::now() + LOCK_WAIT;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, errno)) => {
                return Err(std::io::Error::other(format!(
                    "locking {}: {errno}",
                    path.display()
                )))
            }
        }
    }
}

/// The host part of an advertised `host:port` (`[v6]:port` too), else
/// `hostname`.
pub fn advertised_host(address: &str, hostname: &str) -> String {
    match address.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => host.trim_matches(['[', ']']).to_string(),
        _ => hostname.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_of(work_dir: &str, host: &str, ports: &[(u64, u64)]) -> Claim {
        let work_dir = PathBuf::from(work_dir);
        Claim {
            agent_id: format!("id-{}", work_dir.display()),
            address: format!("{host}:5051"),
            host: host.into(),
            root: work_dir.parent().map(Path::to_path_buf).unwrap_or_default(),
            work_dir,
            masters: vec!["127.0.0.1:5050".into()],
            ports: ports.to_vec(),
            pid: std::process::id(),
            started: process_start(std::process::id()).expect("we run"),
        }
    }

    #[test]
    fn overlap_on_one_host_or_one_root_conflicts() {
        let first = claim_of("/data/agent-1", "127.0.0.1", &[(31000, 32000)]);
        let same_host = claim_of("/elsewhere/agent-2", "127.0.0.1", &[(31500, 31600)]);
        let c = conflict(&same_host, std::slice::from_ref(&first), |_| true).expect("conflict");
        assert_eq!(
            (c.mine.as_str(), c.theirs.as_str()),
            ("31500-31600", "31000-32000")
        );
        let text = c.to_string();
        assert!(
            text.contains("agent id-/data/agent-1 (127.0.0.1:5051"),
            "{text}"
        );
        assert!(text.contains("same host (127.0.0.1)"), "{text}");
        assert!(text.contains("'ports:[32001-32101]'"), "{text}");

        let same_root = claim_of("/data/agent-2", "10.0.0.9", &[(32000, 32000)]);
        let c = conflict(&same_root, std::slice::from_ref(&first), |_| true).expect("conflict");
        assert!(c.to_string().contains("work-dir root (/data)"), "{c}");
    }

    #[test]
    fn what_does_not_conflict() {
        let first = claim_of("/data/agent-1", "127.0.0.1", &[(31000, 31499)]);
        let others = std::slice::from_ref(&first);
        // Disjoint ranges.
        let next = claim_of("/data/agent-2", "127.0.0.1", &[(31500, 31999)]);
        assert_eq!(conflict(&next, others, |_| true), None);
        // The same work dir: the same agent, restarted.
        let again = claim_of("/data/agent-1", "127.0.0.1", &[(31000, 31499)]);
        assert_eq!(conflict(&again, others, |_| true), None);
        // Another host and another root.
        let far = claim_of("/other/agent-1", "10.0.0.2", &[(31000, 31499)]);
        assert_eq!(conflict(&far, others, |_| true), None);
        // Another cluster.
        let mut other_cluster = claim_of("/data/agent-3", "127.0.0.1", &[(31000, 31499)]);
        other_cluster.masters = vec!["127.0.0.1:6060".into()];
        assert_eq!(conflict(&other_cluster, others, |_| true), None);
        // A dead agent's claim.
        let late = claim_of("/data/agent-4", "127.0.0.1", &[(31000, 31499)]);
        assert_eq!(conflict(&late, others, |_| false), None);
    }

    #[test]
    fn the_claims_file_refuses_then_frees_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = claim_of("/data/agent-1", "127.0.0.1", &[(31000, 31499)]);
        let held = claim(dir.path(), first)
            .expect("no conflict")
            .expect("usable file");
        let second = claim_of("/data/agent-2", "127.0.0.1", &[(31400, 31999)]);
        let err = claim(dir.path(), second.clone()).expect_err("overlap");
        assert_eq!(err.theirs, "31000-31499");
        // Restarting the first agent in its work dir is no conflict.
        let restarted = claim_of("/data/agent-1", "127.0.0.1", &[(31000, 31499)]);
        let held_again = claim(dir.path(), restarted).expect("ours").expect("usable");
        drop(held);
        drop(held_again);
        assert!(claim(dir.path(), second).expect("freed").is_some());
        let text = std::fs::read_to_string(dir.path().join(CLAIMS_FILE)).expect("claims");
        assert!(!text.contains("agent-1"), "withdrawn: {text}");
    }

    #[test]
    fn dead_processes_and_garbage_do_not_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut dead = claim_of("/data/agent-1", "127.0.0.1", &[(31000, 31499)]);
        dead.started += 1; // the pid runs, but it is another process now
        std::fs::write(
            dir.path().join(CLAIMS_FILE),
            serde_json::to_string(&vec![dead]).expect("json"),
        )
        .expect("write");
        let mine = claim_of("/data/agent-2", "127.0.0.1", &[(31000, 31499)]);
        assert!(claim(dir.path(), mine.clone())
            .expect("stale claim")
            .is_some());
        std::fs::write(dir.path().join(CLAIMS_FILE), "{not json").expect("write");
        assert!(claim(dir.path(), mine).expect("garbage").is_some());
    }

    #[test]
    fn hosts_and_free_ranges() {
        assert_eq!(advertised_host("127.0.0.1:5051", "h"), "127.0.0.1");
        assert_eq!(advertised_host("[::1]:5051", "h"), "::1");
        assert_eq!(advertised_host("", "h"), "h");
        assert_eq!(free_range(&[(31000, 31009)], 10), Some((31010, 31019)));
        assert_eq!(
            free_range(&[(31003, 31009), (31010, 31020)], 5),
            Some((31021, 31025))
        );
        assert_eq!(free_range(&[(31000, 65535)], 1), None);
    }
}
