//! `vmsh-scheduler migrate-state --to etcd|file`: moves the scheduler's state between the
//! state file (with its log) and etcd, to switch to cluster mode and back.
//!
//! It never runs beside the service, on either side: it takes the state file's lock as the
//! service does, so a scheduler running on the file makes it exit 5 naming the holder; a
//! replica registered under the etcd prefix does too. It never writes over state unless told:
//! a prefix that holds state keys, or a state file (or its log), is replaced only with
//! `--force`, which deletes the prefix's state keys, or moves the file and its logs aside.
//! After writing it reads the destination back as a start would, and compares it with what it
//! read, namespace by namespace.
//!
//! Into etcd, each namespace becomes its snapshot key, as a replica's fold writes it
//! ([`crate::storage::state::etcd`]), in transactions within etcd's default limits; each put
//! holds only while its key does not exist, so two migrations into one prefix cannot mix.
//! Nothing can hold a replica back from joining while the state is written: the members are
//! read again with the read-back, and a replica that joined meanwhile fails the migration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::WallMs;
use crate::cluster::claim::Keys;
use crate::cluster::etcd::{Compare, Etcd, EtcdError, KeyValue, Op, TxnOutcome, prefix_end};
use crate::config::settings::{self, ClusterSettings, Overrides, Paths, SettingsError};
use crate::config::vars::display_url;
use crate::storage::durable::{PRIVATE_FILE, ensure_dir, sync_dir, write_atomic};
use crate::storage::lockfile::{self, LockError, OwnerLock};
use crate::storage::state::etcd::{assemble, snapshot_txns};
use crate::storage::state::{self, Origin, StateError, StateFile, wal};

/// Time limit of one request to one etcd member: a migration's transactions are larger than
/// a replica's, and no lease waits on them.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Most names (namespaces, members) an error lists.
const NAMES_SHOWN: usize = 5;

/// Where the state goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Destination {
    /// From the state file into etcd (`VMSH_ETCD_*`), for cluster mode.
    Etcd,
    /// From etcd into the state file (`VMSH_STATE`), for the single process.
    File,
}

/// Why the state was not moved. Each reads as one sentence: what, where, what to do.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A setting cannot be understood.
    #[error("invalid setting {0}")]
    Settings(#[from] SettingsError),
    /// No etcd to move the state to or from.
    #[error(
        "VMSH_ETCD_ENDPOINTS is not set: set it (and VMSH_ETCD_PREFIX, and the TLS and user settings) as the replicas have them"
    )]
    NoEtcd,
    /// The etcd client cannot be made: a credential file, an endpoint.
    #[error("{0}")]
    Client(String),
    /// A scheduler holds the state file.
    #[error(
        "state file {path} is in use by another vmsh-scheduler: {source}; stop that process first: the state moves only while no scheduler runs on it"
    )]
    InUse {
        /// The state file.
        path: PathBuf,
        /// The lock and its holder.
        source: LockError,
    },
    /// The state file's lock (or its folder) cannot be created or locked.
    #[error("cannot lock state file {path}: {source}")]
    Lock {
        /// The state file.
        path: PathBuf,
        /// The lock file and the OS error.
        source: LockError,
    },
    /// Replicas are registered under the prefix: the cluster runs.
    #[error(
        "{at}: {} replica(s) registered ({}): stop every replica and let its lease expire (VMSH_ETCD_LEASE_TTL_S), then run migrate-state again",
        nodes.len(), listed(nodes)
    )]
    Running {
        /// The etcd cluster and prefix.
        at: String,
        /// The members' node ids.
        nodes: Vec<String>,
    },
    /// A replica registered while the state was being written into etcd.
    #[error(
        "{at}: {} replica(s) registered while the state was being written ({}), and may have loaded it incomplete: stop every replica, then run migrate-state --to etcd --force again",
        nodes.len(), listed(nodes)
    )]
    JoinedDuring {
        /// The etcd cluster and prefix.
        at: String,
        /// The members' node ids.
        nodes: Vec<String>,
    },
    /// etcd could not be reached, or refused a request.
    #[error("{at}: cannot {what}: {source}")]
    Etcd {
        /// The etcd cluster and prefix.
        at: String,
        /// What was being done.
        what: &'static str,
        /// Why not.
        source: EtcdError,
    },
    /// What etcd holds under the prefix is not state.
    #[error("{at}: the state there cannot be read: {reason}")]
    Unreadable {
        /// The etcd cluster and prefix.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// The state file cannot be used.
    #[error("{0}")]
    State(#[from] StateError),
    /// The source holds no state.
    #[error("{from} holds no state to move: is {setting} the one the scheduler ran with?")]
    Nothing {
        /// The source.
        from: String,
        /// The setting that names it.
        setting: &'static str,
    },
    /// The destination holds state and `--force` was not given.
    #[error("{at} already holds state ({what}): pass --force to replace it ({how})")]
    Occupied {
        /// The destination.
        at: String,
        /// What is there.
        what: String,
        /// What `--force` does with it.
        how: &'static str,
    },
    /// State keys appeared in etcd while the migration wrote its own.
    #[error(
        "{at}: a state key was written by someone else during the migration (another migrate-state, or a replica): stop it, then run migrate-state --to etcd --force again"
    )]
    Raced {
        /// The etcd cluster and prefix.
        at: String,
    },
    /// One namespace's state is too large for one etcd request.
    #[error("{at}: cannot write the state: {reason}; keep this state in the state file")]
    TooLarge {
        /// The etcd cluster and prefix.
        at: String,
        /// Which namespace, and how large.
        reason: String,
    },
    /// A file could not be written, moved or synced.
    #[error("cannot {what} {path}: {source}; fix that, then run migrate-state --to file --force")]
    Write {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The destination, read back, is not what was written.
    #[error("{at} does not read back as written: {why}; start nothing on it, and run migrate-state again with --force")]
    Mismatch {
        /// The destination.
        at: String,
        /// What differs.
        why: String,
    },
}

