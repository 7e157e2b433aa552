//! The task wrapper as its own program: `mezz-task-wrapper __launch SPEC`
//! (or just `mezz-task-wrapper SPEC`). Same code as `mezz __launch`.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let spec = match args.as_slice() {
        [flag, spec] if flag == "__launch" => spec.clone(),
        [spec] => spec.clone(),
        _ => {
            eprintln!("usage: mezz-task-wrapper __launch <sandbox>/.mezz/launch.json");
            std::process::exit(2);
        }
    };
    std::process::exit(mezz_agent::launch_main(std::path::Path::new(&spec)));
}
