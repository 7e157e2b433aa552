//! The menu of named sizes as the replicated registry keeps it: the
//! built-in one until an operator changes it, then the operator's, carried
//! in snapshots. Plain data with no other module of the master below it;
//! the state machine's side (checking and proposing changes) is in
//! `cluster/sizes.rs`.

use std::collections::BTreeMap;

use mezz_proto::v1::{replicated_command::Command, SizeView};

/// The most sizes a menu holds: it is shown whole by `mezz sizes` and
/// carried in every snapshot.
pub const MAX_SIZES: usize = 256;

/// The menu as the registry keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeMenu {
    sizes: BTreeMap<String, SizeView>,
    /// An operator changed the menu: it is no longer the built-in one, and
    /// snapshots carry it.
    custom: bool,
}

impl Default for SizeMenu {
    fn default() -> Self {
        SizeMenu {
            sizes: mezz_proto::sizes::builtin()
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect(),
            custom: false,
        }
    }
}

impl SizeMenu {
    /// Applies a committed `SetSize` or `RemoveSize`; other commands are
    /// not for the menu.
    pub fn apply(&mut self, cmd: &Command) {
        match cmd {
            Command::SetSize(size) => {
                self.sizes.insert(size.name.clone(), size.clone());
                self.custom = true;
            }
            Command::RemoveSize(name) => {
                self.sizes.remove(name);
                self.custom = true;
            }
            _ => {}
        }
    }

    /// The sizes, sorted by name.
    pub fn list(&self) -> Vec<SizeView> {
        self.sizes.values().cloned().collect()
    }

    /// The size called `name`.
    pub fn get(&self, name: &str) -> Option<&SizeView> {
        self.sizes.get(name)
    }

    /// How many sizes the menu holds.
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    /// For a snapshot: the sizes and whether they are custom (an unchanged
    /// menu is not written, so a snapshot restored by a newer release gets
    /// that release's built-in menu).
    pub fn to_snapshot(&self) -> (Vec<SizeView>, bool) {
        if self.custom {
            (self.list(), true)
        } else {
            (Vec::new(), false)
        }
    }

    /// The menu a snapshot holds.
    pub fn from_snapshot(sizes: &[SizeView], custom: bool) -> Self {
        if !custom {
            return SizeMenu::default();
        }
        SizeMenu {
            sizes: sizes.iter().map(|s| (s.name.clone(), s.clone())).collect(),
            custom: true,
        }
    }
}