impl MigrateError {
    /// The exit code: 2 bad settings, 5 a scheduler runs on the state, 3 anything else
    /// about the state or etcd (as the service's codes, README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            MigrateError::Settings(_) | MigrateError::NoEtcd => 2,
            MigrateError::InUse { .. } | MigrateError::Running { .. } | MigrateError::JoinedDuring { .. } => 5,
            _ => 3,
        }
    }
}

/// At most [`NAMES_SHOWN`] names, quoted (a name from etcd or a file may hold anything).
fn listed(names: &[String]) -> String {
    let mut shown: Vec<String> = names.iter().take(NAMES_SHOWN).map(|n| format!("{n:?}")).collect();
    if names.len() > NAMES_SHOWN {
        shown.push(format!("and {} more", names.len() - NAMES_SHOWN));
    }
    shown.join(", ")
}

/// `vmsh-scheduler migrate-state`: moves the state to `to`, printing one line per step and
/// a summary; returns the exit code (0 moved, 2 bad settings, 3 a state or etcd problem, 5 a
/// scheduler runs on either side).
pub fn run(env: &HashMap<String, String>, overrides: &Overrides, to: Destination, force: bool, now: WallMs) -> i32 {
    match migrate(env, overrides, to, force, now) {
        Ok(summary) => {
            crate::stdio::out(&format!("{summary}\n"));
            0
        }
        Err(e) => {
            crate::stdio::err(&format!("vmsh-scheduler migrate-state: {e}"));
            e.exit_code()
        }
    }
}

fn step(line: &str) {
    crate::stdio::out(&format!("{}\n", crate::cli::status::clean(line)));
}

fn migrate(
    env: &HashMap<String, String>,
    overrides: &Overrides,
    to: Destination,
    force: bool,
    now: WallMs,
) -> Result<String, MigrateError> {
    let paths = Paths::from_env(env, overrides);
    let cluster = settings::cluster(env, overrides)?.ok_or(MigrateError::NoEtcd)?;
    let remote = Remote::new(&cluster)?;
    let file = format!("state file {}", paths.state.display());
    Ok(match to {
        Destination::Etcd => {
            let n = to_etcd(&paths.state, &remote, force, now)?;
            format!("done: {n} namespace(s) moved from {file} to {}", remote.at)
        }
        Destination::File => {
            let n = to_file(&paths.state, &remote, force, now)?;
            format!("done: {n} namespace(s) moved from {} to {file}", remote.at)
        }
    })
}

/// Takes the state file's lock, as the service does before it reads the state.
fn lock(path: &Path, now: WallMs) -> Result<OwnerLock, MigrateError> {
    let record = lockfile::record(std::process::id(), &lockfile::host_name(), &crate::clock::rfc3339(now));
    match lockfile::acquire(&lockfile::state_lock_path(path), &record, &[]) {
        Ok(Some(lock)) => Ok(lock),
        // Nothing else is held, so a second name of a held lock cannot be.
        Ok(None) => Err(MigrateError::Lock {
            path: path.to_path_buf(),
            source: LockError::Io { path: lockfile::state_lock_path(path), reason: "already held".into() },
        }),
        Err(source @ LockError::Held { .. }) => Err(MigrateError::InUse { path: path.to_path_buf(), source }),
        Err(source) => Err(MigrateError::Lock { path: path.to_path_buf(), source }),
    }
}

