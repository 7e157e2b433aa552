//! The agent API (`AgentFiles`): listing a task's sandbox and reading its
//! files (from an offset, or their end), confined to that sandbox. It
//! reads; it never writes.
//!
//! A task owns its sandbox and may change it while the agent reads it (swap
//! a file for a symbolic link to `/etc/shadow` between a check and an
//! open). So nothing here checks a path and then opens it again by name:
//! every path is opened relative to an open descriptor of the sandbox,
//! without following a symbolic link at any component (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or, on kernels without it, a
//! walk of `O_NOFOLLOW` opens), the descriptor is checked (a regular file
//! to read, a directory to list), and everything is read from it. The
//! agent's own files of a run (`.mezz/`: the launch spec with the task's
//! environment, the exit record) are neither listed nor served.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};
use std::sync::Arc;

use mezz_proto::v1::{
    agent_files_server::AgentFiles, FileEntry, ListFilesRequest, ListFilesResponse,
    ReadFileRequest, ReadFileResponse, TailFileRequest,
};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::executor;
use crate::launch_spec::META_DIR;

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

/// How a path below a directory descriptor is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; the walk
    /// where the kernel (or a seccomp filter) refuses `openat2`.
    Auto,
    /// One `openat(O_NOFOLLOW)` per component, each checked with `fstat`.
    Walk,
}

/// The normal components of `rel`, refusing absolute paths and `..`
/// (INVALID_ARGUMENT) and the agent's `.mezz/` (PERMISSION_DENIED). `.`
/// components are dropped; no components at all means the sandbox itself.
fn components(rel: &str) -> Result<Vec<&OsStr>, Status> {
    let mut out = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
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
    if out.first().is_some_and(|c| *c == OsStr::new(META_DIR)) {
        return Err(Status::permission_denied(format!(
            "path '{rel}' is in '{META_DIR}/', the agent's own files of the run, which are not served"
        )));
    }
    Ok(out)
}

/// What an error of opening `rel` in a sandbox means to a client.
fn open_error(e: Errno, rel: &str) -> Status {
    match e {
        Errno::ENOENT | Errno::ENOTDIR => {
            Status::not_found(format!("no file '{rel}' in the sandbox"))
        }
        Errno::ELOOP => Status::permission_denied(format!(
            "path '{rel}' is or passes through a symbolic link, which the file API does not follow"
        )),
        Errno::EXDEV => {
            Status::permission_denied(format!("path '{rel}' leads outside the sandbox"))
        }
        Errno::EACCES | Errno::EPERM => {
            Status::permission_denied(format!("'{rel}' cannot be read: {e}"))
        }
        _ => Status::internal(format!("cannot open '{rel}': {e}")),
    }
}

fn path_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_CLOEXEC
}

/// Opens `comps` below `dir` as an `O_PATH` descriptor, following no
/// symbolic link and never leaving `dir`. A trailing symbolic link is an
/// error too (`ELOOP`).
fn open_beneath(dir: BorrowedFd<'_>, comps: &[&OsStr], how: Resolve) -> Result<OwnedFd, Errno> {
    if comps.is_empty() {
        return nix::fcntl::openat(dir, ".", path_flags() | OFlag::O_DIRECTORY, Mode::empty());
    }
    if how == Resolve::Auto {
        let mut joined = Vec::new();
        for (i, c) in comps.iter().enumerate() {
            if i > 0 {
                joined.push(b'/');
            }
            joined.extend_from_slice(c.as_bytes());
        }
        let open_how = OpenHow::new().flags(path_flags()).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        match nix::fcntl::openat2(dir, OsStr::from_bytes(&joined), open_how) {
            // ENOSYS: a kernel before 5.6; EPERM: a seccomp filter that
            // does not know the call. The walk is as safe, only slower.
            Err(Errno::ENOSYS) | Err(Errno::EPERM) => {}
            other => return other,
        }
    }
    let mut cur: Option<OwnedFd> = None;
    for (i, c) in comps.iter().enumerate() {
        let at = cur.as_ref().map_or(dir, |f| f.as_fd());
        let fd = nix::fcntl::openat(at, *c, path_flags() | OFlag::O_NOFOLLOW, Mode::empty())?;
        let kind = SFlag::from_bits_truncate(nix::sys::stat::fstat(&fd)?.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            return Err(Errno::ELOOP);
        }
        if i + 1 < comps.len() && kind != SFlag::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        cur = Some(fd);
    }
    cur.ok_or(Errno::ENOENT)
}

