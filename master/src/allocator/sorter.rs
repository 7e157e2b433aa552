//! The hierarchical DRF sorter (Mesos's `Sorter` seam): a tree of roles
//! (`eng` above `eng/ml`) whose leaves are frameworks. Every node keeps its
//! subtree's allocation, and every inner node keeps its children ordered by
//! weighted dominant share, so the most deserving client is found by
//! walking down the tree instead of scanning every framework. Knows nothing
//! of agents, quotas or offers.

use std::collections::BTreeSet;

use crate::hashing::Map;
use std::sync::Arc;

use mezz_proto::FrameworkId;

use super::share::Qty;

/// Index of a node in the tree; the root is 0.
pub type NodeId = usize;

/// What a node stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// The root of the tree.
    Root,
    /// A role (its full hierarchical name).
    Role(Arc<str>),
    /// A framework.
    Framework(FrameworkId),
}

/// Ordering key among siblings: weighted share (as ordered bits of a
/// non-negative f64), then name so ties are broken the same way every time.
type Key = (u64, Arc<str>, NodeId);

/// One node of the tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// Role, framework or root.
    pub kind: Kind,
    /// Parent node (the root is its own parent).
    pub parent: NodeId,
    /// Depth below the root (top-level roles are 1).
    pub depth: usize,
    /// DRF weight; a share is divided by it.
    pub weight: f64,
    /// What the subtree holds.
    pub allocated: Qty,
    name: Arc<str>,
    key: u64,
    children: BTreeSet<Key>,
    live: bool,
}

/// The tree. See the module docs.
#[derive(Debug, Clone)]
pub struct Sorter {
    nodes: Vec<Node>,
    roles: Map<Arc<str>, NodeId>,
    frameworks: Map<FrameworkId, NodeId>,
    total: Qty,
}

impl Default for Sorter {
    fn default() -> Self {
        Sorter {
            nodes: vec![Node {
                kind: Kind::Root,
                parent: 0,
                depth: 0,
                weight: 1.0,
                allocated: Qty::default(),
                name: Arc::from(""),
                key: 0,
                children: BTreeSet::new(),
                live: true,
            }],
            roles: Map::default(),
            frameworks: Map::default(),
            total: Qty::default(),
        }
    }
}

/// The parent role of `eng/ml` is `eng`; a top-level role has none.
pub fn parent_role(role: &str) -> Option<&str> {
    role.rsplit_once('/').map(|(p, _)| p)
}

impl Sorter {
    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The cluster total that shares are taken of.
    pub fn total(&self) -> Qty {
        self.total
    }

    /// Sets the cluster total; every key is recomputed.
    pub fn set_total(&mut self, total: Qty) {
        if total == self.total {
            return;
        }
        self.total = total;
        for id in 0..self.nodes.len() {
            self.nodes[id].children.clear();
        }
        for id in 1..self.nodes.len() {
            if !self.nodes[id].live {
                continue;
            }
            let key = self.compute_key(id);
            self.nodes[id].key = key;
            let (p, name) = (self.nodes[id].parent, self.nodes[id].name.clone());
            self.nodes[p].children.insert((key, name, id));
        }
    }

    fn compute_key(&self, id: NodeId) -> u64 {
        let n = &self.nodes[id];
        let share = n.allocated.dominant_share(&self.total) / n.weight.max(1e-9);
        share.max(0.0).to_bits()
    }

