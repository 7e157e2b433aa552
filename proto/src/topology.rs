//! How the GPUs of one agent are connected, and the best-connected set of
//! them for a task that asks for several.
//!
//! An agent with two or more GPUs advertises its topology as the agent
//! attribute [`ATTRIBUTE`] (it rides on every offer, as attributes do):
//! the GPU ids once, then one link code per pair, in the order
//! `(0,1) (0,2) … (0,n-1) (1,2) …`:
//!
//! ```text
//! GPU-a,GPU-b,GPU-c;NV4,PHB,SYS
//! ```
//!
//! The codes are those of `nvidia-smi topo -m`, best first: `NV<n>` (n
//! NVLinks; more is better), `PIX` (one PCIe switch), `PXB` (several PCIe
//! switches), `PHB` (a PCIe host bridge), `NODE` (host bridges within one
//! NUMA node) and `SYS` (across NUMA nodes). A task that asks for k GPUs of
//! an agent gets the k whose slowest link is the fastest, then whose links
//! are the fastest in sum: collective operations go at the pace of their
//! slowest hop.

use std::fmt;

/// The agent attribute that carries the topology.
pub const ATTRIBUTE: &str = "gpu_topology";

/// How two GPUs are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Link {
    /// Through this many NVLinks.
    NvLink(u32),
    /// Through one PCIe switch (`PIX`).
    PcieSwitch,
    /// Through several PCIe switches, without the host bridge (`PXB`).
    PcieSwitches,
    /// Through a PCIe host bridge (`PHB`).
    HostBridge,
    /// Through host bridges within one NUMA node (`NODE`).
    NumaNode,
    /// Across NUMA nodes (`SYS`).
    System,
}

impl Link {
    /// Lower is better: the rank used to compare sets of GPUs.
    pub fn cost(self) -> u32 {
        match self {
            // 1 to 18 NVLinks (NVSwitch systems have 18 per GPU).
            Link::NvLink(n) => 18 - n.clamp(1, 18),
            Link::PcieSwitch => 20,
            Link::PcieSwitches => 21,
            Link::HostBridge => 22,
            Link::NumaNode => 23,
            Link::System => 24,
        }
    }

    /// Reads a code (`NV4`, `PIX`, `PXB`, `PHB`, `NODE`, `SYS`; any case).
    pub fn parse(code: &str) -> Result<Link, TopologyError> {
        let up = code.trim().to_ascii_uppercase();
        let link = match up.as_str() {
            "PIX" => Link::PcieSwitch,
            "PXB" => Link::PcieSwitches,
            "PHB" => Link::HostBridge,
            "NODE" => Link::NumaNode,
            "SYS" => Link::System,
            _ => match up.strip_prefix("NV").map(str::parse::<u32>) {
                Some(Ok(n)) if n > 0 => Link::NvLink(n),
                _ => return Err(TopologyError::Code(code.trim().to_string())),
            },
        };
        Ok(link)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::NvLink(n) => write!(f, "NV{n}"),
            Link::PcieSwitch => f.write_str("PIX"),
            Link::PcieSwitches => f.write_str("PXB"),
            Link::HostBridge => f.write_str("PHB"),
            Link::NumaNode => f.write_str("NODE"),
            Link::System => f.write_str("SYS"),
        }
    }
}

/// What is wrong with a topology text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// A link code that is not one of the known ones.
    #[error("'{0}' is not a GPU link code (NV<n>, PIX, PXB, PHB, NODE or SYS)")]
    Code(String),
    /// The number of links does not match the number of GPUs.
    #[error("{gpus} GPUs need {expected} link codes, one per pair; found {found}")]
    Count {
        /// GPUs named.
        gpus: usize,
        /// Codes needed.
        expected: usize,
        /// Codes given.
        found: usize,
    },
    /// No `;` between the ids and the codes, or an empty id.
    #[error("expected 'ID,ID,…;CODE,CODE,…' with no empty id")]
    Shape,
}

/// The links between every pair of one agent's GPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    ids: Vec<String>,
    /// Upper triangle, row by row: (0,1) (0,2) … (1,2) …
    links: Vec<Link>,
}

impl Topology {
    /// A topology of `ids` with `link(i, j)` between the i-th and j-th
    /// (i < j).
    pub fn new(ids: Vec<String>, mut link: impl FnMut(usize, usize) -> Link) -> Topology {
        let n = ids.len();
        let mut links = Vec::with_capacity(n * n.saturating_sub(1) / 2);
        for i in 0..n {
            for j in i + 1..n {
                links.push(link(i, j));
            }
        }
        Topology { ids, links }
    }

