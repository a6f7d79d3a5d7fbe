//! The batch source: each namespace's latest Merkle root.
//!
//! The latest batch is the lexically last `*.json` in `VMSH_ROOT/out/batches/<namespace>/`
//! when that folder exists, else in `VMSH_ROOT/out/batches/` (shared by all namespaces).
//! Batch writers name files so that lexical order is time order (e.g. zero-padded sequence
//! numbers or UTC timestamps).
//!
//! Whoever can write to a batch folder can put anything there, and one thread reads batches
//! for every namespace ([`BatchReader`]), so nothing found there may block or surprise it:
//!
//! - The newest entry is opened as `O_PATH` first, which follows links but opens nothing (no
//!   device is opened, no named pipe waits for a writer). Only if that inode is a regular file
//!   is it opened for reading, through `/proc/self/fd`, so the file read is the file checked
//!   even if the name is swapped in between; the open is non-blocking and its `fstat` is
//!   checked once more. Anything else (a pipe, a socket, a device, a link to nothing) fails its
//!   namespace with an error naming it. Folders are skipped: the shared folder holds the
//!   namespaces' own folders, and a namespace may be named `x.json`.
//! - Every step that can block (a stat, an open, a listing, a read of 1 MiB) is announced to a
//!   [`Watch`] first, which gives up on a read that has used up its time and refuses paths an
//!   earlier read is still stuck in; the reader uses it to notice a read that never returns.
//! - A file that changes while it is read (a writer writing in place) is read again, a few
//!   times at most; a newest entry that vanishes between the listing and the open makes the
//!   folder be listed again.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::digest::{parse_hex32, to_hex};
use crate::model::fsname;

mod reader;

pub use reader::{BatchReader, MAX_STUCK_READS, ReaderMonitor, ReaderReport, StuckRead};

/// Largest batch file read. Batches may list their leaves, but the scheduler only needs
/// `id` and `root`; anything larger than this is refused rather than parsed.
pub const MAX_BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// How much of a batch file one read step takes, so a slow file system is noticed between
/// steps rather than after 32 MiB.
const READ_STEP_BYTES: u64 = 1024 * 1024;

/// Folder entries listed between two [`Watch::step`]s.
const LIST_STEP_ENTRIES: usize = 1024;

/// Newest candidates kept from one listing; the next is tried when the newest is a link to a
/// folder or vanished before it was opened.
const CANDIDATES: usize = 16;

/// Listings of one folder for one read, when its newest entries keep vanishing.
const MAX_LISTINGS: usize = 3;

/// Opens of one file for one read, when it keeps changing while it is read.
const MAX_OPENS: usize = 3;

/// A batch to anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The batch's id as written by its producer.
    pub id: String,
    /// The Merkle root.
    pub root: [u8; 32],
    /// The file it came from.
    pub file: PathBuf,
}

impl Batch {
    /// The root as written in batches: `sha256:<hex>`.
    pub fn root_string(&self) -> String {
        format!("sha256:{}", to_hex(&self.root))
    }
}

