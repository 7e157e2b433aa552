//! The one resource math of Mezzanine: parsing `--resources`, converting to
//! and from the wire, and the algebra (add, subtract, contains) that the
//! allocator uses to make offers, the master uses to validate accepts, and
//! the SDK re-exports to frameworks. Nobody else re-implements "fits".
//!
//! A resource may be reserved for a role (`cpus(eng):4`, or `role` on the
//! wire): resources are keyed by (name, role), unreserved being the default.
//! `contains`, `add` and `subtract` keep roles apart, so reserved resources
//! never satisfy an unreserved request and the other way round.
//!
//! Scalars are kept in thousandths (as Mesos keeps fixed-point values) so
//! that adding and subtracting `0.1` a thousand times gives back exactly what
//! was there: float drift would otherwise leave crumbs that never fit.
//!
//! Why one file of some 800 lines: it is one concept, the `Resources` value
//! and its algebra, and keeping parsing, the wire forms and the operations
//! side by side is what keeps every caller on the same definition of
//! "fits". Its tests live in `resources_tests.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::v1::{self, resource::Value};

/// Why a resource description was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// A token of a `--resources` string could not be read.
    #[error("invalid resource '{token}': {reason}")]
    Parse {
        /// The offending token, as written.
        token: String,
        /// What is wrong with it and what is expected.
        reason: String,
    },
    /// A resource received over the wire is invalid.
    #[error("invalid resource '{name}': {reason}")]
    Invalid {
        /// The resource's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A bag of named resources: scalars (cpus, mem, disk, ...), ranges (ports)
/// and sets (GPU identities), each unreserved or reserved for a role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    scalars: BTreeMap<String, i64>,
    ranges: BTreeMap<String, Vec<(u64, u64)>>,
    sets: BTreeMap<String, BTreeSet<String>>,
    /// Reserved resources by role; the inner bags hold no reservations of
    /// their own, and no role maps to an empty bag.
    reserved: BTreeMap<String, Resources>,
}

/// The role name that means "unreserved" in `name(role)`, as in Mesos.
pub const UNRESERVED_ROLE: &str = "*";

/// CPUs (scalar, fractional).
pub const CPUS: &str = "cpus";
/// Memory in MB (scalar).
pub const MEM: &str = "mem";
/// Disk in MB (scalar).
pub const DISK: &str = "disk";
/// GPUs: a scalar count in requests, a set of GPU identities in offers and
/// launches.
pub const GPUS: &str = "gpus";
/// Ports (ranges).
pub const PORTS: &str = "ports";
/// The resources that count towards dominant shares, quotas and the
/// views' totals, in this order everywhere.
pub const SHARE_NAMES: [&str; 4] = [CPUS, MEM, DISK, GPUS];

/// The longest role name accepted, in bytes.
pub const MAX_ROLE_LEN: usize = 255;

