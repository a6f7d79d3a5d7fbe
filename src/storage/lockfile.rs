//! One owner per state file and per root: an exclusive lock on a file beside what it guards.
//!
//! Two schedulers on one state file would anchor every cadence twice and interleave their lines
//! in the same `local:` journal, breaking its hash chain. So a scheduler takes an exclusive,
//! non-blocking `flock` on `<state file>.lock` and on `$VMSH_ROOT/out/.vmsh-scheduler.lock`
//! before it reads the state, and holds both until it exits. The kernel releases a lock when
//! the last descriptor of its open file goes away, so a process killed with SIGKILL leaves no
//! stale lock behind, and the lock file itself is never removed (removing it would let two
//! processes lock two different files under one name).
//!
//! `flock` rather than `fcntl` record locks: a record lock belongs to the process and is
//! dropped when *any* descriptor of that file is closed, whichever code closed it; a `flock`
//! belongs to the one open file held here. Linux emulates `flock` on NFS with a whole-file
//! `fcntl` lock, so it reaches the server's lock manager too (see docs/OPERATIONS.md, "One
//! process per state file and root", for what that does and does not guarantee).
//!
//! Once it holds the lock, the owner writes `pid host start-time` into the file, so a second
//! process can say who holds it. The loser never writes: it opens without truncating and only
//! reads. The lock itself is held through a read-only descriptor where the file system allows
//! it (NFS does not), so it never keeps a volume from being remounted read-only.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::storage::durable::PRIVATE_FILE;

/// Where the lock of the outputs under a root goes: `out/` holds what two processes would
/// interleave (journals, receipts).
pub const ROOT_LOCK: &str = "out/.vmsh-scheduler.lock";

/// The lock file of a state file: `<state file>.lock`.
pub fn state_lock_path(state_path: &Path) -> PathBuf {
    let mut name = state_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    state_path.with_file_name(name)
}

/// The lock file of the outputs under `root`.
pub fn root_lock_path(root: &Path) -> PathBuf {
    root.join(ROOT_LOCK)
}

/// Longest holder record read back; a real one is well under 100 bytes.
const MAX_RECORD: u64 = 256;

/// A held lock; dropping it (or the process ending, however it ends) releases it.
#[derive(Debug)]
pub struct OwnerLock {
    /// Held open for its lock: closing it releases the lock.
    _file: File,
    path: PathBuf,
    /// Device and inode, to recognise a second path to the same file.
    id: (u64, u64),
}

impl OwnerLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds a lock, as far as its record says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: Option<u32>,
    /// The host it runs on.
    pub host: Option<String>,
    /// When it took the lock (RFC 3339).
    pub since: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => f.write_str("a process that has not recorded its pid")?,
        }
        if let Some(host) = &self.host {
            write!(f, " on host {host}")?;
        }
        if let Some(since) = &self.since {
            write!(f, " since {since}")?;
        }
        Ok(())
    }
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another open file holds it: another process (or this one, through another path).
    #[error("lock {path} is held by {holder}")]
    Held {
        /// The lock file.
        path: PathBuf,
        /// What its record says.
        holder: Holder,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock {path}: {reason}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What went wrong, with the OS error.
        reason: String,
    },
}

/// What the owner writes into its lock file: `pid host start-time`.
pub fn record(pid: u32, host: &str, since: &str) -> String {
    format!("{pid} {} {}\n", clean(host).unwrap_or_else(|| "unknown".into()), clean(since).unwrap_or_default())
}

/// This machine's host name, or `unknown`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    clean(&String::from_utf8_lossy(&buf[..end])).unwrap_or_else(|| "unknown".into())
}

/// Takes the lock at `path` without waiting and writes `record` into it. Returns `None` when
/// `path` is another name of a file in `held` (already ours: locking it again through a second
/// open file would conflict with ourselves).
pub fn acquire(path: &Path, record: &str, held: &[OwnerLock]) -> Result<Option<OwnerLock>, LockError> {
    let io_error =
        |what: &str, e: io::Error| LockError::Io { path: path.to_path_buf(), reason: format!("{what}: {e}") };
    // Held open read-only where the file system allows it: a file open for writing would keep
    // its file system from being remounted read-only, an operator's first move on a failing disk.
    let mut file = open(path, false)?;
    let id = identity(&file).map_err(|e| io_error("cannot inspect", e))?;
    if held.iter().any(|l| l.id == id) {
        return Ok(None);
    }
    match flock(&file) {
        // NFS emulates flock with a write lock, which needs a file open for writing.
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
            file = open(path, true)?;
            if identity(&file).map_err(|e| io_error("cannot inspect", e))? != id {
                return Err(io_error("cannot lock", io::Error::other("the file was replaced while being opened")));
            }
            flock(&file)
        }
        other => other,
    }
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => LockError::Held { path: path.to_path_buf(), holder: read_holder(&file) },
        _ => io_error("the file system refused the lock (does it support locks?)", e),
    })?;
    // Only the holder writes, and only now, through a descriptor of its own that is closed
    // again: closing another descriptor of the file does not release a flock.
    let writer = open(path, true)?;
    if identity(&writer).map_err(|e| io_error("cannot inspect", e))? != id {
        return Err(io_error("cannot write", io::Error::other("the file was replaced while being locked")));
    }
    writer
        .set_len(0)
        .and_then(|()| writer.write_all_at(record.as_bytes(), 0))
        .map_err(|e| io_error("cannot write", e))?;
    Ok(Some(OwnerLock { _file: file, path: path.to_path_buf(), id }))
}

