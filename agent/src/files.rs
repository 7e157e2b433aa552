//! The agent API (`AgentFiles`): listing a task's sandbox and reading its
//! files (from an offset, or their end), confined to that sandbox. It
//! reads; it never writes.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use mezz_proto::v1::{
    agent_files_server::AgentFiles, FileEntry, ListFilesRequest, ListFilesResponse,
    ReadFileRequest, ReadFileResponse, TailFileRequest,
};
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::executor;

/// The most bytes one `ReadFile` returns.
pub const MAX_CHUNK: u64 = 1024 * 1024;
/// The most entries one `ListFiles` returns.
pub const MAX_ENTRIES: usize = 10_000;

/// The `AgentFiles` service.
pub struct FilesService {
    agent: Arc<Agent>,
}

impl FilesService {
    /// A service over the agent's sandboxes.
    pub fn new(agent: Arc<Agent>) -> Self {
        FilesService { agent }
    }
}

/// Resolves `rel` inside `sandbox`, refusing anything that would leave it:
/// absolute paths and `..` (INVALID_ARGUMENT), symlinks pointing outside
/// (PERMISSION_DENIED). The file must exist.
pub fn resolve_in_sandbox(sandbox: &Path, rel: &str) -> Result<PathBuf, Status> {
    if rel.is_empty() {
        return Err(Status::invalid_argument("path is empty; e.g. 'stdout'"));
    }
    let p = Path::new(rel);
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(Status::invalid_argument(format!(
                    "path '{rel}' contains '..'; give a path inside the sandbox"
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Status::invalid_argument(format!(
                    "path '{rel}' is absolute; give a path relative to the sandbox"
                )))
            }
        }
    }
    let root = sandbox.canonicalize().map_err(|e| {
        Status::internal(format!("cannot resolve sandbox {}: {e}", sandbox.display()))
    })?;
    let full = root.join(p).canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Status::not_found(format!("no file '{rel}' in the sandbox"))
        }
        _ => Status::internal(format!("cannot resolve '{rel}': {e}")),
    })?;
    if !full.starts_with(&root) {
        return Err(Status::permission_denied(format!(
            "path '{rel}' leads outside the sandbox"
        )));
    }
    Ok(full)
}

/// Resolves a directory `rel` inside `sandbox` (empty: the sandbox), with
/// the same confinement as [`resolve_in_sandbox`].
pub fn resolve_dir_in_sandbox(sandbox: &Path, rel: &str) -> Result<PathBuf, Status> {
    let full = if rel.is_empty() || rel == "." {
        sandbox.canonicalize().map_err(|e| {
            Status::internal(format!("cannot resolve sandbox {}: {e}", sandbox.display()))
        })?
    } else {
        resolve_in_sandbox(sandbox, rel)?
    };
    if !full.is_dir() {
        return Err(Status::invalid_argument(format!(
            "'{rel}' is not a directory; use ReadFile for files"
        )));
    }
    Ok(full)
}

