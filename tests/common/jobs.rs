//! Helpers of the tests of `mezz job`: submitting job files and reading
//! jobs back as JSON.

use std::process::Output;
use std::time::Duration;

use super::*;

/// How long one `mezz job` command may take.
const T: Duration = Duration::from_secs(60);

/// `mezz GROUP ACTION --master ADDR ARGS…` for the two-level commands.
pub fn sub(c: &Cluster, group: &str, action: &str, args: &[&str]) -> Output {
    let addr = c.master_addr();
    let mut full = vec![group, action, "--master", &addr];
    full.extend_from_slice(args);
    mezz(&full, T)
}

/// Writes `text` as a job file in `dir` and runs `mezz job submit --wait
/// --print-json FILE` against `c`.
pub fn submit(c: &Cluster, dir: &std::path::Path, name: &str, text: &str) -> Output {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).expect("write the job file");
    sub(
        c,
        "job",
        "submit",
        &["--wait", "--print-json", path.to_str().expect("utf-8 path")],
    )
}

/// `mezz job show NAME --json`.
pub fn show(c: &Cluster, name: &str) -> serde_json::Value {
    let out = sub(c, "job", "show", &[name, "--json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    record(&out)
}

/// `mezz job list --json ARGS…`: the jobs.
pub fn list(c: &Cluster, args: &[&str]) -> Vec<serde_json::Value> {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = sub(c, "job", "list", &full);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    record(&out)["jobs"].as_array().cloned().unwrap_or_default()
}

pub fn record(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no job record on stdout ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// A temporary directory the agent's task user may write in.
pub fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod the shared dir");
    dir
}
