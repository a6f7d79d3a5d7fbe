//! Reading a file that someone else names: a config file, a secret file, the state file, an
//! env file.
//!
//! A path can lead to something that is not a file at all. Opening a named pipe blocks until
//! a writer appears, reading `/dev/zero` never ends, and a socket or a directory fails in
//! ways that say nothing useful. So the file is opened without blocking (`O_NONBLOCK`, which
//! a regular file ignores), the type of what was opened is checked on the open descriptor
//! (checking the name first would race with a rename), and the read stops at a limit.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The OS refused (missing, no permission, a symlink loop …).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// What the path leads to is not a regular file.
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    /// Larger than the caller accepts.
    #[error("is larger than {}", size(*.limit))]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

impl ReadError {
    /// Whether the path does not exist (a missing optional file is not an error).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// Opens `path` for reading, following links, if what it leads to is a regular file; never
/// blocks on a named pipe or a device.
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(ReadError::NotRegular(if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }))
}

/// The whole content of the regular file at `path`, refused when larger than `limit` bytes
/// (also when it grows past `limit` while being read).
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// `limit` in the largest whole unit that fits it.
fn size(limit: u64) -> String {
    match limit {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
        // SAFETY: a valid C string; mkfifo only creates a file system entry.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    #[test]
    fn a_named_pipe_is_refused_at_once_even_through_a_link() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pipe = tmp.path().join("pipe");
        mkfifo(&pipe);
        let link = tmp.path().join("link.yaml");
        std::os::unix::fs::symlink(&pipe, &link).expect("symlink");
        for path in [&pipe, &link] {
            let e = read_regular(path, 1024).expect_err("a pipe");
            assert_eq!(e.to_string(), "is a named pipe, not a regular file");
        }
    }

    #[test]
    fn devices_folders_and_endless_files_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            read_regular(Path::new("/dev/zero"), 1024).expect_err("device").to_string(),
            "is a character device, not a regular file"
        );
        assert_eq!(read_regular(tmp.path(), 1024).expect_err("folder").to_string(), "is a folder, not a regular file");
        let big = tmp.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).expect("write");
        assert_eq!(read_regular(&big, 1024).expect_err("too large").to_string(), "is larger than 1 KiB");
        assert_eq!(read_regular(&big, 2048).expect("at the limit").len(), 2048);
        assert!(read_regular(&tmp.path().join("missing"), 1024).expect_err("missing").is_not_found());
    }
}