/// The state file and its logs, in the order a start reads them.
fn state_files(path: &Path) -> [PathBuf; 3] {
    [path.to_path_buf(), wal::rotated_path(path), wal::path(path)]
}

/// Whether something (even a dangling link) is at `path`.
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn to_etcd(path: &Path, remote: &Remote, force: bool, now: WallMs) -> Result<usize, MigrateError> {
    let file = format!("state file {}", path.display());
    // Without its folder there is no state, and no lock to take there either.
    if !parent(path).is_dir() {
        return Err(MigrateError::Nothing { from: file, setting: "VMSH_STATE" });
    }
    let _lock = lock(path, now)?;
    step(&format!("{file}: locked"));
    let (source, origin) = state::load(path)?;
    if origin == Origin::Fresh {
        return Err(MigrateError::Nothing { from: file, setting: "VMSH_STATE" });
    }
    step(&format!("{file}: read with its log: {} namespace(s)", source.namespaces.len()));
    let found = remote.read()?;
    found.refuse_members(&remote.at)?;
    let mut through = found.revision;
    if found.holds_state() {
        if !force {
            return Err(MigrateError::Occupied {
                at: remote.at.clone(),
                what: found.describe(),
                how: "it deletes every state and log key under the prefix first",
            });
        }
        through = remote.clear()?;
        step(&format!("{}: no replica registered; --force: deleted {}", remote.at, found.describe()));
    } else {
        step(&format!("{}: no replica registered, no state under the prefix", remote.at));
    }
    // Every later commit of a replica lands above `through`, and so applies over the
    // snapshots; nothing at or below it is left.
    let txns = snapshot_txns(&remote.keys, &source, through)
        .map_err(|reason| MigrateError::TooLarge { at: remote.at.clone(), reason })?;
    let mut bytes = 0;
    for puts in &txns {
        let absent: Vec<Compare> = puts
            .iter()
            .filter_map(|op| match op {
                Op::Put { key, value, .. } => {
                    bytes += value.len();
                    Some(Compare::CreateRevision(key.clone(), 0))
                }
                _ => None,
            })
            .collect();
        if !remote.txn("write the state", &absent, puts)?.succeeded {
            return Err(MigrateError::Raced { at: remote.at.clone() });
        }
    }
    step(&format!(
        "{}: wrote {} namespace snapshot(s) in {} transaction(s), {bytes} bytes",
        remote.at,
        source.namespaces.len(),
        txns.len()
    ));
    let back = remote.read()?;
    if !back.members.is_empty() {
        return Err(MigrateError::JoinedDuring { at: remote.at.clone(), nodes: back.members });
    }
    let loaded = back.assemble(remote)?;
    same(&source, &loaded).map_err(|why| MigrateError::Mismatch { at: remote.at.clone(), why })?;
    step(&format!(
        "{}: read back as a replica loads it: {} namespace(s), each as in the {file}",
        remote.at,
        loaded.namespaces.len()
    ));
    Ok(source.namespaces.len())
}

fn to_file(path: &Path, remote: &Remote, force: bool, now: WallMs) -> Result<usize, MigrateError> {
    let file = format!("state file {}", path.display());
    let dir = parent(path);
    ensure_dir(&dir).map_err(|source| MigrateError::Write { what: "create the folder", path: dir.clone(), source })?;
    let _lock = lock(path, now)?;
    step(&format!("{file}: locked"));
    let existing: Vec<PathBuf> = state_files(path).into_iter().filter(|p| present(p)).collect();
    if !existing.is_empty() && !force {
        let names: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
        return Err(MigrateError::Occupied {
            at: file,
            what: names.join(", "),
            how: "it moves the file and its logs aside, to <name>.replaced-<time>",
        });
    }
    let found = remote.read()?;
    found.refuse_members(&remote.at)?;
    if !found.holds_state() {
        return Err(MigrateError::Nothing { from: remote.at.clone(), setting: "VMSH_ETCD_PREFIX" });
    }
    let source = found.assemble(remote)?;
    step(&format!(
        "{}: no replica registered; read {} as a replica loads it: {} namespace(s)",
        remote.at,
        found.describe(),
        source.namespaces.len()
    ));
    if !existing.is_empty() {
        let moved = set_aside(path, &existing, now)?;
        step(&format!("{file}: --force: moved aside to {}", moved.join(", ")));
    }
    let bytes = state::encode(&source);
    write_atomic(path, &bytes, PRIVATE_FILE).map_err(|source| MigrateError::Write {
        what: "write the state file",
        path: path.to_path_buf(),
        source,
    })?;
    step(&format!("{file}: wrote {} namespace(s), {} bytes", source.namespaces.len(), bytes.len()));
    let (loaded, _) = state::load(path)?;
    same(&source, &loaded).map_err(|why| MigrateError::Mismatch { at: file.clone(), why })?;
    step(&format!("{file}: read back as a start loads it: {} namespace(s), each as in etcd", loaded.namespaces.len()));
    Ok(source.namespaces.len())
}