/// Why the latest batch could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The folder or file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is too large to be a batch.
    #[error("{path} is larger than {} MiB; not a batch file", MAX_BATCH_BYTES / (1024 * 1024))]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a batch.
    #[error("{path} is not a valid batch: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The newest entry is not a regular file once links are followed.
    #[error("{path} is a {kind}, not a regular file; a batch must be a regular file (or a link to one)")]
    NotRegular {
        /// The entry.
        path: PathBuf,
        /// What it is: `named pipe`, `socket`, `character device` …
        kind: &'static str,
    },
    /// The newest entry, or a namespace's folder, is a link whose target does not exist.
    #[error("{path} is a link to something that does not exist; remove it or point it at a batch")]
    Dangling {
        /// The link.
        path: PathBuf,
    },
    /// The file kept changing while it was read.
    #[error(
        "{path} changed while it was read ({MAX_OPENS} times); write batches to a temporary name \
         and rename them into place"
    )]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The folder's newest entries kept vanishing before they could be opened.
    #[error("the newest entries of {path} vanished as they were opened, {MAX_LISTINGS} listings in a row")]
    Unsettled {
        /// The folder.
        path: PathBuf,
    },
    /// The read used up its time (a very large folder, a slow file system) and was given up.
    #[error(
        "reading {path} took longer than {}s and was given up (a folder with very many entries, or a \
         slow file system?)",
        limit.as_secs_f64()
    )]
    Slow {
        /// What was being read when the time ran out.
        path: PathBuf,
        /// The time a read may take (`VMSH_BATCH_READ_TIMEOUT_S`).
        limit: Duration,
    },
    /// A read did not return in time: the reader left it behind and went on without it.
    #[error(
        "reading {path} did not return within {}s (a hung file system?); the batch reader goes on \
         without it and does not read {path} again until that read returns",
        limit.as_secs_f64()
    )]
    Stuck {
        /// What the read was blocked on.
        path: PathBuf,
        /// The time a read may take.
        limit: Duration,
    },
    /// The path lies where an earlier read is still blocked; reading it would block too.
    #[error("{path} is not read: an earlier read of {stuck} has not returned (a hung file system?)")]
    StillStuck {
        /// What would have been read.
        path: PathBuf,
        /// The path the earlier read is blocked on.
        stuck: PathBuf,
    },
    /// Too many reads are stuck: no batch can be read until one returns.
    #[error(
        "no batch can be read: {count} batch reads have not returned ({paths}); the scheduler cannot \
         make progress until one does (check the file system of VMSH_ROOT)"
    )]
    Exhausted {
        /// Reads stuck.
        count: usize,
        /// The paths they are blocked on, shortened.
        paths: String,
    },
    /// The reader could not start a thread.
    #[error("the batch reader cannot start a thread: {0}")]
    NoThread(String),
    /// The reader went away before answering (shutdown).
    #[error("the batch reader stopped before answering")]
    Stopped,
}

/// Told of every step of a read that can block, before it is taken.
pub trait Watch {
    /// About to stat, open, list or read `path`: an error ends the read with it (the read ran out
    /// of time, or an earlier read is stuck in `path`).
    fn step(&mut self, path: &Path) -> Result<(), BatchError>;
}

/// A read without limits, for callers that may block (tools, tests).
pub struct Unwatched;

impl Watch for Unwatched {
    fn step(&mut self, _: &Path) -> Result<(), BatchError> {
        Ok(())
    }
}

#[derive(Deserialize)]
struct BatchFile {
    id: Id,
    root: String,
}

/// A batch id as written: a string, or a number taken as its text. Anything else is refused
/// as it is read, without being built: an id of a 32 MiB array held as a JSON value would take
/// half a gigabyte.
struct Id(String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IdVisitor)
    }
}

struct IdVisitor;

