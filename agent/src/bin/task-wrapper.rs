//! The agent crate's own build of the task wrapper program, for its tests
//! and benchmarks (the `mezz` package installs the same program as
//! `mezz-task-wrapper`): `task-wrapper __launch SPEC` (or just
//! `task-wrapper SPEC`).

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(mezz_task_wrapper::main_with_args(&args));
}
