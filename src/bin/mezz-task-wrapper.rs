//! `mezz-task-wrapper`: the task wrapper as a program of its own, installed
//! beside `mezz`. The agent runs it for every task launch
//! (`mezz-task-wrapper __launch <sandbox>/.mezz/launch.json`) in preference
//! to `mezz __launch`, which runs the same code: this binary links only the
//! wrapper's crate (no async runtime, no gRPC, none of the agent), so it
//! starts in a fraction of the time.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(mezz_task_wrapper::main_with_args(&args));
}
