//! The files the agent and the task wrapper exchange through the sandbox;
//! their formats live in the wrapper's crate (`mezz_task_wrapper::spec`),
//! shared by both sides. Here: what only the agent does with them.

use std::path::Path;

pub use mezz_task_wrapper::spec::*;

/// Reads the exit record of a sandbox; `None` when absent or unreadable
/// (the caller reports an unknown exit).
pub fn read_exit_record(path: &Path) -> Option<ExitRecord> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice::<ExitRecord>(&text) {
        Ok(r) if r.exit_code.is_some() != r.signal.is_some() => Some(r),
        _ => {
            tracing::warn!("{} is not a valid exit status; ignored", path.display());
            None
        }
    }
}