/// Keeps the old state file and its logs beside it as `<name>.replaced-<time>`. The state
/// file gets a second name and is then replaced atomically, so its path never lacks one;
/// the logs are renamed away first: the new file must not have the old log replayed over it.
/// A crash in between leaves the old file without its logs (both kept aside): run again.
fn set_aside(path: &Path, existing: &[PathBuf], now: WallMs) -> Result<Vec<String>, MigrateError> {
    let mut moved = Vec::new();
    for from in existing {
        let mut name = from.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(format!(".replaced-{}", crate::clock::compact_utc(now)));
        let to = from.with_file_name(name);
        // A name already taken (by a run in the same millisecond) is never replaced.
        let result = if present(&to) {
            Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{} exists", to.display())))
        } else if from == path {
            std::fs::hard_link(from, &to)
        } else {
            std::fs::rename(from, &to)
        };
        result.map_err(|source| MigrateError::Write { what: "move aside", path: from.clone(), source })?;
        moved.push(to.display().to_string());
    }
    let dir = parent(path);
    sync_dir(&dir).map_err(|source| MigrateError::Write { what: "sync the folder", path: dir.clone(), source })?;
    Ok(moved)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Why `found` is not `expected`: the count of namespaces, then the first that differ.
fn same(expected: &StateFile, found: &StateFile) -> Result<(), String> {
    let mut differ: Vec<String> = expected
        .namespaces
        .iter()
        .filter(|(ns, st)| found.namespaces.get(*ns) != Some(st))
        .map(|(ns, _)| ns.clone())
        .collect();
    differ.extend(found.namespaces.keys().filter(|ns| !expected.namespaces.contains_key(*ns)).cloned());
    if differ.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} namespace(s) where {} were written, {} not as written ({})",
        found.namespaces.len(),
        expected.namespaces.len(),
        differ.len(),
        listed(&differ)
    ))
}

/// The etcd side: a client on a runtime of its own, and the prefix's keys.
struct Remote {
    etcd: Etcd,
    keys: Keys,
    rt: tokio::runtime::Runtime,
    /// `etcd <endpoints> <prefix>`, as log lines and errors name it (no credentials).
    at: String,
}

/// What the prefix holds, read at one revision.
struct Found {
    members: Vec<String>,
    states: Vec<KeyValue>,
    logs: Vec<KeyValue>,
    revision: i64,
}

impl Found {
    fn holds_state(&self) -> bool {
        !self.states.is_empty() || !self.logs.is_empty()
    }

    fn describe(&self) -> String {
        format!("{} namespace snapshot(s) and {} log key(s)", self.states.len(), self.logs.len())
    }

    fn refuse_members(&self, at: &str) -> Result<(), MigrateError> {
        if self.members.is_empty() {
            return Ok(());
        }
        Err(MigrateError::Running { at: at.to_string(), nodes: self.members.clone() })
    }

    /// The state as a replica loads it: each snapshot with the later log entries applied.
    fn assemble(&self, remote: &Remote) -> Result<StateFile, MigrateError> {
        assemble(&remote.keys, &self.states, &self.logs)
            .map_err(|reason| MigrateError::Unreadable { at: remote.at.clone(), reason })
    }
}

