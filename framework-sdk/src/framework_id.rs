//! The framework id file: where a framework keeps the id the master gave it,
//! so that a restarted scheduler fails over to its registration (and keeps
//! its tasks) instead of registering anew. Only file I/O lives here; when to
//! load, store and remove is the runtime's call.

use std::io::Write;
use std::path::Path;

use crate::error::SdkError;

fn file_error(path: &Path, message: impl Into<String>) -> SdkError {
    SdkError::FrameworkIdFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The id stored at `path`; `None` when there is no file yet (or it is
/// empty: a crash between create and write leaves that).
pub(crate) fn load(path: &Path) -> Result<Option<String>, SdkError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, format!("cannot read it: {e}"))),
    };
    let id = text.trim();
    if id.is_empty() {
        return Ok(None);
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(file_error(
            path,
            "it does not hold a framework id (one word); delete it to register anew",
        ));
    }
    Ok(Some(id.to_string()))
}

/// Writes `id` to `path` durably: a temporary file beside it, synced, then
/// renamed over it, so a crash leaves either the old id or the new one.
pub(crate) fn store(path: &Path, id: &str) -> Result<(), SdkError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| file_error(path, format!("cannot create {}: {e}", dir.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "framework-id".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(format!("{id}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is synced.
        std::fs::File::open(dir).and_then(|d| d.sync_all())
    };
    write().map_err(|e| file_error(path, format!("cannot write it: {e}")))
}

/// Forgets the id (the framework is gone for good).
pub(crate) fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "framework id file removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot remove the framework id file: {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_remove() {
        let dir = std::env::temp_dir().join(format!("mezz-sdk-fwid-{}", std::process::id()));
        let path = dir.join("sub").join("fw.id");
        assert_eq!(load(&path).ok(), Some(None));
        store(&path, "fw-42").expect("store");
        assert_eq!(load(&path).ok(), Some(Some("fw-42".to_string())));
        store(&path, "fw-43").expect("overwrite");
        assert_eq!(load(&path).ok(), Some(Some("fw-43".to_string())));
        std::fs::write(&path, "two words\n").expect("write");
        let err = load(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("fw.id") && err.contains("delete it"), "{err}");
        std::fs::write(&path, "\n").expect("write");
        assert_eq!(load(&path).ok(), Some(None));
        remove(&path);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