fn file_kind(fd: &OwnedFd, rel: &str) -> Result<SFlag, Status> {
    nix::sys::stat::fstat(fd)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
        .map_err(|e| Status::internal(format!("cannot stat '{rel}': {e}")))
}

/// An open descriptor of one task's sandbox directory: everything the
/// file API reads is opened below it.
pub struct SandboxDir {
    fd: OwnedFd,
}

impl SandboxDir {
    /// The sandbox of a task's current run under the agent's `work_dir`;
    /// NOT_FOUND when there is none. Ids must be validated first.
    pub fn of_task(work_dir: &Path, framework_id: &str, task_id: &str) -> Result<Self, Status> {
        let root = executor::sandboxes_root(work_dir);
        // The agent's own directory: its path is the operator's to choose.
        let root_fd = nix::fcntl::open(&root, path_flags() | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| {
                Status::internal(format!(
                    "cannot open the sandboxes at {}: {e}",
                    root.display()
                ))
            })?;
        let comps = [OsStr::new(framework_id), OsStr::new(task_id)];
        match open_beneath(root_fd.as_fd(), &comps, Resolve::Auto) {
            Ok(fd) if file_kind(&fd, task_id)? == SFlag::S_IFDIR => Ok(SandboxDir { fd }),
            Ok(_) | Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                Err(Status::not_found(format!(
                    "no sandbox for task '{task_id}' of framework '{framework_id}' on this agent"
                )))
            }
            Err(e) => Err(Status::internal(format!(
                "cannot open the sandbox of task '{task_id}': {e}"
            ))),
        }
    }

    /// The directory at `path` as a sandbox.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let fd = nix::fcntl::open(path, path_flags() | OFlag::O_DIRECTORY, Mode::empty())?;
        Ok(SandboxDir { fd })
    }

    /// Opens the regular file `rel` for reading. Absolute paths and `..`
    /// are INVALID_ARGUMENT; symbolic links anywhere on the way, `.mezz/`
    /// and anything but a regular file are PERMISSION_DENIED (a directory
    /// is INVALID_ARGUMENT); a missing file is NOT_FOUND.
    pub fn open_file(&self, rel: &str, how: Resolve) -> Result<File, Status> {
        let comps = components(rel)?;
        if comps.is_empty() {
            return Err(Status::invalid_argument(format!(
                "'{rel}' is the sandbox directory; give a file, e.g. 'stdout'"
            )));
        }
        let fd = open_beneath(self.fd.as_fd(), &comps, how).map_err(|e| open_error(e, rel))?;
        match file_kind(&fd, rel)? {
            SFlag::S_IFREG => {}
            SFlag::S_IFDIR => {
                return Err(Status::invalid_argument(format!(
                    "'{rel}' is a directory; use ListFiles for directories"
                )))
            }
            _ => {
                return Err(Status::permission_denied(format!(
                    "'{rel}' is not a regular file; only regular files are served"
                )))
            }
        }
        // The O_PATH descriptor cannot be read from. Reopening it through
        // its /proc entry opens the very inode it holds (no name is looked
        // up again), and only now that it is known to be a regular file:
        // opening a FIFO or a device could block or act on it.
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let file = nix::fcntl::open(
            proc_path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| open_error(e, rel))?;
        Ok(File::from(file))
    }

    /// Opens the directory `rel` (empty or `.`: the sandbox) for listing,
    /// with the confinement of [`SandboxDir::open_file`]; a file is
    /// INVALID_ARGUMENT.
    pub fn open_dir(&self, rel: &str, how: Resolve) -> Result<nix::dir::Dir, Status> {
        let comps = components(rel)?;
        let fd = open_beneath(self.fd.as_fd(), &comps, how).map_err(|e| open_error(e, rel))?;
        if file_kind(&fd, rel)? != SFlag::S_IFDIR {
            return Err(Status::invalid_argument(format!(
                "'{rel}' is not a directory; use ReadFile for files"
            )));
        }
        // "." below an O_PATH directory descriptor is that directory.
        let dir = nix::fcntl::openat(
            &fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_error(e, rel))?;
        nix::dir::Dir::from_fd(dir).map_err(|e| open_error(e, rel))
    }
}