impl Remote {
    fn new(settings: &ClusterSettings) -> Result<Self, MigrateError> {
        let shown: Vec<String> = settings.endpoints.iter().map(|e| display_url(e)).collect();
        let at = format!("etcd {} {}", shown.join(","), settings.prefix);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MigrateError::Client(format!("cannot start the etcd client's runtime: {e}")))?;
        Ok(Self { etcd: client(settings)?, keys: Keys::new(&settings.prefix), rt, at })
    }

    fn txn(&self, what: &'static str, compare: &[Compare], ops: &[Op]) -> Result<TxnOutcome, MigrateError> {
        self.rt.block_on(self.etcd.txn(compare, ops, &[])).map_err(|source| MigrateError::Etcd {
            at: self.at.clone(),
            what,
            source,
        })
    }

    /// The members, the snapshots and the log entries under the prefix, in one transaction.
    fn read(&self) -> Result<Found, MigrateError> {
        let (members_dir, states, logs) = (self.keys.members(), self.keys.states(), self.keys.logs());
        let reads = [Op::GetPrefix(members_dir.clone()), Op::GetPrefix(states), Op::GetPrefix(logs)];
        let out = self.txn("read the prefix", &[], &reads)?;
        let Ok([members, states, logs]) = <[Vec<KeyValue>; 3]>::try_from(out.gets) else {
            return Err(MigrateError::Unreadable {
                at: self.at.clone(),
                reason: "etcd answered not three ranges".into(),
            });
        };
        let members = members
            .iter()
            .map(|kv| {
                String::from_utf8_lossy(kv.key.strip_prefix(members_dir.as_slice()).unwrap_or(&kv.key)).into_owned()
            })
            .collect();
        Ok(Found { members, states, logs, revision: out.revision })
    }

    /// Deletes every snapshot and log key under the prefix; returns the revision after.
    fn clear(&self) -> Result<i64, MigrateError> {
        let (states, logs) = (self.keys.states(), self.keys.logs());
        let ranges =
            [Op::DeleteRange(states.clone(), prefix_end(&states)), Op::DeleteRange(logs.clone(), prefix_end(&logs))];
        Ok(self.txn("delete the state under the prefix", &[], &ranges)?.revision)
    }
}

/// The etcd client for `settings`: its TLS and password files read as the service reads them.
fn client(settings: &ClusterSettings) -> Result<Etcd, MigrateError> {
    crate::cluster::connect::client(settings, REQUEST_TIMEOUT).map_err(MigrateError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CadenceKind;
    use crate::storage::state::{CadenceState, NamespaceState, STATE_VERSION};

    fn state(namespaces: &[(&str, u32)]) -> StateFile {
        let mut out = StateFile { version: STATE_VERSION, ..StateFile::default() };
        for (ns, backoff) in namespaces {
            let mut st = NamespaceState::default();
            st.cadences.insert(
                CadenceKind::Fast,
                std::sync::Arc::new(CadenceState { backoff: *backoff, ..CadenceState::default() }),
            );
            out.namespaces.insert((*ns).to_string(), st);
        }
        out
    }

    #[test]
    fn a_read_back_that_differs_names_the_namespaces_that_differ_or_are_missing_or_extra() {
        let written = state(&[("a", 1), ("b", 2), ("c", 3)]);
        assert_eq!(same(&written, &written.clone()), Ok(()));
        let read = state(&[("a", 1), ("b", 9), ("d", 4)]);
        let why = same(&written, &read).expect_err("differs");
        assert_eq!(why, "3 namespace(s) where 3 were written, 3 not as written (\"b\", \"c\", \"d\")");
        let many: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
        assert_eq!(listed(&many), "\"n0\", \"n1\", \"n2\", \"n3\", \"n4\", and 3 more");
    }

    #[test]
    fn setting_aside_keeps_the_state_file_at_its_path_moves_its_logs_and_never_replaces_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        for (p, text) in [(&path, "old"), (&wal::path(&path), "log")] {
            std::fs::write(p, text).expect("write");
        }
        let existing: Vec<PathBuf> = state_files(&path).into_iter().filter(|p| present(p)).collect();
        let moved = set_aside(&path, &existing, 1_800_000_000_000).expect("moved aside");
        assert_eq!(moved.len(), 2);
        assert_eq!(std::fs::read_to_string(&path).expect("still there"), "old", "replaced only by the new file");
        assert!(!wal::path(&path).exists(), "the log is no longer where a start replays it");
        let kept: Vec<String> = moved.iter().map(|p| std::fs::read_to_string(p).expect("kept")).collect();
        assert_eq!(kept, ["old", "log"]);
        std::fs::write(wal::path(&path), "newer log").expect("write");
        let e = set_aside(&path, &[wal::path(&path)], 1_800_000_000_000).expect_err("the name is taken");
        assert!(e.to_string().contains("exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&moved[1]).expect("kept"), "log", "what was kept stays");
    }
}