    fn attach(&mut self, kind: Kind, name: Arc<str>, parent: NodeId, weight: f64) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node {
            kind,
            parent,
            depth: self.nodes[parent].depth + 1,
            weight,
            allocated: Qty::default(),
            name: name.clone(),
            key: 0,
            children: BTreeSet::new(),
            live: true,
        });
        let key = self.compute_key(id);
        self.nodes[id].key = key;
        self.nodes[parent].children.insert((key, name, id));
        id
    }

    /// The node of `role`, created (with its parents) when missing.
    pub fn role(&mut self, role: &str) -> NodeId {
        if let Some(&id) = self.roles.get(role) {
            return id;
        }
        let parent = match parent_role(role) {
            Some(p) => self.role(p),
            None => 0,
        };
        let name: Arc<str> = Arc::from(role);
        let id = self.attach(Kind::Role(name.clone()), name.clone(), parent, 1.0);
        self.roles.insert(name, id);
        id
    }

    /// The node of `role` if it exists.
    pub fn find_role(&self, role: &str) -> Option<NodeId> {
        self.roles.get(role).copied()
    }

    /// The node of a framework if it is in the tree.
    pub fn find_framework(&self, id: &FrameworkId) -> Option<NodeId> {
        self.frameworks.get(id).copied()
    }

    /// Adds a framework under `role` (moving it if it was elsewhere).
    pub fn add_framework(&mut self, id: &FrameworkId, role: &str) -> NodeId {
        let r = self.role(role);
        if let Some(&n) = self.frameworks.get(id) {
            if self.nodes[n].parent == r {
                return n;
            }
            self.remove_framework(id);
        }
        let n = self.attach(Kind::Framework(id.clone()), Arc::from(id.as_str()), r, 1.0);
        self.frameworks.insert(id.clone(), n);
        n
    }

    /// Removes a framework and its allocation from the tree.
    pub fn remove_framework(&mut self, id: &FrameworkId) {
        let Some(n) = self.frameworks.remove(id) else {
            return;
        };
        let held = self.nodes[n].allocated;
        self.change(n, Qty::default().delta(held));
        let node = &self.nodes[n];
        let k = (node.key, node.name.clone(), n);
        let p = node.parent;
        self.nodes[p].children.remove(&k);
        self.nodes[n].live = false;
    }

    /// Sets a role's weight.
    pub fn set_weight(&mut self, role: &str, weight: f64) {
        let id = self.role(role);
        self.nodes[id].weight = if weight > 0.0 { weight } else { 1.0 };
        self.rekey(id);
    }

    fn rekey(&mut self, id: NodeId) {
        let key = self.compute_key(id);
        let node = &self.nodes[id];
        if key == node.key {
            return;
        }
        let old = (node.key, node.name.clone(), id);
        let p = node.parent;
        self.nodes[p].children.remove(&old);
        self.nodes[id].key = key;
        let name = old.1;
        self.nodes[p].children.insert((key, name, id));
    }

    /// Adds a signed difference to a node's allocation and to every
    /// ancestor's, keeping the sibling orders right.
    pub fn change(&mut self, mut id: NodeId, d: [i64; 4]) {
        while id != 0 {
            self.nodes[id].allocated.apply(d);
            self.rekey(id);
            id = self.nodes[id].parent;
        }
        self.nodes[0].allocated.apply(d);
    }

    /// Visits leaves (frameworks) in DRF order, depth first: among siblings
    /// the lowest weighted share first. `enter` decides whether a role's
    /// subtree is worth visiting; the first leaf `take` accepts is returned.
    pub fn pick(
        &self,
        enter: &mut dyn FnMut(NodeId, &Node) -> bool,
        take: &mut dyn FnMut(NodeId, &Node) -> bool,
    ) -> Option<NodeId> {
        self.pick_under(0, enter, take)
    }

    fn pick_under(
        &self,
        at: NodeId,
        enter: &mut dyn FnMut(NodeId, &Node) -> bool,
        take: &mut dyn FnMut(NodeId, &Node) -> bool,
    ) -> Option<NodeId> {
        for &(_, _, child) in &self.nodes[at].children {
            let node = &self.nodes[child];
            match node.kind {
                Kind::Framework(_) => {
                    if take(child, node) {
                        return Some(child);
                    }
                }
                _ => {
                    if enter(child, node) {
                        if let Some(found) = self.pick_under(child, enter, take) {
                            return Some(found);
                        }
                    }
                }
            }
        }
        None
    }

    /// The role nodes from `id`'s role up to the top (for a framework, its
    /// role first).
    pub fn role_chain(&self, mut id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        if matches!(self.nodes[id].kind, Kind::Framework(_)) {
            id = self.nodes[id].parent;
        }
        std::iter::successors((id != 0).then_some(id), move |&n| {
            let p = self.nodes[n].parent;
            (p != 0).then_some(p)
        })
    }

    /// Every live role: (name, node).
    pub fn roles(&self) -> impl Iterator<Item = (&str, NodeId)> {
        self.roles.iter().map(|(r, &n)| (r.as_ref(), n))
    }

    /// How many nodes the tree has allocated (for memory estimates).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no role or framework was ever added.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_weighted_share_first_and_hierarchy_sums() {
        let mut s = Sorter::default();
        s.set_total(Qty([10_000, 10_000, 0, 0]));
        let a = s.add_framework(&"a".into(), "eng/ml");
        let b = s.add_framework(&"b".into(), "ops");
        s.change(a, [2000, 0, 0, 0]);
        s.change(b, [3000, 0, 0, 0]);
        let first = s.pick(&mut |_, _| true, &mut |_, _| true);
        assert_eq!(first, Some(a));
        assert_eq!(s.node(s.find_role("eng").unwrap()).allocated.0[0], 2000);
        // eng weighted 0.5 now has share 0.4 > ops's 0.3.
        s.set_weight("eng", 0.5);
        assert_eq!(s.pick(&mut |_, _| true, &mut |_, _| true), Some(b));
        s.remove_framework(&"b".into());
        assert_eq!(s.node(s.find_role("ops").unwrap()).allocated.0[0], 0);
        assert_eq!(s.pick(&mut |_, _| true, &mut |_, _| true), Some(a));
    }
}