/// The entries of directory `dir`, sorted by name, at most
/// [`MAX_ENTRIES`]. Symbolic links are not followed.
pub fn list_dir(dir: &Path, rel: &str) -> Result<Vec<FileEntry>, Status> {
    let io = |e: std::io::Error| Status::internal(format!("cannot list '{rel}': {e}"));
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue; // removed meanwhile
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        out.push(FileEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            size: meta.len(),
            is_dir: meta.is_dir(),
            mtime,
            is_symlink: meta.file_type().is_symlink(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.truncate(MAX_ENTRIES);
    Ok(out)
}

/// Reads the last `length` (0 = [`MAX_CHUNK`]) bytes; returns the bytes,
/// where they start and the file's size.
pub fn tail_chunk(path: &Path, rel: &str, length: u64) -> Result<(Vec<u8>, u64, u64), Status> {
    let size = std::fs::metadata(path)
        .map_err(|e| Status::internal(format!("cannot read '{rel}': {e}")))?
        .len();
    let want = if length == 0 {
        MAX_CHUNK
    } else {
        length.min(MAX_CHUNK)
    };
    let offset = size.saturating_sub(want);
    let (data, size) = read_chunk(path, rel, offset, want)?;
    Ok((data, offset, size))
}

/// Reads at most `length` (0 = [`MAX_CHUNK`]) bytes at `offset`; returns
/// the bytes and the file's size.
pub fn read_chunk(
    path: &Path,
    rel: &str,
    offset: u64,
    length: u64,
) -> Result<(Vec<u8>, u64), Status> {
    let io = |e: std::io::Error| Status::internal(format!("cannot read '{rel}': {e}"));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(Status::invalid_argument(format!("'{rel}' is a directory")));
    }
    let size = meta.len();
    let want = if length == 0 {
        MAX_CHUNK
    } else {
        length.min(MAX_CHUNK)
    };
    let want = want.min(size.saturating_sub(offset));
    let mut data = Vec::with_capacity(want as usize);
    if want > 0 {
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        f.take(want).read_to_end(&mut data).map_err(io)?;
    }
    Ok((data, size))
}

impl FilesService {
    /// The sandbox of a task's current run; NOT_FOUND when there is none.
    fn sandbox(&self, framework_id: &str, task_id: &str) -> Result<PathBuf, Status> {
        for (kind, id) in [("framework", framework_id), ("task", task_id)] {
            mezz_proto::ids::validate_id(kind, id).map_err(Status::invalid_argument)?;
        }
        let sandbox = executor::sandbox_path(self.agent.work_dir(), framework_id, task_id);
        if !sandbox.is_dir() {
            return Err(Status::not_found(format!(
                "no sandbox for task '{task_id}' of framework '{framework_id}' on this agent"
            )));
        }
        Ok(sandbox)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("file task failed: {e}")))?
}

#[tonic::async_trait]
impl AgentFiles for FilesService {
    async fn list_files(
        &self,
        request: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        let req = request.into_inner();
        let sandbox = self.sandbox(&req.framework_id, &req.task_id)?;
        let task_terminal = self.agent.task_terminal(&req.framework_id, &req.task_id);
        let rel = req.path.clone();
        let entries = blocking(move || {
            let dir = resolve_dir_in_sandbox(&sandbox, &rel)?;
            list_dir(&dir, &rel)
        })
        .await?;
        tracing::debug!(task_id = %req.task_id, path = %req.path, entries = entries.len(), "listed sandbox directory");
        Ok(Response::new(ListFilesResponse {
            entries,
            task_terminal,
        }))
    }

    async fn tail_file(
        &self,
        request: Request<TailFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        let req = request.into_inner();
        let sandbox = self.sandbox(&req.framework_id, &req.task_id)?;
        let task_terminal = self.agent.task_terminal(&req.framework_id, &req.task_id);
        let rel = req.path.clone();
        let length = req.length;
        let (data, offset, size) = blocking(move || {
            let full = resolve_in_sandbox(&sandbox, &rel)?;
            tail_chunk(&full, &rel, length)
        })
        .await?;
        Ok(Response::new(ReadFileResponse {
            data,
            offset,
            size,
            task_terminal,
        }))
    }

