//! Crash-safe file writes.
//!
//! A file is replaced by writing a temporary file beside it, fsyncing it, renaming it over
//! the old one and fsyncing the folder: after a crash at any instant the path holds either
//! the old content or the new, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::storage::group_commit::GroupCommit;

/// Permissions of state files: the scheduler's user only.
pub const PRIVATE_FILE: u32 = 0o600;
/// Permissions of receipts and journals: owner writes, group reads.
pub const SHARED_FILE: u32 = 0o640;
/// Permissions of folders the scheduler creates.
pub const DIR_MODE: u32 = 0o750;

/// Creates `dir` and its parents with [`DIR_MODE`].
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Atomically replaces `path` with `bytes`, creating parent folders as needed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    ensure_dir(&dir)?;
    let tmp = temp_path(&dir, path)?;
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is harmless but untidy.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to a new file at `path` as [`write_atomic`] does, but leaves its
/// durability to the next round of `commit`, which it waits for: writes that finish while a
/// round runs share one sync. A crash before that round may leave an empty or partial file
/// at `path` (the write was never acknowledged, so whoever asked writes it again).
pub fn write_grouped(path: &Path, bytes: &[u8], mode: u32, commit: &GroupCommit) -> io::Result<()> {
    let file = write_unsynced(path, bytes, mode)?;
    commit.sync(&file)
}

/// Writes `bytes` to a new file at `path` through a temporary beside it, creating the
/// folder if needed, and syncs nothing: the caller makes it durable (a round of the group
/// commit) before counting on it. Returns the written file, still open, so the round knows
/// which file system to sync.
pub fn write_unsynced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<File> {
    let dir = parent_dir(path);
    let tmp = temp_path(&dir, path)?;
    let mut file = open_creating_dir(&tmp, OpenOptions::new().write(true).create(true).truncate(true).mode(mode))?;
    let result = file.write_all(bytes).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // The renamed file is the same inode: its descriptor names the file system to sync.
    Ok(file)
}

/// Opens `path` with `options`, creating its folder (and parents) first if it is missing.
/// The folder is made once; afterwards this costs nothing beyond the open.
pub fn open_creating_dir(path: &Path, options: &OpenOptions) -> io::Result<File> {
    match options.open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ensure_dir(&parent_dir(path))?;
            options.open(path)
        }
        other => other,
    }
}

/// Fsyncs a folder so a rename or a new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes the temporaries [`write_atomic`] left beside `path` when a process died mid-write
/// (`.<name>.tmp<pid>`); returns how many. Only for a file this process owns (it holds its
/// lock), so no other process can be writing one of them.
pub fn remove_stale_temps(path: &Path) -> io::Result<usize> {
    let Some(name) = path.file_name() else { return Ok(0) };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp");
    let prefix = prefix.as_encoded_bytes();
    let mut removed = 0;
    for entry in fs::read_dir(parent_dir(path))? {
        let entry = entry?;
        let file = entry.file_name();
        let stale = file
            .as_encoded_bytes()
            .strip_prefix(prefix)
            .is_some_and(|pid| !pid.is_empty() && pid.iter().all(u8::is_ascii_digit));
        if stale && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A hidden name beside `path`, unique to this process.
fn temp_path(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    let file_name =
        path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    Ok(dir.join(tmp_name))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_of_a_file_are_removed_and_nothing_else() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("s.json");
        for name in [".s.json.tmp123", ".s.json.tmp9", ".s.json.tmpx", ".t.json.tmp1", "s.json", ".s.json.tmp"] {
            fs::write(tmp.path().join(name), b"x").expect("write");
        }
        assert_eq!(remove_stale_temps(&path).expect("removed"), 2);
        let mut left: Vec<_> = fs::read_dir(tmp.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        left.sort();
        assert_eq!(left, [".s.json.tmp", ".s.json.tmpx", ".t.json.tmp1", "s.json"]);
    }
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/state.json");
        write_atomic(&path, b"one", PRIVATE_FILE).expect("first write");
        write_atomic(&path, b"two", PRIVATE_FILE).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, PRIVATE_FILE);
    }

    #[test]
    fn write_grouped_creates_the_folder_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let commit = GroupCommit::new();
        let path = dir.path().join("ns/receipt.json");
        write_grouped(&path, b"one", SHARED_FILE, &commit).expect("write");
        write_grouped(&dir.path().join("ns/second.json"), b"two", SHARED_FILE, &commit).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"one");
        let mut names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec![std::ffi::OsString::from("receipt.json"), std::ffi::OsString::from("second.json")]);
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, SHARED_FILE);
        assert_eq!(commit.rounds(), 2, "each write waited for a round of its own");
    }

    #[test]
    fn write_atomic_reports_an_unwritable_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").expect("write");
        let err = write_atomic(&blocker.join("state.json"), b"x", PRIVATE_FILE);
        assert!(err.is_err());
    }
}