    /// Reads the attribute's text.
    pub fn parse(text: &str) -> Result<Topology, TopologyError> {
        let (ids, codes) = text.split_once(';').ok_or(TopologyError::Shape)?;
        let ids: Vec<String> = ids.split(',').map(|s| s.trim().to_string()).collect();
        if ids.iter().any(String::is_empty) {
            return Err(TopologyError::Shape);
        }
        let links = if codes.trim().is_empty() {
            Vec::new()
        } else {
            codes
                .split(',')
                .map(Link::parse)
                .collect::<Result<Vec<_>, _>>()?
        };
        let expected = ids.len() * (ids.len() - 1) / 2;
        if links.len() != expected {
            return Err(TopologyError::Count {
                gpus: ids.len(),
                expected,
                found: links.len(),
            });
        }
        Ok(Topology { ids, links })
    }

    /// The GPU ids, in the agent's order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|g| g == id)
    }

    fn link_at(&self, i: usize, j: usize) -> Link {
        let (i, j) = if i < j { (i, j) } else { (j, i) };
        let n = self.ids.len();
        // Row i starts after the rows before it: sum of (n-1-r) for r < i.
        let row = i * (2 * n - i - 1) / 2;
        self.links[row + (j - i - 1)]
    }

    /// The link between two GPUs, when both are known.
    pub fn link(&self, a: &str, b: &str) -> Option<Link> {
        let (i, j) = (self.position(a)?, self.position(b)?);
        (i != j).then(|| self.link_at(i, j))
    }

    /// `k` of the `available` GPUs, best connected: the slowest link among
    /// them as fast as can be, then the links as fast as can be in sum;
    /// ties go to the earlier GPUs. Ids the topology does not know are
    /// taken last. `None` when fewer than `k` are available.
    pub fn best_set(&self, available: &[&str], k: usize) -> Option<Vec<String>> {
        if available.len() < k {
            return None;
        }
        let known: Vec<(usize, &str)> = available
            .iter()
            .filter_map(|id| self.position(id).map(|p| (p, *id)))
            .collect();
        if k < 2 || known.len() < k {
            return Some(available.iter().take(k).map(|s| s.to_string()).collect());
        }
        let score = |set: &[usize]| -> (u32, u32) {
            let (mut worst, mut sum) = (0, 0);
            for (x, &a) in set.iter().enumerate() {
                for &b in &set[x + 1..] {
                    let c = self.link_at(known[a].0, known[b].0).cost();
                    worst = worst.max(c);
                    sum += c;
                }
            }
            (worst, sum)
        };
        let best = if binomial(known.len(), k) <= EXHAUSTIVE_SETS {
            let mut best: Option<((u32, u32), Vec<usize>)> = None;
            for_each_combination(known.len(), k, &mut |set| {
                let s = score(set);
                if best.as_ref().is_none_or(|(b, _)| s < *b) {
                    best = Some((s, set.to_vec()));
                }
            });
            best.map(|(_, set)| set)?
        } else {
            // Too many sets to try each: from every GPU in turn, grow a
            // set by whichever GPU keeps it best connected, and keep the
            // best of those.
            let mut best: Option<((u32, u32), Vec<usize>)> = None;
            for seed in 0..known.len() {
                let mut set = vec![seed];
                while set.len() < k {
                    let next = (0..known.len())
                        .filter(|c| !set.contains(c))
                        .min_by_key(|&c| {
                            let mut trial = set.clone();
                            trial.push(c);
                            score(&trial)
                        })?;
                    set.push(next);
                }
                set.sort_unstable();
                let s = score(&set);
                if best.as_ref().is_none_or(|(b, _)| s < *b) {
                    best = Some((s, set));
                }
            }
            best.map(|(_, set)| set)?
        };
        Some(best.into_iter().map(|i| known[i].1.to_string()).collect())
    }
}

/// Sets tried one by one at most; beyond, the greedy choice.
const EXHAUSTIVE_SETS: u64 = 20_000;

fn binomial(n: usize, k: usize) -> u64 {
    let k = k.min(n - k) as u64;
    let mut r: u64 = 1;
    for i in 0..k {
        r = r.saturating_mul(n as u64 - i) / (i + 1);
    }
    r
}