    async fn read_file(
        &self,
        request: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        let req = request.into_inner();
        let sandbox = self.sandbox(&req.framework_id, &req.task_id)?;
        // Ask before reading: a terminal task's file is complete once read.
        let task_terminal = self.agent.task_terminal(&req.framework_id, &req.task_id);
        let rel = req.path.clone();
        let (offset, length) = (req.offset, req.length);
        let (data, size) = tokio::task::spawn_blocking(move || {
            let full = resolve_in_sandbox(&sandbox, &rel)?;
            read_chunk(&full, &rel, offset, length)
        })
        .await
        .map_err(|e| Status::internal(format!("file read task failed: {e}")))??;
        tracing::debug!(task_id = %req.task_id, path = %req.path, offset, bytes = data.len(), "read sandbox file");
        Ok(Response::new(ReadFileResponse {
            data,
            offset,
            size,
            task_terminal,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn sandbox() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sb = dir.path().join("sb");
        std::fs::create_dir_all(sb.join("sub")).unwrap();
        std::fs::write(sb.join("stdout"), "hello world").unwrap();
        std::fs::write(sb.join("sub/f"), "x").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        (dir, sb)
    }

    #[test]
    fn paths_inside_are_allowed() {
        let (_d, sb) = sandbox();
        assert!(resolve_in_sandbox(&sb, "stdout").is_ok());
        assert!(resolve_in_sandbox(&sb, "./sub/f").is_ok());
        std::os::unix::fs::symlink(sb.join("stdout"), sb.join("inner-link")).unwrap();
        assert!(resolve_in_sandbox(&sb, "inner-link").is_ok());
    }

    #[test]
    fn escapes_are_refused() {
        let (dir, sb) = sandbox();
        let e = resolve_in_sandbox(&sb, "../secret").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("'../secret'"), "{}", e.message());
        let e = resolve_in_sandbox(&sb, "sub/../../secret").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let abs = dir.path().join("secret").display().to_string();
        let e = resolve_in_sandbox(&sb, &abs).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("absolute"));
        std::os::unix::fs::symlink(dir.path().join("secret"), sb.join("out")).unwrap();
        let e = resolve_in_sandbox(&sb, "out").unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.message().contains("'out'"));
        std::os::unix::fs::symlink("/etc", sb.join("etc")).unwrap();
        let e = resolve_in_sandbox(&sb, "etc/hostname").unwrap_err();
        assert!(matches!(e.code(), Code::PermissionDenied | Code::NotFound));
        let e = resolve_in_sandbox(&sb, "nope").unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.message().contains("'nope'"));
    }

    #[test]
    fn listing_and_tails() {
        let (dir, sb) = sandbox();
        std::os::unix::fs::symlink(dir.path().join("secret"), sb.join("out")).unwrap();
        let root = resolve_dir_in_sandbox(&sb, "").unwrap();
        let names: Vec<(String, bool, bool)> = list_dir(&root, "")
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.is_dir, e.is_symlink))
            .collect();
        assert_eq!(
            names,
            [
                ("out".to_string(), false, true),
                ("stdout".to_string(), false, false),
                ("sub".to_string(), true, false)
            ]
        );
        let sub = resolve_dir_in_sandbox(&sb, "sub").unwrap();
        let e = &list_dir(&sub, "sub").unwrap()[0];
        assert_eq!((e.name.as_str(), e.size), ("f", 1));
        assert!(e.mtime > 1.0e9);
        assert_eq!(
            resolve_dir_in_sandbox(&sb, "..").unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            resolve_dir_in_sandbox(&sb, "stdout").unwrap_err().code(),
            Code::InvalidArgument
        );
        std::os::unix::fs::symlink(dir.path(), sb.join("up")).unwrap();
        assert_eq!(
            resolve_dir_in_sandbox(&sb, "up").unwrap_err().code(),
            Code::PermissionDenied
        );
        let p = sb.join("stdout");
        assert_eq!(
            tail_chunk(&p, "stdout", 5).unwrap(),
            (b"world".to_vec(), 6, 11)
        );
        assert_eq!(
            tail_chunk(&p, "stdout", 50).unwrap(),
            (b"hello world".to_vec(), 0, 11)
        );
    }

    #[test]
    fn chunks() {
        let (_d, sb) = sandbox();
        let p = sb.join("stdout");
        assert_eq!(
            read_chunk(&p, "stdout", 0, 0).unwrap(),
            (b"hello world".to_vec(), 11)
        );
        assert_eq!(
            read_chunk(&p, "stdout", 6, 3).unwrap(),
            (b"wor".to_vec(), 11)
        );
        assert_eq!(read_chunk(&p, "stdout", 50, 0).unwrap(), (vec![], 11));
        let big = sb.join("big");
        std::fs::write(&big, vec![7u8; (MAX_CHUNK as usize) + 10]).unwrap();
        let (data, size) = read_chunk(&big, "big", 0, u64::MAX).unwrap();
        assert_eq!(data.len() as u64, MAX_CHUNK);
        assert_eq!(size, MAX_CHUNK + 10);
        assert_eq!(
            read_chunk(&sb, "sb", 0, 0).unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}
