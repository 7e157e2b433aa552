//! Builds the task wrapper as a static (musl) program and embeds it in
//! `mezz`, which installs it in the agent's work directory at start-up.
//!
//! Why: the agent execs the wrapper for every launch. A program linked
//! against glibc spends most of its exec in the dynamic loader and in
//! glibc's start-up, which queries the CPU one `cpuid` at a time; in a
//! virtual machine each query traps to the hypervisor. Statically linked
//! against musl, the wrapper starts in a fraction of that (BENCHMARKS.md,
//! "Where the milliseconds of `mezz run -- true` go").
//!
//! The static build needs Rust's musl target for this machine's
//! architecture (`rustup target add x86_64-unknown-linux-musl`). Without
//! it, or with `MEZZ_STATIC_WRAPPER=0`, nothing is embedded and the agent
//! runs the glibc `mezz-task-wrapper` beside `mezz`, as before; a cargo
//! warning says so.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(static_wrapper)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=wrapper/src");
    println!("cargo:rerun-if-changed=wrapper/Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.lock");
    // The wrapper's dependencies and their features are the workspace's.
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-env-changed=MEZZ_STATIC_WRAPPER");
    if std::env::var("MEZZ_STATIC_WRAPPER").as_deref() == Ok("0") {
        return;
    }
    match build_static_wrapper() {
        Ok(Some(program)) => {
            let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
            let embedded = out.join("mezz-task-wrapper-static");
            if let Err(e) = std::fs::copy(&program, &embedded) {
                println!(
                    "cargo:warning=cannot copy the static task wrapper {}: {e}",
                    program.display()
                );
                return;
            }
            println!("cargo:rustc-cfg=static_wrapper");
        }
        Ok(None) => {}
        Err(why) => println!(
            "cargo:warning=the task wrapper is not embedded ({why}); agents run the glibc \
             mezz-task-wrapper beside mezz, about 1 ms slower per launch"
        ),
    }
}

/// Builds `mezz-task-wrapper-static` for the musl target of this build's
/// architecture; `None` where there is no such target to build for.
fn build_static_wrapper() -> Result<Option<PathBuf>, String> {
    let target = std::env::var("TARGET").unwrap_or_default();
    let musl = match target.as_str() {
        "x86_64-unknown-linux-gnu" => "x86_64-unknown-linux-musl",
        "aarch64-unknown-linux-gnu" => "aarch64-unknown-linux-musl",
        _ => return Ok(None),
    };
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib").join(musl).is_dir() {
        return Err(format!(
            "Rust's {musl} target is not installed: `rustup target add {musl}`"
        ));
    }
    // A target directory of its own beside the outer one (OUT_DIR is
    // <target>/<profile>/build/<package>-<hash>/out), shared by every
    // profile, so the wrapper is built once; and apart from the outer
    // build's, whose lock this build holds.
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("static-wrapper"))
        .unwrap_or_else(|| out.join("static-wrapper"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&manifest_dir)
        .args([
            "build",
            "--release",
            "--locked",
            "--package",
            "mezz-task-wrapper",
            "--features",
            "static-bin",
            "--bin",
            "mezz-task-wrapper-static",
            "--target",
            musl,
            "--config",
            "profile.release.debug=0",
            "--config",
            "profile.release.strip=\"symbols\"",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's settings are not the inner one's: its flags, its
    // lint driver (under clippy), its target directory.
    for (key, _) in std::env::vars() {
        let inherited = [
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTFLAGS",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_PRIMARY_PACKAGE",
        ]
        .contains(&key.as_str())
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_");
        if inherited {
            cmd.env_remove(&key);
        }
    }
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(format!(
            "building it for {musl} failed: {}",
            last.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    let program = target_dir
        .join(musl)
        .join("release")
        .join("mezz-task-wrapper-static");
    if Path::new(&program).is_file() {
        Ok(Some(program))
    } else {
        Err(format!("{} was not built", program.display()))
    }
}