/// Calls `f` with every k-subset of `0..n`, in lexicographic order.
fn for_each_combination(n: usize, k: usize, f: &mut dyn FnMut(&[usize])) {
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        f(&idx);
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + n - k) else {
            return;
        };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.ids.join(","))?;
        f.write_str(";")?;
        for (i, l) in self.links.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two NVLink pairs (0-1, 2-3) on one host bridge each, the bridges on
    /// different NUMA nodes: a DGX-like 4-GPU box.
    fn four() -> Topology {
        let ids = (0..4).map(|i| format!("g{i}")).collect();
        Topology::new(ids, |i, j| match (i, j) {
            (0, 1) | (2, 3) => Link::NvLink(4),
            _ => Link::System,
        })
    }

    #[test]
    fn text_round_trips_and_links_are_symmetric() {
        let t = four();
        let text = t.to_string();
        assert_eq!(text, "g0,g1,g2,g3;NV4,SYS,SYS,SYS,SYS,NV4");
        assert_eq!(Topology::parse(&text), Ok(t.clone()));
        assert_eq!(t.link("g1", "g0"), Some(Link::NvLink(4)));
        assert_eq!(t.link("g3", "g2"), Some(Link::NvLink(4)));
        assert_eq!(t.link("g0", "g3"), Some(Link::System));
        assert_eq!(t.link("g0", "g0"), None);
        assert_eq!(t.link("g0", "x"), None);
        let one = Topology::parse("only;").expect("one GPU");
        assert_eq!(one.ids(), ["only"]);
    }

    #[test]
    fn bad_text_names_the_problem() {
        assert_eq!(
            Topology::parse("a,b;FAST"),
            Err(TopologyError::Code("FAST".into()))
        );
        assert_eq!(
            Topology::parse("a,b,c;NV1"),
            Err(TopologyError::Count {
                gpus: 3,
                expected: 3,
                found: 1
            })
        );
        assert_eq!(Topology::parse("a,b"), Err(TopologyError::Shape));
        assert_eq!(Topology::parse("a,,b;PIX"), Err(TopologyError::Shape));
        assert_eq!(Link::parse("nv0"), Err(TopologyError::Code("nv0".into())));
        assert_eq!(Link::parse(" pix "), Ok(Link::PcieSwitch));
    }

    #[test]
    fn two_gpus_go_to_an_nvlink_pair() {
        let t = four();
        let all = ["g0", "g1", "g2", "g3"];
        assert_eq!(t.best_set(&all, 2).unwrap(), ["g0", "g1"]);
        // g0 is taken: the other pair, not g1 with a stranger.
        assert_eq!(t.best_set(&["g1", "g2", "g3"], 2).unwrap(), ["g2", "g3"]);
        // Only strangers left: any two, the earliest.
        assert_eq!(t.best_set(&["g1", "g3"], 2).unwrap(), ["g1", "g3"]);
        assert_eq!(t.best_set(&["g1"], 2), None);
        assert_eq!(t.best_set(&all, 1).unwrap(), ["g0"]);
    }

    #[test]
    fn more_links_and_nearer_switches_win() {
        let ids = (0..4).map(|i| format!("g{i}")).collect();
        let t = Topology::new(ids, |i, j| match (i, j) {
            (0, 1) => Link::NvLink(1),
            (2, 3) => Link::NvLink(2),
            (0, 2) => Link::PcieSwitch,
            _ => Link::HostBridge,
        });
        let all = ["g0", "g1", "g2", "g3"];
        assert_eq!(t.best_set(&all, 2).unwrap(), ["g2", "g3"]);
        assert_eq!(t.best_set(&["g0", "g1", "g2"], 2).unwrap(), ["g0", "g1"]);
        // Three: every set has a host-bridge link; then the fastest links
        // in sum win (NV2 and the shared switch of g0 and g2).
        assert_eq!(t.best_set(&all, 3).unwrap(), ["g0", "g2", "g3"]);
    }

    #[test]
    fn large_machines_take_the_greedy_path_and_stay_in_their_island() {
        // 32 GPUs in four NVLink islands of eight; a k of 8 has C(32,8)
        // sets, far over the exhaustive bound.
        let ids: Vec<String> = (0..32).map(|i| format!("g{i:02}")).collect();
        let t = Topology::new(ids.clone(), |i, j| {
            if i / 8 == j / 8 {
                Link::NvLink(12)
            } else {
                Link::System
            }
        });
        // Island 0 is partly used: the first whole island is 1 (g08..g15).
        let available: Vec<&str> = ids.iter().skip(3).map(String::as_str).collect();
        let set = t.best_set(&available, 8).unwrap();
        let expected: Vec<String> = (8..16).map(|i| format!("g{i:02}")).collect();
        assert_eq!(set, expected);
    }

    #[test]
    fn combinations_are_all_visited_once() {
        let mut seen = Vec::new();
        for_each_combination(5, 3, &mut |s| seen.push(s.to_vec()));
        assert_eq!(seen.len(), 10);
        assert_eq!(seen.first().unwrap(), &[0, 1, 2]);
        assert_eq!(seen.last().unwrap(), &[2, 3, 4]);
        assert_eq!(binomial(32, 8), 10_518_300);
        assert_eq!(binomial(16, 8), 12_870);
    }
}