/// Opens (creating) the lock file: never truncating it (a process that loses the race must
/// not wipe the holder's record) and never following a link (a planted symlink must not make
/// us lock, and then overwrite, another file). Refuses anything but a regular file.
fn open(path: &Path, write: bool) -> Result<File, LockError> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .mode(PRIVATE_FILE)
        .custom_flags(libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| LockError::Io {
            path: path.to_path_buf(),
            reason: match e.raw_os_error() {
                Some(libc::ELOOP) => "it is a symbolic link; remove it and start again".into(),
                _ => format!("cannot open: {e}"),
            },
        })?;
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        Ok(_) => Err(LockError::Io { path: path.to_path_buf(), reason: "it is not a regular file".into() }),
        Err(e) => Err(LockError::Io { path: path.to_path_buf(), reason: format!("cannot inspect: {e}") }),
    }
}

fn identity(file: &File) -> io::Result<(u64, u64)> {
    file.metadata().map(|m| (m.dev(), m.ino()))
}

fn flock(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor owned by `file`, which outlives the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads the holder's record; what cannot be read or parsed is left out.
fn read_holder(file: &File) -> Holder {
    let mut text = String::new();
    let mut reader = file.take(MAX_RECORD);
    if reader.read_to_string(&mut text).is_err() {
        return Holder::default();
    }
    parse_holder(&text)
}

/// Parses `pid host start-time`; the fields are shown to an operator, so anything that is not
/// one plain word is dropped rather than printed.
fn parse_holder(text: &str) -> Holder {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [pid, host, since] = words.as_slice() else { return Holder::default() };
    Holder { pid: pid.parse().ok(), host: clean(host), since: clean(since) }
}

/// `s` if it is one word of at most 64 printable ASCII characters.
fn clean(s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(result: Result<Option<OwnerLock>, LockError>) -> Holder {
        match result {
            Err(LockError::Held { holder, .. }) => holder,
            other => panic!("expected the lock to be held, got {other:?}"),
        }
    }

    #[test]
    fn a_second_open_file_cannot_take_a_held_lock_and_learns_who_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json.lock");
        let first = acquire(&path, &record(4242, "web-1", "2026-08-01T00:00:00.000Z"), &[])
            .expect("first lock")
            .expect("a new lock");
        // Another open file of the same file conflicts exactly as another process would.
        let holder = held_by(acquire(&path, &record(7, "other", "2026-08-02T00:00:00.000Z"), &[]));
        assert_eq!(
            holder,
            Holder { pid: Some(4242), host: Some("web-1".into()), since: Some("2026-08-01T00:00:00.000Z".into()) }
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("record"),
            "4242 web-1 2026-08-01T00:00:00.000Z\n",
            "the loser left the holder's record as it was"
        );
        let err = acquire(&path, "7 other x\n", &[]).expect_err("still held");
        assert_eq!(
            err.to_string(),
            format!("lock {} is held by pid 4242 on host web-1 since 2026-08-01T00:00:00.000Z", path.display())
        );
        drop(first);
        let next = acquire(&path, &record(7, "other", "t"), &[]).expect("free again").expect("a new lock");
        assert_eq!(std::fs::read_to_string(next.path()).expect("record"), "7 other t\n");
    }

    #[test]
    fn a_second_name_of_a_lock_already_held_is_recognised_as_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.lock");
        let first = acquire(&path, "1 h t\n", &[]).expect("lock").expect("new");
        let other_name = dir.path().join("b.lock");
        std::fs::hard_link(&path, &other_name).expect("link");
        assert!(acquire(&other_name, "1 h t\n", std::slice::from_ref(&first)).expect("no conflict").is_none());
    }

    #[test]
    fn a_symbolic_link_or_a_folder_at_the_lock_path_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        let link = dir.path().join("s.json.lock");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        match acquire(&link, "1 h t\n", &[]) {
            Err(LockError::Io { reason, .. }) => assert!(reason.contains("symbolic link"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
        let folder = dir.path().join("d.lock");
        std::fs::create_dir(&folder).expect("mkdir");
        assert!(matches!(acquire(&folder, "1 h t\n", &[]), Err(LockError::Io { .. })));
    }

    #[test]
    fn an_unreadable_or_hostile_record_is_not_repeated() {
        assert_eq!(parse_holder(""), Holder::default());
        assert_eq!(parse_holder("garbage"), Holder::default());
        let h = parse_holder("12 \u{1b}[31mevil 2026");
        assert_eq!((h.pid, h.host, h.since.as_deref()), (Some(12), None, Some("2026")));
        assert_eq!(Holder::default().to_string(), "a process that has not recorded its pid");
        assert_eq!(record(1, "bad host", "t"), "1 unknown t\n");
    }

    #[test]
    fn the_lock_is_held_through_a_read_only_descriptor_so_its_file_system_can_be_remounted_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = acquire(&dir.path().join("x.lock"), "1 h t\n", &[]).expect("lock").expect("new");
        // SAFETY: F_GETFL on a descriptor the lock owns.
        let flags = unsafe { libc::fcntl(lock._file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
        assert_eq!(std::fs::read_to_string(lock.path()).expect("record"), "1 h t\n");
    }

    #[test]
    fn the_lock_file_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = acquire(&dir.path().join("x.lock"), "1 h t\n", &[]).expect("lock").expect("new");
        let mode = std::fs::metadata(lock.path()).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode & !PRIVATE_FILE, 0, "{mode:o}");
    }
}
