//! The Mezzanine task wrapper: the small synchronous program the agent
//! runs for every task launch, between itself and the task's command (see
//! [`launch_main`]). It lives in a crate of its own so that its binary
//! (`mezz-task-wrapper`) links no async runtime and none of the agent:
//! starting it costs a fraction of starting the whole `mezz` binary, which
//! embeds the same code for its hidden `__launch` subcommand.
//!
//! Also here, because the wrapper does them: the task's namespaces
//! ([`namespaces`]), its view of the filesystem ([`mounts`]) and the
//! capabilities it gives up ([`capabilities`]); and the format of the files
//! the agent and the wrapper exchange ([`spec`]).
#![warn(missing_docs)]

pub mod capabilities;
mod launcher;
pub mod mounts;
pub mod namespaces;
pub mod spec;

pub use launcher::{launch_main, spawn_error_message};

/// The hidden subcommand the agent runs the wrapper with:
/// `<launcher> __launch <sandbox>/.mezz/launch.json`.
pub const LAUNCH_SUBCOMMAND: &str = "__launch";

/// The wrapper program's `main`: `mezz-task-wrapper __launch SPEC` (or just
/// `mezz-task-wrapper SPEC`); returns the exit code.
pub fn main_with_args(args: &[std::ffi::OsString]) -> i32 {
    let spec = match args {
        [flag, spec] if flag == LAUNCH_SUBCOMMAND => spec,
        [spec] => spec,
        _ => {
            eprintln!("usage: mezz-task-wrapper __launch <sandbox>/.mezz/launch.json");
            return 2;
        }
    };
    launch_main(std::path::Path::new(spec))
}