/// The entries of the directory `dir` (opened as `rel`), sorted by name, at
/// most [`MAX_ENTRIES`]; at the sandbox's top (`rel` empty or `.`) without
/// the agent's `.mezz/`. Symbolic links are not followed.
pub fn list_dir(mut dir: nix::dir::Dir, rel: &str) -> Result<Vec<FileEntry>, Status> {
    let top = Path::new(rel).components().all(|c| c == Component::CurDir);
    let io = |e: Errno| Status::internal(format!("cannot list '{rel}': {e}"));
    let names: Vec<std::ffi::CString> = dir
        .iter()
        .map(|e| e.map(|e| e.file_name().to_owned()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    let mut out = Vec::new();
    for name in names {
        let bytes = name.as_bytes();
        if bytes == b"." || bytes == b".." || (top && bytes == META_DIR.as_bytes()) {
            continue;
        }
        let Ok(st) = nix::sys::stat::fstatat(
            dir.as_fd(),
            name.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            continue; // removed meanwhile
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let mtime = st.st_mtime as f64 + st.st_mtime_nsec as f64 / 1e9;
        out.push(FileEntry {
            name: String::from_utf8_lossy(bytes).into_owned(),
            size: st.st_size.max(0) as u64,
            is_dir: kind == SFlag::S_IFDIR,
            mtime: mtime.max(0.0),
            is_symlink: kind == SFlag::S_IFLNK,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.truncate(MAX_ENTRIES);
    Ok(out)
}

/// Reads the last `length` (0 = [`MAX_CHUNK`]) bytes of `file`; returns the
/// bytes, where they start and the file's size.
pub fn tail_chunk(file: &File, rel: &str, length: u64) -> Result<(Vec<u8>, u64, u64), Status> {
    let size = file
        .metadata()
        .map_err(|e| Status::internal(format!("cannot read '{rel}': {e}")))?
        .len();
    let want = if length == 0 {
        MAX_CHUNK
    } else {
        length.min(MAX_CHUNK)
    };
    let offset = size.saturating_sub(want);
    let (data, size) = read_chunk(file, rel, offset, want)?;
    Ok((data, offset, size))
}

/// Reads at most `length` (0 = [`MAX_CHUNK`]) bytes of `file` at `offset`;
/// returns the bytes and the file's size.
pub fn read_chunk(
    file: &File,
    rel: &str,
    offset: u64,
    length: u64,
) -> Result<(Vec<u8>, u64), Status> {
    let io = |e: std::io::Error| Status::internal(format!("cannot read '{rel}': {e}"));
    let size = file.metadata().map_err(io)?.len();
    let want = if length == 0 {
        MAX_CHUNK
    } else {
        length.min(MAX_CHUNK)
    };
    let want = want.min(size.saturating_sub(offset)) as usize;
    let mut data = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match file.read_at(&mut data[got..], offset + got as u64) {
            Ok(0) => break, // truncated meanwhile
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    data.truncate(got);
    Ok((data, size))
}

impl FilesService {
    /// Validates the ids and the master's grant, and returns what opening
    /// their sandbox needs.
    fn target(
        &self,
        grant: Option<&str>,
        framework_id: &str,
        task_id: &str,
    ) -> Result<Target, Status> {
        for (kind, id) in [("framework", framework_id), ("task", task_id)] {
            mezz_proto::ids::validate_id(kind, id).map_err(Status::invalid_argument)?;
        }
        self.agent
            .check_grant(grant, framework_id, task_id)
            .map_err(|e| {
                tracing::info!(framework_id, task_id, "sandbox read refused: {e}");
                Status::permission_denied(e.to_string())
            })?;
        Ok(Target {
            work_dir: self.agent.work_dir().to_path_buf(),
            framework_id: framework_id.to_string(),
            task_id: task_id.to_string(),
        })
    }
}

/// The sandbox grant a call carries, if any.
fn grant_of<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get(mezz_proto::grant::GRANT_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A task's sandbox, by validated ids.
struct Target {
    work_dir: std::path::PathBuf,
    framework_id: String,
    task_id: String,
}

impl Target {
    fn open(&self) -> Result<SandboxDir, Status> {
        SandboxDir::of_task(&self.work_dir, &self.framework_id, &self.task_id)
    }
}

/// Runs the file work on the blocking pool: it opens and reads files.
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
        let grant = grant_of(&request);
        let req = request.into_inner();
        let target = self.target(grant.as_deref(), &req.framework_id, &req.task_id)?;
        let task_terminal = self.agent.task_terminal(&req.framework_id, &req.task_id);
        let rel = req.path.clone();
        let entries = blocking(move || {
            let dir = target.open()?.open_dir(&rel, Resolve::Auto)?;
            list_dir(dir, &rel)
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
        let grant = grant_of(&request);
        let req = request.into_inner();
        let target = self.target(grant.as_deref(), &req.framework_id, &req.task_id)?;
        let task_terminal = self.agent.task_terminal(&req.framework_id, &req.task_id);
        let rel = req.path.clone();
        let length = req.length;
        let (data, offset, size) = blocking(move || {
            let file = target.open()?.open_file(&rel, Resolve::Auto)?;
            tail_chunk(&file, &rel, length)
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
        let grant = grant_of(&request);
        let req = request.into_inner();
        let target = self.target(grant.as_deref(), &req.framework_id, &req.task_id)?;
        // Ask before reading: a terminal task's file is complete once read.
        let task_terminal = self.agent.task_terminal(&req.framework_id, &req.task_id);
        let rel = req.path.clone();
        let (offset, length) = (req.offset, req.length);
        let (data, size) = blocking(move || {
            let file = target.open()?.open_file(&rel, Resolve::Auto)?;
            read_chunk(&file, &rel, offset, length)
        })
        .await?;
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
    use std::path::PathBuf;
    use tonic::Code;

    const BOTH: [Resolve; 2] = [Resolve::Auto, Resolve::Walk];

    fn sandbox() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sb = dir.path().join("sb");
        std::fs::create_dir_all(sb.join("sub")).unwrap();
        std::fs::create_dir_all(sb.join(".mezz")).unwrap();
        std::fs::write(sb.join(".mezz/launch.json"), "{\"env\":{}}").unwrap();
        std::fs::write(sb.join("stdout"), "hello world").unwrap();
        std::fs::write(sb.join("sub/f"), "x").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        (dir, sb)
    }

    fn read_all(sb: &Path, rel: &str, how: Resolve) -> Result<Vec<u8>, Status> {
        let f = SandboxDir::open(sb).unwrap().open_file(rel, how)?;
        Ok(read_chunk(&f, rel, 0, 0)?.0)
    }

    #[test]
    fn paths_inside_are_read() {
        let (_d, sb) = sandbox();
        for how in BOTH {
            assert_eq!(read_all(&sb, "stdout", how).unwrap(), b"hello world");
            assert_eq!(read_all(&sb, "./sub/f", how).unwrap(), b"x");
            assert_eq!(read_all(&sb, "sub//f", how).unwrap(), b"x");
        }
    }

    #[test]
    fn escapes_and_links_are_refused() {
        let (dir, sb) = sandbox();
        std::os::unix::fs::symlink(dir.path().join("secret"), sb.join("out")).unwrap();
        std::os::unix::fs::symlink("/etc", sb.join("etc")).unwrap();
        // Even a link that stays inside: the target could be swapped.
        std::os::unix::fs::symlink(sb.join("stdout"), sb.join("inner-link")).unwrap();
        std::os::unix::fs::symlink("sub", sb.join("sublink")).unwrap();
        for how in BOTH {
            let e = read_all(&sb, "../secret", how).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains("'../secret'"), "{}", e.message());
            let e = read_all(&sb, "sub/../../secret", how).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            let abs = dir.path().join("secret").display().to_string();
            let e = read_all(&sb, &abs, how).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains("absolute"));
            for link in ["out", "etc/hostname", "inner-link", "sublink/f"] {
                let e = read_all(&sb, link, how).unwrap_err();
                assert_eq!(e.code(), Code::PermissionDenied, "{link} {how:?}");
                assert!(e.message().contains("symbolic link"), "{}", e.message());
            }
            let e = read_all(&sb, "nope", how).unwrap_err();
            assert_eq!(e.code(), Code::NotFound);
            assert!(e.message().contains("'nope'"));
            let e = read_all(&sb, "stdout/x", how).unwrap_err();
            assert_eq!(e.code(), Code::NotFound);
            let e = read_all(&sb, "sub", how).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            let e = read_all(&sb, "", how).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
        }
    }

    #[test]
    fn agent_metadata_is_not_served() {
        let (_d, sb) = sandbox();
        let s = SandboxDir::open(&sb).unwrap();
        for rel in [
            ".mezz/launch.json",
            "./.mezz/launch.json",
            ".mezz",
            ".mezz/",
        ] {
            let e = s.open_file(rel, Resolve::Auto).unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{rel}");
            assert!(e.message().contains(".mezz"), "{}", e.message());
            let e = s.open_dir(rel, Resolve::Auto).unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{rel}");
        }
        // A directory of that name deeper down is the task's own.
        std::fs::create_dir_all(sb.join("sub/.mezz")).unwrap();
        std::fs::write(sb.join("sub/.mezz/x"), "mine").unwrap();
        assert_eq!(
            read_all(&sb, "sub/.mezz/x", Resolve::Auto).unwrap(),
            b"mine"
        );
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let (_d, sb) = sandbox();
        nix::unistd::mkfifo(&sb.join("pipe"), Mode::from_bits_truncate(0o644)).unwrap();
        for how in BOTH {
            let e = read_all(&sb, "pipe", how).unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied);
            assert!(
                e.message().contains("not a regular file"),
                "{}",
                e.message()
            );
        }
    }

    #[test]
    fn listing_and_tails() {
        let (dir, sb) = sandbox();
        std::os::unix::fs::symlink(dir.path().join("secret"), sb.join("out")).unwrap();
        std::os::unix::fs::symlink(dir.path(), sb.join("up")).unwrap();
        let s = SandboxDir::open(&sb).unwrap();
        for how in BOTH {
            for top in ["", "."] {
                let names: Vec<(String, bool, bool)> = list_dir(s.open_dir(top, how).unwrap(), top)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.name, e.is_dir, e.is_symlink))
                    .collect();
                assert_eq!(
                    names,
                    [
                        ("out".to_string(), false, true),
                        ("stdout".to_string(), false, false),
                        ("sub".to_string(), true, false),
                        ("up".to_string(), false, true),
                    ]
                );
            }
            let e = &list_dir(s.open_dir("sub", how).unwrap(), "sub").unwrap()[0];
            assert_eq!((e.name.as_str(), e.size), ("f", 1));
            assert!(e.mtime > 1.0e9);
            assert_eq!(
                s.open_dir("..", how).unwrap_err().code(),
                Code::InvalidArgument
            );
            assert_eq!(
                s.open_dir("stdout", how).unwrap_err().code(),
                Code::InvalidArgument
            );
            assert_eq!(
                s.open_dir("up", how).unwrap_err().code(),
                Code::PermissionDenied
            );
            assert_eq!(s.open_dir("nope", how).unwrap_err().code(), Code::NotFound);
        }
        let f = s.open_file("stdout", Resolve::Auto).unwrap();
        assert_eq!(
            tail_chunk(&f, "stdout", 5).unwrap(),
            (b"world".to_vec(), 6, 11)
        );
        assert_eq!(
            tail_chunk(&f, "stdout", 50).unwrap(),
            (b"hello world".to_vec(), 0, 11)
        );
    }

    #[test]
    fn chunks() {
        let (_d, sb) = sandbox();
        let s = SandboxDir::open(&sb).unwrap();
        let f = s.open_file("stdout", Resolve::Auto).unwrap();
        assert_eq!(
            read_chunk(&f, "stdout", 0, 0).unwrap(),
            (b"hello world".to_vec(), 11)
        );
        assert_eq!(
            read_chunk(&f, "stdout", 6, 3).unwrap(),
            (b"wor".to_vec(), 11)
        );
        assert_eq!(read_chunk(&f, "stdout", 50, 0).unwrap(), (vec![], 11));
        std::fs::write(sb.join("big"), vec![7u8; (MAX_CHUNK as usize) + 10]).unwrap();
        let big = s.open_file("big", Resolve::Auto).unwrap();
        let (data, size) = read_chunk(&big, "big", 0, u64::MAX).unwrap();
        assert_eq!(data.len() as u64, MAX_CHUNK);
        assert_eq!(size, MAX_CHUNK + 10);
    }

    #[test]
    fn a_file_swapped_after_opening_is_still_the_one_opened() {
        let (dir, sb) = sandbox();
        let s = SandboxDir::open(&sb).unwrap();
        let f = s.open_file("stdout", Resolve::Auto).unwrap();
        std::fs::remove_file(sb.join("stdout")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), sb.join("stdout")).unwrap();
        assert_eq!(read_chunk(&f, "stdout", 0, 0).unwrap().0, b"hello world");
    }
}
