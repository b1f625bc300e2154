//! Atomic file replacement: the bytes go to a temporary file in the destination's directory,
//! which is fsynced and then renamed over the destination. A crash at any point leaves either
//! the old file or the new one, complete, never a mix; a stray `*.tmp-*` file is all a crash can
//! leave behind.

use super::TrainError;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes` atomically (see the module docs).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = temp_path(path)?;
    let result = write_then_rename(path, &tmp, bytes);
    if result.is_err() {
        // Best effort: the temporary file may not exist, and the first error matters more.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `<dir>/<name>.tmp-<pid>-<n>`: a name next to `path` that no other writer uses.
fn temp_path(path: &Path) -> Result<PathBuf, TrainError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| TrainError::Io {
        op: "write",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    let mut tmp = name.to_os_string();
    tmp.push(format!(".tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    Ok(path.with_file_name(tmp))
}

fn write_then_rename(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let io = |source| TrainError::Io { op: "write", path: path.to_path_buf(), source };
    let mut file = OpenOptions::new().write(true).create_new(true).open(tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(tmp, path).map_err(io)?;
    // Make the rename durable. Not every platform can open a directory for syncing, and the file
    // is already complete under its final name, so a failure here is not an error.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("kiln-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_replacement_keeps_the_destination_and_cleans_up() {
        // Renaming a file over a non-empty directory fails after the bytes were written and
        // synced: the destination must be untouched and the temporary file gone.
        let dir = std::env::temp_dir().join(format!("kiln-atomic-fail-{}", std::process::id()));
        let target = dir.join("state.safetensors");
        fs::create_dir_all(target.join("inside")).unwrap();
        assert!(write_atomically(&target, b"new").is_err());
        assert!(target.join("inside").is_dir());
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.safetensors")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let path = std::env::temp_dir().join("kiln-no-such-dir-3f9a").join("x.bin");
        let err = write_atomically(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("x.bin"), "{err}");
    }
}