impl<'de> serde::de::Visitor<'de> for IdVisitor {
    type Value = Id;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E>(self, v: &str) -> Result<Id, E> {
        Ok(Id(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Id, E> {
        Ok(Id(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Id, E> {
        Ok(Id(v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Id, E> {
        Ok(Id(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Id, E> {
        // Written as JSON writes it (`1e+300`, not 301 digits), as ids always were.
        Ok(Id(serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Id, E> {
        Err(E::custom("`id` must be a string, not a boolean"))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Id, E> {
        Err(E::custom("`id` must be a string, not null"))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Id, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Err(serde::de::Error::custom("`id` must be a string, not an array"))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Id, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Err(serde::de::Error::custom("`id` must be a string, not an object"))
    }
}

/// Reads past any value, keeping nothing. Unlike `IgnoredAny` it descends through the parser's
/// own recursion, so its depth limit holds inside a refused id as it does elsewhere.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> serde::de::Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// The folder batches of `namespace` are read from: its own folder when that is a folder (or a
/// link to one), else the shared one. A name that exists but cannot be looked at (a link to
/// nothing, a loop, no permission) is an error, never a silent switch to the shared batches.
pub fn batch_dir(root: &Path, namespace: &str, watch: &mut dyn Watch) -> Result<PathBuf, BatchError> {
    let shared = root.join("out").join("batches");
    let own = shared.join(fsname::encode(namespace));
    watch.step(&own)?;
    match fs::metadata(&own) {
        Ok(meta) if meta.is_dir() => Ok(own),
        // A file named like the namespace (a batch in the shared folder) is not its folder.
        Ok(_) => Ok(shared),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(shared),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match fs::symlink_metadata(&own) {
            Ok(_) => Err(BatchError::Dangling { path: own }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(shared),
            Err(e) => Err(BatchError::Io { path: own, source: e }),
        },
        Err(e) => Err(BatchError::Io { path: own, source: e }),
    }
}

/// Reads the latest batch of `namespace`; `Ok(None)` when there is none yet.
pub fn latest(root: &Path, namespace: &str) -> Result<Option<Batch>, BatchError> {
    latest_in(&batch_dir(root, namespace, &mut Unwatched)?, &mut Unwatched)
}

/// Reads the latest batch in `dir`; `Ok(None)` when there is none yet.
pub fn latest_in(dir: &Path, watch: &mut dyn Watch) -> Result<Option<Batch>, BatchError> {
    // Links to folders found so far: skipped by the next listing.
    let mut folders: HashSet<OsString> = HashSet::new();
    for _ in 0..MAX_LISTINGS {
        let (candidates, more) = newest_entries(dir, &folders, watch)?;
        let mut vanished = false;
        for name in candidates {
            match read_entry(&dir.join(&name), watch)? {
                Entry::Batch(batch) => return Ok(Some(batch)),
                Entry::Folder => {
                    folders.insert(name);
                }
                Entry::Vanished => {
                    vanished = true;
                    break;
                }
            }
        }
        if !vanished && !more {
            return Ok(None);
        }
    }
    Err(BatchError::Unsettled { path: dir.to_path_buf() })
}

/// The newest batch names in `dir` not in `skip`, newest first, and whether there were more.
fn newest_entries(
    dir: &Path,
    skip: &HashSet<OsString>,
    watch: &mut dyn Watch,
) -> Result<(Vec<OsString>, bool), BatchError> {
    let io = |e| BatchError::Io { path: dir.to_path_buf(), source: e };
    watch.step(dir)?;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(io(e)),
    };
    // Newest first, at most CANDIDATES: a folder of a million batches costs a few names.
    let mut newest: Vec<OsString> = Vec::with_capacity(CANDIDATES + 1);
    let mut more = false;
    for (i, entry) in entries.enumerate() {
        if i % LIST_STEP_ENTRIES == LIST_STEP_ENTRIES - 1 {
            watch.step(dir)?;
        }
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let bytes = name.as_bytes();
        // Hidden files are writers' temporaries, not batches. Names are compared as bytes, so
        // a name that is not UTF-8 is a batch like any other.
        if bytes.starts_with(b".") || !bytes.ends_with(b".json") || skip.contains(&name) {
            continue;
        }
        // The entry itself, links not followed: a real folder is a namespace's own folder. What
        // a link points to is only known once it is opened.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let at = newest.partition_point(|n| *n > name);
        if at < CANDIDATES {
            newest.insert(at, name);
            if newest.len() > CANDIDATES {
                newest.pop();
                more = true;
            }
        } else {
            more = true;
        }
    }
    Ok((newest, more))
}

/// What the newest entry turned out to be.
enum Entry {
    Batch(Batch),
    /// A link to a folder: not a batch.
    Folder,
    /// Gone since the listing.
    Vanished,
}

/// Reads one entry of a batch folder, which may be anything.
fn read_entry(path: &Path, watch: &mut dyn Watch) -> Result<Entry, BatchError> {
    let io = |e| BatchError::Io { path: path.to_path_buf(), source: e };
    for _ in 0..MAX_OPENS {
        let file = match open_regular(path, watch)? {
            Opened::File(file) => file,
            Opened::Folder => return Ok(Entry::Folder),
            Opened::Missing => {
                // A name still there whose target is not is a link to nothing; a name gone
                // was removed or renamed since the listing.
                return match fs::symlink_metadata(path) {
                    Ok(_) => Err(BatchError::Dangling { path: path.to_path_buf() }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Entry::Vanished),
                    Err(e) => Err(io(e)),
                };
            }
            Opened::Swapped => continue,
        };
        let before = file.metadata().map_err(io)?;
        let bytes = read_capped(&file, before.len(), path, watch)?;
        let after = file.metadata().map_err(io)?;
        if (after.len(), after.mtime(), after.mtime_nsec()) != (before.len(), before.mtime(), before.mtime_nsec()) {
            continue;
        }
        return parse(&bytes)
            .map_err(|reason| BatchError::Malformed { path: path.into(), reason })
            .map(|(id, root)| Entry::Batch(Batch { id, root, file: path.into() }));
    }
    Err(BatchError::Changed { path: path.to_path_buf() })
}

/// The outcome of opening an entry.
enum Opened {
    /// A regular file, open for reading (blocking reads).
    File(fs::File),
    /// A folder, once links are followed.
    Folder,
    /// The name, or what it links to, does not exist.
    Missing,
    /// The name was pointed at another file between the check and the open.
    Swapped,
}

/// Opens `path` for reading only if it is a regular file once links are followed (see
/// [`crate::fsread::open_regular`]).
fn open_regular(path: &Path, watch: &mut dyn Watch) -> Result<Opened, BatchError> {
    use crate::fsread::{Kind, ReadError};
    watch.step(path)?;
    match crate::fsread::open_regular(path) {
        Ok(file) => Ok(Opened::File(file)),
        Err(ReadError::NotRegular(Kind::Folder)) => Ok(Opened::Folder),
        Err(ReadError::NotRegular(kind)) => Err(BatchError::NotRegular { path: path.to_path_buf(), kind: kind.name() }),
        Err(ReadError::Swapped) => Ok(Opened::Swapped),
        Err(e) if e.is_not_found() => Ok(Opened::Missing),
        Err(ReadError::Io(e)) => Err(BatchError::Io { path: path.to_path_buf(), source: e }),
        Err(e @ ReadError::TooLarge { .. }) => {
            Err(BatchError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })
        }
    }
}

/// Reads at most [`MAX_BATCH_BYTES`] of `file`, one step at a time.
fn read_capped(file: &fs::File, len: u64, path: &Path, watch: &mut dyn Watch) -> Result<Vec<u8>, BatchError> {
    // Refuse by size before reading, so many namespaces sharing one huge batch allocate nothing
    // big; the capped read below still guards a file that grows after this check.
    if len > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge { path: path.into() });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut rest = file.take(MAX_BATCH_BYTES + 1);
    loop {
        watch.step(path)?;
        let got = (&mut rest)
            .take(READ_STEP_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| BatchError::Io { path: path.into(), source: e })?;
        if got == 0 {
            break;
        }
    }
    if bytes.len() as u64 > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge { path: path.into() });
    }
    Ok(bytes)
}

/// Reads and checks one batch file, links followed; it must be a regular file.
pub fn read(path: &Path) -> Result<Batch, BatchError> {
    match read_entry(path, &mut Unwatched)? {
        Entry::Batch(batch) => Ok(batch),
        Entry::Folder => Err(BatchError::NotRegular { path: path.into(), kind: "folder" }),
        Entry::Vanished => {
            Err(BatchError::Io { path: path.into(), source: std::io::Error::from(std::io::ErrorKind::NotFound) })
        }
    }
}

/// Parses batch JSON into its id and root.
pub fn parse(bytes: &[u8]) -> Result<(String, [u8; 32]), String> {
    let raw: BatchFile = serde_json::from_slice(bytes).map_err(|e| json_reason(&e))?;
    let Id(id) = raw.id;
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err("`id` must be 1 to 256 printable characters".into());
    }
    let hex = raw
        .root
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("`root` must be \"sha256:<64 hex digits>\", got {:?}", truncate(&raw.root)))?;
    let root = parse_hex32(hex)
        .ok_or_else(|| format!("`root` must be \"sha256:<64 hex digits>\", got {:?}", truncate(&raw.root)))?;
    Ok((id, root))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Why bytes are not batch JSON, without what they hold: serde quotes the value of the wrong
/// type (a whole string, however long), and a batch may be a link to any file the service can
/// read, while the reason goes to the logs, the state and `/health`.
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = match (text.strip_prefix("invalid type: "), text.rfind(", expected")) {
        (Some(rest), Some(at)) => {
            let kind = rest.split(['`', '"']).next().unwrap_or("value").trim();
            format!("invalid type: {kind}{}", &text[at..])
        }
        _ => text,
    };
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests;
