//! `mezz`: the one binary of Mezzanine. Operators run `mezz master` and
//! `mezz agent`; people run `mezz dev`, `mezz run`, `mezz ps`, …

mod cli;
mod client;
mod duration;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: see the dependency's note in
/// Cargo.toml and BENCHMARKS.md ("Scale").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The task wrapper runs for every task launch: keep it off clap and
    // tokio so it starts in a millisecond.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == cli::LAUNCH_SUBCOMMAND) {
        let Some(spec) = args.get(2) else {
            eprintln!(
                "mezz {}: missing the launch spec path",
                cli::LAUNCH_SUBCOMMAND
            );
            return ExitCode::from(2);
        };
        let code = mezz_agent::launch_main(std::path::Path::new(spec));
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // Rust ignores SIGPIPE, so a write to a closed pipe (`mezz ps | head`)
    // is an error, and `println!` panics on it. Commands people type die
    // of SIGPIPE instead, quietly and with the status a shell expects
    // (141), as `ls | head` does; `--help` and clap's errors included.
    // Cluster components keep it ignored (see `Command::keeps_running`).
    set_sigpipe(nix::sys::signal::SigHandler::SigDfl);
    let cli = cli::Cli::parse();
    if cli.command.keeps_running() {
        set_sigpipe(nix::sys::signal::SigHandler::SigIgn);
    }
    cli::init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mezz: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mezz: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn set_sigpipe(handler: nix::sys::signal::SigHandler) {
    // SAFETY: SIG_DFL and SIG_IGN run no code of ours in a signal handler,
    // and no other thread exists yet to race on the disposition.
    let _ = unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, handler) };
}
