//! The cluster's menu of named sizes (`mezz sizes`): replicated through
//! raft (`ReplicatedCommand::SetSize` / `RemoveSize`) so that every user
//! of a cluster, and every master after a failover or a restart of all of
//! them, sees the same menu. Until an operator changes it the menu is the
//! built-in one ([`mezz_proto::sizes::builtin`]). Only the menu lives
//! here: what a size means for a task (cpus, mem, GPUs) is decided by the
//! submitting client, so this module never touches the allocator.

use mezz_proto::v1::{replicated_command::Command, ReplicatedCommand, SizeView};

use super::{CallError, Cluster, Effect};
use crate::size_menu::MAX_SIZES;

impl Cluster {
    /// The sizes menu, sorted by name.
    pub fn sizes(&self) -> Vec<SizeView> {
        self.registry.sizes.list()
    }

    /// Operator: adds a size or replaces one of the same name. Checked
    /// here, before anything is proposed, so a bad size is never stored.
    pub fn set_size(&mut self, size: SizeView) -> Result<(), CallError> {
        mezz_proto::sizes::check(&size).map_err(CallError::Invalid)?;
        if self.registry.sizes.get(&size.name).is_none() && self.registry.sizes.len() >= MAX_SIZES {
            return Err(CallError::Invalid(format!(
                "the menu already holds {MAX_SIZES} sizes; remove one (`mezz sizes rm NAME`) before adding '{}'",
                size.name
            )));
        }
        self.propose_size(Command::SetSize(size));
        Ok(())
    }

    /// Operator: takes a size off the menu.
    pub fn remove_size(&mut self, name: &str) -> Result<(), CallError> {
        if self.registry.sizes.get(name).is_none() {
            let known: Vec<String> = self
                .registry
                .sizes
                .list()
                .into_iter()
                .map(|s| s.name)
                .collect();
            return Err(CallError::NotFound(format!(
                "no size '{name}' on the menu; sizes: {}",
                known.join(", ")
            )));
        }
        self.propose_size(Command::RemoveSize(name.to_string()));
        Ok(())
    }

    fn propose_size(&mut self, command: Command) {
        self.effects.push(Effect::Propose(ReplicatedCommand {
            command: Some(command),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_menu::SizeMenu;

    fn size(name: &str, cpus: f64) -> SizeView {
        SizeView {
            name: name.into(),
            cpus,
            mem: 1024.0,
            gpus: 0,
            gpu_model: String::new(),
        }
    }

    #[test]
    fn the_menu_starts_builtin_and_snapshots_only_once_changed() {
        let mut m = SizeMenu::default();
        assert_eq!(m.get("gpu-large").map(|s| s.gpus), Some(2));
        assert_eq!(m.to_snapshot(), (Vec::new(), false));
        m.apply(&Command::SetSize(size("tiny", 0.5)));
        m.apply(&Command::RemoveSize("cpu-small".into()));
        m.apply(&Command::SetSize(size("gpu-large", 16.0)));
        assert!(m.get("cpu-small").is_none());
        assert_eq!(m.get("gpu-large").map(|s| s.cpus), Some(16.0));
        let (sizes, custom) = m.to_snapshot();
        assert!(custom);
        assert_eq!(SizeMenu::from_snapshot(&sizes, custom), m);
        // Every size removed is still a custom menu, not the built-in one.
        let mut empty = m.clone();
        for s in m.list() {
            empty.apply(&Command::RemoveSize(s.name));
        }
        let (sizes, custom) = empty.to_snapshot();
        assert_eq!(SizeMenu::from_snapshot(&sizes, custom).len(), 0);
    }
}