/// Checks a role name as Mesos does: `*` (the default role), or components
/// separated by `/` (a hierarchy, `eng/ml`), none of them empty, `.` or
/// `..`, none starting with `-`, each made of letters, digits, `_`, `-`
/// and `.`; at most [`MAX_ROLE_LEN`] bytes in all. Roles end up in paths,
/// metrics labels and HTML, so anything else is refused rather than
/// escaped everywhere.
pub fn check_role(role: &str) -> Result<(), String> {
    if role == UNRESERVED_ROLE {
        return Ok(());
    }
    if role.is_empty() {
        return Err("the role is empty; name a role like 'eng/ml', or '*'".into());
    }
    if role.len() > MAX_ROLE_LEN {
        return Err(format!(
            "role '{}…' is longer than {MAX_ROLE_LEN} bytes",
            role.chars().take(32).collect::<String>().escape_debug()
        ));
    }
    for seg in role.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!(
                "role '{}' has an empty, '.' or '..' component (or a '/' at an end); \
                 write roles like 'eng/ml'",
                role.escape_debug()
            ));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(format!(
                "role '{}' contains '{}'; use letters, digits, '_', '-', '.' and '/'",
                role.escape_debug(),
                c.escape_debug()
            ));
        }
        if seg.starts_with('-') {
            return Err(format!(
                "role '{role}' has a component starting with '-'; start it with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// Splits `cpus(eng)` into (`cpus`, `Some("eng")`); `(*)` is unreserved.
fn split_role(name: &str) -> Result<(&str, Option<&str>), String> {
    let Some((n, rest)) = name.split_once('(') else {
        return Ok((name, None));
    };
    let role = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("'{name}' must end with ')', as in 'cpus(eng)'"))?;
    check_role(role)?;
    Ok((n.trim(), (role != UNRESERVED_ROLE).then_some(role)))
}

const MILLI: f64 = 1000.0;
/// The largest scalar we accept, so that milli-units never overflow.
const MAX_SCALAR: f64 = 1.0e12;

fn to_milli(value: f64) -> Option<i64> {
    if !value.is_finite() || !(0.0..=MAX_SCALAR).contains(&value) {
        return None;
    }
    Some((value * MILLI).round() as i64)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "the name contains '{c}'; use letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
fn normalize(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (b, e) in ranges {
        match out.last_mut() {
            Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((b, e)),
        }
    }
    out
}

fn ranges_contain(outer: &[(u64, u64)], inner: &[(u64, u64)]) -> bool {
    inner
        .iter()
        .all(|&(b, e)| outer.iter().any(|&(ob, oe)| ob <= b && e <= oe))
}

fn ranges_subtract(from: &[(u64, u64)], take: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(b, e) in from {
        let mut pieces = vec![(b, e)];
        for &(tb, te) in take {
            let mut next = Vec::new();
            for (pb, pe) in pieces {
                if te < pb || tb > pe {
                    next.push((pb, pe));
                    continue;
                }
                if tb > pb {
                    next.push((pb, tb - 1));
                }
                if te < pe {
                    next.push((te + 1, pe));
                }
            }
            pieces = next;
        }
        out.extend(pieces);
    }
    normalize(out)
}

fn range_count(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|&(b, e)| e - b + 1).sum()
}

impl Resources {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the `--resources` syntax:
    /// `cpus:4;mem:8192;disk:10000;ports:[31000-32000,33000-33010];gpus:{gpu0,gpu1}`.
    ///
    /// ```
    /// use mezz_proto::Resources;
    /// let r = Resources::parse("cpus:2;mem:1024;ports:[31000-31009]").unwrap();
    /// assert_eq!(r.scalar("cpus"), 2.0);
    /// assert_eq!(r.range_count("ports"), 10);
    /// assert!(Resources::parse("cpus:two").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, ResourceError> {
        let mut out = Resources::new();
        for token in text.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            let err = |reason: String| ResourceError::Parse {
                token: token.to_string(),
                reason,
            };
            let (name, value) = token
                .split_once(':')
                .ok_or_else(|| err("expected NAME:VALUE, e.g. 'cpus:4'".into()))?;
            let (name, value) = (name.trim(), value.trim());
            let (name, role) = split_role(name).map_err(err)?;
            check_name(name).map_err(err)?;
            let mut one = Resources::new();
            if let Some(inner) = value.strip_prefix('[') {
                let inner = inner
                    .strip_suffix(']')
                    .ok_or_else(|| err("a range list must end with ']'".into()))?;
                let mut ranges = Vec::new();
                for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (b, e) = part.split_once('-').unwrap_or((part, part));
                    let b: u64 = b
                        .trim()
                        .parse()
                        .map_err(|_| err(format!("'{part}' is not a range like 31000-32000")))?;
                    let e: u64 = e
                        .trim()
                        .parse()
                        .map_err(|_| err(format!("'{part}' is not a range like 31000-32000")))?;
                    if b > e {
                        return Err(err(format!("range '{part}' begins after it ends")));
                    }
                    ranges.push((b, e));
                }
                one.ranges.insert(name.to_string(), normalize(ranges));
            } else if let Some(inner) = value.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| err("a set must end with '}'".into()))?;
                let items: BTreeSet<String> = inner
                    .split(',')
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .map(String::from)
                    .collect();
                one.sets.insert(name.to_string(), items);
            } else {
                let v: f64 = value.parse().map_err(|_| {
                    err(format!("'{value}' is not a number, a [range] or a {{set}}"))
                })?;
                let m = to_milli(v).ok_or_else(|| {
                    err(format!(
                        "'{value}' must be a finite number between 0 and 1e12"
                    ))
                })?;
                one.scalars.insert(name.to_string(), m);
            }
            if let Some(role) = role {
                one = one.reserve(role);
            }
            out.try_add(&one).map_err(|e| match e {
                ResourceError::Invalid { reason, .. } => err(reason),
                other => other,
            })?;
        }
        Ok(out)
    }

    /// Reads and validates resources that came over the wire.
    pub fn from_proto(resources: &[v1::Resource]) -> Result<Self, ResourceError> {
        let mut out = Resources::new();
        for r in resources {
            let invalid = |reason: String| ResourceError::Invalid {
                name: r.name.clone(),
                reason,
            };
            check_name(&r.name).map_err(invalid)?;
            if !r.role.is_empty() {
                check_role(&r.role).map_err(invalid)?;
            }
            let mut one = Resources::new();
            match &r.value {
                Some(Value::Scalar(v)) => {
                    let m = to_milli(*v).ok_or_else(|| {
                        invalid(format!("scalar {v} must be finite and between 0 and 1e12"))
                    })?;
                    one.scalars.insert(r.name.clone(), m);
                }
                Some(Value::Ranges(rs)) => {
                    let mut v = Vec::with_capacity(rs.range.len());
                    for range in &rs.range {
                        if range.begin > range.end {
                            return Err(invalid(format!(
                                "range {}-{} begins after it ends",
                                range.begin, range.end
                            )));
                        }
                        v.push((range.begin, range.end));
                    }
                    one.ranges.insert(r.name.clone(), normalize(v));
                }
                Some(Value::Set(s)) => {
                    one.sets
                        .insert(r.name.clone(), s.item.iter().cloned().collect());
                }
                None => return Err(invalid("no value (scalar, ranges or set) given".into())),
            }
            if !r.role.is_empty() && r.role != UNRESERVED_ROLE {
                one = one.reserve(&r.role);
            }
            out.try_add(&one)?;
        }
        Ok(out)
    }

    /// The wire form.
    pub fn to_proto(&self) -> Vec<v1::Resource> {
        let mut out = self.to_proto_unreserved();
        for (role, inner) in &self.reserved {
            out.extend(inner.to_proto_unreserved().into_iter().map(|mut r| {
                r.role = role.clone();
                r
            }));
        }
        out
    }

    fn to_proto_unreserved(&self) -> Vec<v1::Resource> {
        let mut out = Vec::new();
        for (name, &m) in &self.scalars {
            out.push(v1::Resource {
                name: name.clone(),
                value: Some(Value::Scalar(m as f64 / MILLI)),
                role: String::new(),
            });
        }
        for (name, ranges) in &self.ranges {
            out.push(v1::Resource {
                name: name.clone(),
                value: Some(Value::Ranges(v1::Ranges {
                    range: ranges
                        .iter()
                        .map(|&(begin, end)| v1::Range { begin, end })
                        .collect(),
                })),
                role: String::new(),
            });
        }
        for (name, items) in &self.sets {
            out.push(v1::Resource {
                name: name.clone(),
                value: Some(Value::Set(v1::Set {
                    item: items.iter().cloned().collect(),
                })),
                role: String::new(),
            });
        }
        out
    }

    /// The value of a scalar resource (0 when absent), reserved or not.
    pub fn scalar(&self, name: &str) -> f64 {
        self.scalar_milli(name) as f64 / MILLI
    }

    /// A scalar in thousandths, reserved or not: exact, for fixed-point
    /// arithmetic (the allocator's shares).
    pub fn scalar_milli(&self, name: &str) -> i64 {
        self.scalars.get(name).copied().unwrap_or(0)
            + self
                .reserved
                .values()
                .map(|r| r.scalar_milli(name))
                .sum::<i64>()
    }

    /// The unreserved resources only.
    ///
    /// ```
    /// use mezz_proto::Resources;
    /// let r = Resources::parse("cpus:2;cpus(eng):4;mem(eng/ml):512").unwrap();
    /// assert_eq!(r.scalar("cpus"), 6.0);
    /// assert_eq!(r.unreserved().scalar("cpus"), 2.0);
    /// assert_eq!(r.reserved("eng").unwrap().scalar("cpus"), 4.0);
    /// assert_eq!(r.to_string(), "cpus:2;cpus(eng):4;mem(eng/ml):512");
    /// ```
    pub fn unreserved(&self) -> Resources {
        // Field by field: the reservations are not copied only to be
        // dropped (an allocation cycle calls this once per offer).
        Resources {
            scalars: self.scalars.clone(),
            ranges: self.ranges.clone(),
            sets: self.sets.clone(),
            reserved: BTreeMap::new(),
        }
    }

    /// What is reserved for exactly `role` (not its sub-roles), unreserved
    /// in the returned bag; `None` when nothing is.
    pub fn reserved(&self, role: &str) -> Option<&Resources> {
        self.reserved.get(role)
    }

    /// Every reservation: (role, what is reserved for it).
    pub fn reservations(&self) -> impl Iterator<Item = (&str, &Resources)> {
        self.reserved.iter().map(|(r, v)| (r.as_str(), v))
    }

    /// True when some resource is reserved for a role.
    pub fn has_reservations(&self) -> bool {
        !self.reserved.is_empty()
    }

    /// The concrete resources a framework of `role` uses to get `need`
    /// (unreserved amounts) out of this offer: what is reserved for exactly
    /// `role` first, then unreserved resources. `None` when they do not
    /// add up. The result is what the task must ask for, reservations
    /// included, so the master's `contains` check accepts it.
    ///
    /// ```
    /// use mezz_proto::Resources;
    /// let offer = Resources::parse("cpus(ml):2;cpus:0.5;mem:256").unwrap();
    /// let need = Resources::parse("cpus:2.25;mem:64").unwrap();
    /// let take = offer.take_for_role(&need, "ml").unwrap();
    /// assert_eq!(take.to_string(), "cpus:0.25;mem:64;cpus(ml):2");
    /// assert!(offer.contains(&take));
    /// assert!(offer.take_for_role(&need, "other").is_none());
    /// ```
    pub fn take_for_role(&self, need: &Resources, role: &str) -> Option<Resources> {
        let empty = Resources::new();
        let mine = self.reserved(role).unwrap_or(&empty);
        let free = self.unreserved();
        let mut from_mine = Resources::new();
        let mut from_free = Resources::new();
        for (name, &want) in &need.scalars {
            let r = mine.scalars.get(name).copied().unwrap_or(0).min(want);
            let rest = want - r;
            if rest > free.scalars.get(name).copied().unwrap_or(0) {
                return None;
            }
            if r > 0 {
                from_mine.scalars.insert(name.clone(), r);
            }
            if rest > 0 {
                from_free.scalars.insert(name.clone(), rest);
            }
        }
        for (name, ranges) in &need.ranges {
            for &(b, e) in ranges {
                let one = Resources::new().with_ranges(name, &[(b, e)]);
                if mine.contains(&one) {
                    from_mine.add(&one);
                } else if free.contains(&one) {
                    from_free.add(&one);
                } else {
                    return None;
                }
            }
        }
        for (name, items) in &need.sets {
            for item in items {
                let one = Resources::new().with_set(name, [item.clone()]);
                if mine.contains(&one) {
                    from_mine.add(&one);
                } else if free.contains(&one) {
                    from_free.add(&one);
                } else {
                    return None;
                }
            }
        }
        let mut out = from_free;
        if !from_mine.is_empty() {
            out.add(&from_mine.reserve(role));
        }
        Some(out)
    }

    /// The same resources, all reserved for `role` (`*` or empty: all
    /// unreserved).
    pub fn reserve(&self, role: &str) -> Resources {
        let mut flat = self.unreserved();
        for inner in self.reserved.values() {
            flat.add(inner);
        }
        if role.is_empty() || role == UNRESERVED_ROLE || flat.is_empty() {
            return flat;
        }
        let mut out = Resources::new();
        out.reserved.insert(role.to_string(), flat);
        out
    }

    fn prune(&mut self) {
        self.reserved.retain(|_, r| !r.is_empty());
    }

    /// Sets a scalar resource; values are rounded to thousandths, and a
    /// negative or non-finite value removes it.
    pub fn set_scalar(&mut self, name: &str, value: f64) {
        match to_milli(value) {
            Some(m) if m > 0 => {
                self.scalars.insert(name.to_string(), m);
            }
            _ => {
                self.scalars.remove(name);
            }
        }
    }

    /// Builder form of [`Resources::set_scalar`].
    pub fn with_scalar(mut self, name: &str, value: f64) -> Self {
        self.set_scalar(name, value);
        self
    }

    /// The inclusive unreserved ranges of a range resource, sorted and
    /// merged (see [`Resources::reserved`] for the reserved ones).
    pub fn ranges(&self, name: &str) -> &[(u64, u64)] {
        self.ranges.get(name).map_or(&[], |v| v.as_slice())
    }

    /// How many values a range resource holds (e.g. the number of ports),
    /// reserved or not.
    pub fn range_count(&self, name: &str) -> u64 {
        range_count(self.ranges(name))
            + self
                .reserved
                .values()
                .map(|r| r.range_count(name))
                .sum::<u64>()
    }

    /// Adds a range resource.
    pub fn with_ranges(mut self, name: &str, ranges: &[(u64, u64)]) -> Self {
        let mut all = self.ranges.remove(name).unwrap_or_default();
        all.extend(ranges.iter().copied().filter(|(b, e)| b <= e));
        let all = normalize(all);
        if !all.is_empty() {
            self.ranges.insert(name.to_string(), all);
        }
        self
    }

    /// The items of a set resource (e.g. GPU identities), reserved or not,
    /// sorted.
    pub fn set_items(&self, name: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .sets
            .get(name)
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if !self.reserved.is_empty() {
            for r in self.reserved.values() {
                out.extend(r.set_items(name));
            }
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// How many items a set resource holds, reserved or not.
    pub fn set_len(&self, name: &str) -> usize {
        self.sets.get(name).map_or(0, BTreeSet::len)
            + self
                .reserved
                .values()
                .map(|r| r.set_len(name))
                .sum::<usize>()
    }

    /// Adds items to a set resource.
    pub fn with_set<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        name: &str,
        items: I,
    ) -> Self {
        let set = self.sets.entry(name.to_string()).or_default();
        set.extend(items.into_iter().map(Into::into));
        if set.is_empty() {
            self.sets.remove(name);
        }
        self
    }

    /// True when nothing is in the bag.
    pub fn is_empty(&self) -> bool {
        self.scalars.values().all(|&m| m == 0)
            && self.ranges.values().all(Vec::is_empty)
            && self.sets.values().all(BTreeSet::is_empty)
            && self.reserved.values().all(Resources::is_empty)
    }

    /// Does `other` fit inside `self`? The one definition of "fits".
    ///
    /// ```
    /// use mezz_proto::Resources;
    /// let offer = Resources::parse("cpus:4;mem:4096;ports:[31000-31010]").unwrap();
    /// let task = Resources::parse("cpus:0.5;mem:128;ports:[31005-31005]").unwrap();
    /// assert!(offer.contains(&task));
    /// assert!(!task.contains(&offer));
    /// ```
    pub fn contains(&self, other: &Resources) -> bool {
        other
            .scalars
            .iter()
            .all(|(n, &m)| m <= self.scalars.get(n).copied().unwrap_or(0))
            && other
                .ranges
                .iter()
                .all(|(n, r)| ranges_contain(self.ranges(n), r))
            && other.sets.iter().all(|(n, s)| match self.sets.get(n) {
                Some(mine) => s.is_subset(mine),
                None => s.is_empty(),
            })
            && other
                .reserved
                .iter()
                .all(|(role, r)| match self.reserved.get(role) {
                    Some(mine) => mine.contains(r),
                    None => r.is_empty(),
                })
    }

    fn kind_conflict(&self, other: &Resources) -> Option<String> {
        let kinds = |r: &Resources, n: &str| -> Option<&'static str> {
            if r.scalars.contains_key(n) {
                Some("a scalar")
            } else if r.ranges.contains_key(n) {
                Some("ranges")
            } else if r.sets.contains_key(n) {
                Some("a set")
            } else {
                None
            }
        };
        let names = other
            .scalars
            .keys()
            .chain(other.ranges.keys())
            .chain(other.sets.keys());
        for n in names {
            if let (Some(a), Some(b)) = (kinds(self, n), kinds(other, n)) {
                if a != b {
                    return Some(format!("'{n}' is given both as {a} and as {b}"));
                }
            }
        }
        for (role, r) in &other.reserved {
            if let Some(mine) = self.reserved.get(role) {
                if let Some(c) = mine.kind_conflict(r) {
                    return Some(c);
                }
            }
        }
        None
    }

    /// Adds `other`, refusing a name used with two different kinds.
    pub fn try_add(&mut self, other: &Resources) -> Result<(), ResourceError> {
        if let Some(reason) = self.kind_conflict(other) {
            return Err(ResourceError::Invalid {
                name: reason.split('\'').nth(1).unwrap_or_default().to_string(),
                reason,
            });
        }
        self.add(other);
        Ok(())
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Resources) {
        for (n, &m) in &other.scalars {
            let v = self.scalars.entry(n.clone()).or_insert(0);
            *v = v.saturating_add(m);
        }
        for (n, r) in &other.ranges {
            let mut all = self.ranges.remove(n).unwrap_or_default();
            all.extend_from_slice(r);
            self.ranges.insert(n.clone(), normalize(all));
        }
        for (n, s) in &other.sets {
            self.sets
                .entry(n.clone())
                .or_default()
                .extend(s.iter().cloned());
        }
        for (role, r) in &other.reserved {
            if !r.is_empty() {
                self.reserved.entry(role.clone()).or_default().add(r);
            }
        }
    }

    /// `self - other`, or `None` when `other` does not fit in `self`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        let mut out = self.clone();
        out.subtract(other);
        Some(out)
    }

    /// Removes `other` from `self`, clamping at zero: what is not there is
    /// ignored. Use [`Resources::checked_sub`] when that would be a bug.
    pub fn subtract(&mut self, other: &Resources) {
        for (n, &m) in &other.scalars {
            if let Some(v) = self.scalars.get_mut(n) {
                *v = (*v - m).max(0);
                if *v == 0 {
                    self.scalars.remove(n);
                }
            }
        }
        for (n, r) in &other.ranges {
            if let Some(mine) = self.ranges.get(n) {
                let left = ranges_subtract(mine, r);
                if left.is_empty() {
                    self.ranges.remove(n);
                } else {
                    self.ranges.insert(n.clone(), left);
                }
            }
        }
        for (n, s) in &other.sets {
            if let Some(mine) = self.sets.get_mut(n) {
                mine.retain(|i| !s.contains(i));
                if mine.is_empty() {
                    self.sets.remove(n);
                }
            }
        }
        if !other.reserved.is_empty() {
            for (role, r) in &other.reserved {
                if let Some(mine) = self.reserved.get_mut(role) {
                    mine.subtract(r);
                }
            }
            self.prune();
        }
    }

    /// Every resource as one number, reserved or not, for views and
    /// shares: scalars as they are, ranges by count, sets by size.
    pub fn quantities(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = self
            .scalars
            .iter()
            .map(|(n, &m)| (n.clone(), m as f64 / MILLI))
            .collect();
        for (n, r) in &self.ranges {
            out.insert(n.clone(), range_count(r) as f64);
        }
        for (n, s) in &self.sets {
            out.insert(n.clone(), s.len() as f64);
        }
        for r in self.reserved.values() {
            for (n, v) in r.quantities() {
                *out.entry(n).or_default() += v;
            }
        }
        out
    }

    /// The largest share `self` takes of `total` over cpus, mem, disk and
    /// gpus: the dominant share of Dominant Resource Fairness.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        let mine = self.quantities();
        let all = total.quantities();
        SHARE_NAMES
            .iter()
            .filter_map(|n| {
                let t = all.get(*n).copied().unwrap_or(0.0);
                (t > 0.0).then(|| mine.get(*n).copied().unwrap_or(0.0) / t)
            })
            .fold(0.0, f64::max)
    }
}

impl fmt::Display for Resources {
    /// The `--resources` syntax, which [`Resources::parse`] reads back;
    /// reserved resources are written `name(role):value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = self.display_parts("");
        for (role, r) in &self.reserved {
            parts.extend(r.display_parts(&format!("({role})")));
        }
        f.write_str(&parts.join(";"))
    }
}

impl Resources {
    fn display_parts(&self, suffix: &str) -> Vec<String> {
        let mut parts = Vec::new();
        for (n, &m) in &self.scalars {
            parts.push(format!("{n}{suffix}:{}", m as f64 / MILLI));
        }
        for (n, r) in &self.ranges {
            let rs: Vec<String> = r
                .iter()
                .map(|&(b, e)| {
                    if b == e {
                        b.to_string()
                    } else {
                        format!("{b}-{e}")
                    }
                })
                .collect();
            parts.push(format!("{n}{suffix}:[{}]", rs.join(",")));
        }
        for (n, s) in &self.sets {
            parts.push(format!(
                "{n}{suffix}:{{{}}}",
                s.iter().cloned().collect::<Vec<_>>().join(",")
            ));
        }
        parts
    }
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
