//! Reading a file that someone else names: a config file, a secret file, the state file, an
//! env file, a batch.
//!
//! A path can lead to something that is not a file at all. Opening a named pipe blocks until
//! a writer appears, opening some devices has effects (arming a watchdog), reading
//! `/dev/zero` never ends, and a socket or a folder fails in ways that say nothing useful.
//! So the path is first opened with `O_PATH`, which follows links but opens nothing, and the
//! type is checked on that descriptor; only a regular file is then opened for reading, through
//! the descriptor (`/proc/self/fd/N`), so the file read is the one checked, not whatever the
//! name points at by then. Reads stop at a limit.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// What a path led to, when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A folder.
    Folder,
    /// A named pipe (FIFO).
    NamedPipe,
    /// A Unix socket.
    Socket,
    /// A character device (`/dev/zero`, a terminal …).
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Anything else.
    Special,
}

impl Kind {
    /// What it is called in errors: `named pipe`, `folder` …
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Folder => "folder",
            Kind::NamedPipe => "named pipe",
            Kind::Socket => "socket",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Special => "special file",
        }
    }

    fn of(t: &std::fs::FileType) -> Kind {
        if t.is_dir() {
            Kind::Folder
        } else if t.is_fifo() {
            Kind::NamedPipe
        } else if t.is_socket() {
            Kind::Socket
        } else if t.is_char_device() {
            Kind::CharDevice
        } else if t.is_block_device() {
            Kind::BlockDevice
        } else {
            Kind::Special
        }
    }
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The OS refused (missing, no permission, a symlink loop …).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// What the path leads to is not a regular file.
    #[error("is a {}, not a regular file", .0.name())]
    NotRegular(Kind),
    /// The name was pointed at another file between the type check and the open.
    #[error("was replaced while it was opened")]
    Swapped,
    /// Larger than the caller accepts.
    #[error("is larger than {}", size(*.limit))]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

impl ReadError {
    /// Whether the path does not exist (a missing optional file is not an error).
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// Opens `path` for reading, following links, if what it leads to is a regular file; never
/// blocks on a named pipe and never runs a device's open routine. Reads of the file block as
/// usual.
pub(crate) fn open_regular(path: &Path) -> Result<File, ReadError> {
    let probe = OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(path)?;
    let checked = probe.metadata()?;
    if !checked.is_file() {
        return Err(ReadError::NotRegular(Kind::of(&checked.file_type())));
    }
    // Open the inode just checked, not the name again, which may have been swapped since.
    // Without /proc the name is opened, and must still be that inode.
    let flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    let same_inode = PathBuf::from(format!("/proc/self/fd/{}", probe.as_raw_fd()));
    let file = match OpenOptions::new().read(true).custom_flags(flags).open(&same_inode) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            OpenOptions::new().read(true).custom_flags(flags).open(path)?
        }
        other => other?,
    };
    let opened = file.metadata()?;
    if !opened.is_file() || (opened.dev(), opened.ino()) != (checked.dev(), checked.ino()) {
        return Err(ReadError::Swapped);
    }
    clear_nonblocking(&file)?;
    Ok(file)
}

/// Makes reads of an open regular file blocking again: `O_NONBLOCK` was for the open, and a
/// file system that honours it on reads would answer "try again" instead of the data.
fn clear_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows open; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The whole content of the regular file at `path`, refused when larger than `limit` bytes
/// (also when it grows past `limit` while being read).
pub(crate) fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
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
        assert!(matches!(read_regular(tmp.path(), 1024), Err(ReadError::NotRegular(Kind::Folder))));
        let big = tmp.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).expect("write");
        assert_eq!(read_regular(&big, 1024).expect_err("too large").to_string(), "is larger than 1 KiB");
        assert_eq!(read_regular(&big, 2048).expect("at the limit").len(), 2048);
        assert!(read_regular(&tmp.path().join("missing"), 1024).expect_err("missing").is_not_found());
    }
}
