//! `mezz-task-wrapper-static`: the task wrapper as the root package's build
//! script builds it, statically linked against musl and embedded in `mezz`
//! (see `build.rs` there). A static program skips the dynamic loader and
//! glibc's start-up, which asks the CPU for its features and caches one
//! `cpuid` at a time; in a virtual machine each of those traps to the
//! hypervisor, and together they were most of the wrapper's exec cost.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(mezz_task_wrapper::main_with_args(&args));
}
