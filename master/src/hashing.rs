//! The hash maps of the state machine and the allocator.
//!
//! A running master keys them randomly, as std does, so that ids chosen by
//! clients cannot be crafted to collide. The crate's tests use a fixed key
//! instead: iteration order then depends only on what was inserted, and a
//! seeded simulation replays exactly from its seed.

use std::collections::{HashMap, HashSet};

/// How keys are hashed (randomly keyed outside tests).
#[cfg(not(test))]
pub type Hasher = std::collections::hash_map::RandomState;
/// How keys are hashed (a fixed key in tests, for repeatable runs).
#[cfg(test)]
pub type Hasher = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// A hash map with the crate's hasher.
pub type Map<K, V> = HashMap<K, V, Hasher>;
/// A hash set with the crate's hasher.
pub type Set<K> = HashSet<K, Hasher>;
