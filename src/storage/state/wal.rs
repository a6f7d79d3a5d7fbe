//! The state's append-only log. Each change of one cadence's state is one JSON line
//! (`{"ns":…,"cadence":…,"state":{…}}`) appended to `<state file>.wal`; the state file itself
//! is a snapshot, rewritten in the background once the log has grown, so recording an attempt
//! costs an append and a share of one fsync instead of a rewrite of every namespace's state.
//!
//! A record replaces the whole state of its cadence, so replaying records in the order they
//! were written is idempotent over any snapshot taken at or after the first of them: a snapshot
//! followed by the log it was taken from never goes back in time. Compaction therefore needs
//! no sequence numbers: the log is renamed to `<state file>.wal.1`, the snapshot is written,
//! and only then is `.wal.1` removed; start-up replays `.wal.1`, then `.wal`.
//!
//! A commit of several changes is one line too (`{"changes":[…]}`), so a commit is replayed
//! whole or not at all: the members of an aggregate record their membership in one commit,
//! and a crash must not keep some of them and lose the rest.
//!
//! A crash mid-append leaves at most a torn last line, never acknowledged (acknowledgements
//! wait for the fsync); it is ignored on replay and cut off before the next append. Any other
//! unreadable line means the file was damaged, and start-up refuses it like a corrupt state file.

use std::path::{Path, PathBuf};

use super::StateFile;
use super::backend::Change;

/// The live log beside `state_path`.
pub fn path(state_path: &Path) -> PathBuf {
    with_suffix(state_path, ".wal")
}

/// The log being folded into a snapshot.
pub fn rotated_path(state_path: &Path) -> PathBuf {
    with_suffix(state_path, ".wal.1")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// A commit of several changes, as its one line holds them.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Commit<'a> {
    #[serde(borrow)]
    changes: std::borrow::Cow<'a, [Change]>,
}

/// Appends a commit of `changes` to `out`: one line whatever their number.
pub fn encode_commit_into(out: &mut Vec<u8>, changes: &[Change]) {
    match changes {
        [] => {}
        [one] => encode_into(out, one),
        many => {
            // Plain maps of plain data always serialise.
            if serde_json::to_writer(&mut *out, &Commit { changes: std::borrow::Cow::Borrowed(many) }).is_ok() {
                out.push(b'\n');
            }
        }
    }
}

/// Appends `change` as one line to `out`.
pub fn encode_into(out: &mut Vec<u8>, change: &Change) {
    // Plain maps of plain data always serialise.
    if serde_json::to_writer(&mut *out, change).is_ok() {
        out.push(b'\n');
    }
}

/// What a replay found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Records applied.
    pub records: usize,
    /// Length of the complete lines; anything after is a torn last line.
    pub valid_len: u64,
}

/// Applies the records in `bytes` to `state`, in order. A torn last line (no newline) is
/// left out; an unreadable complete line is an error naming its line number.
pub fn replay(state: &mut StateFile, bytes: &[u8]) -> Result<Replayed, String> {
    let mut records = 0;
    let mut offset = 0usize;
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        if line.last() != Some(&b'\n') {
            break;
        }
        let body = &line[..line.len() - 1];
        if body.starts_with(b"{\"changes\"") {
            let commit: Commit<'_> = serde_json::from_slice(body).map_err(|e| format!("line {}: {e}", i + 1))?;
            for change in commit.changes.into_owned() {
                state.apply(change);
                records += 1;
            }
        } else if !body.iter().all(u8::is_ascii_whitespace) {
            let change: Change = serde_json::from_slice(body).map_err(|e| format!("line {}: {e}", i + 1))?;
            state.apply(change);
            records += 1;
        }
        offset += line.len();
    }
    Ok(Replayed { records, valid_len: offset as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CadenceKind;
    use crate::storage::state::CadenceState;

    fn record(ns: &str, last: i64) -> Change {
        Change {
            namespace: ns.into(),
            cadence: CadenceKind::Fast,
            state: std::sync::Arc::new(CadenceState { last_success_ms: Some(last), ..CadenceState::default() }),
        }
    }

    fn encode(records: &[Change]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            encode_into(&mut out, r);
        }
        out
    }

    fn last(state: &StateFile, ns: &str) -> Option<i64> {
        state.namespaces.get(ns)?.cadences.get(&CadenceKind::Fast)?.last_success_ms
    }

    #[test]
    fn records_replay_in_order_and_the_last_one_wins() {
        let bytes = encode(&[record("a", 1), record("b", 2), record("a", 3)]);
        let mut state = StateFile::default();
        let r = replay(&mut state, &bytes).expect("replay");
        assert_eq!(r, Replayed { records: 3, valid_len: bytes.len() as u64 });
        assert_eq!((last(&state, "a"), last(&state, "b")), (Some(3), Some(2)));
    }

    #[test]
    fn replaying_a_log_over_a_later_snapshot_ends_in_the_same_state() {
        // The snapshot was taken after all three records; replaying them again changes nothing.
        let log = encode(&[record("a", 1), record("b", 2), record("a", 3)]);
        let mut snapshot = StateFile::default();
        replay(&mut snapshot, &log).expect("replay");
        let mut again = snapshot.clone();
        replay(&mut again, &log).expect("replay");
        assert_eq!(again, snapshot);
        // And records written after the snapshot still land on top of it.
        let mut later = snapshot.clone();
        replay(&mut later, &log).expect("replay");
        replay(&mut later, &encode(&[record("b", 9)])).expect("replay");
        assert_eq!(last(&later, "b"), Some(9));
    }

    #[test]
    fn a_commit_of_several_changes_is_one_line_replayed_whole_or_not_at_all() {
        let mut bytes = encode(&[record("a", 1)]);
        let first = bytes.len();
        encode_commit_into(&mut bytes, &[record("a", 2), record("b", 3), record("c", 4)]);
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 2, "one line per commit");
        let mut state = StateFile::default();
        assert_eq!(replay(&mut state, &bytes).expect("replay").records, 4);
        assert_eq!((last(&state, "a"), last(&state, "b"), last(&state, "c")), (Some(2), Some(3), Some(4)));
        for cut in first..bytes.len() {
            let mut state = StateFile::default();
            let r = replay(&mut state, &bytes[..cut]).expect("a torn commit is not an error");
            assert_eq!(r, Replayed { records: 1, valid_len: first as u64 }, "cut at {cut}");
            assert_eq!((last(&state, "a"), last(&state, "b")), (Some(1), None), "cut at {cut}");
        }
        let mut one = Vec::new();
        encode_commit_into(&mut one, &[record("a", 5)]);
        assert_eq!(one, encode(&[record("a", 5)]), "a commit of one change is written as before");
    }

    #[test]
    fn a_torn_last_line_is_left_out_and_reported_by_length() {
        let whole = encode(&[record("a", 1), record("a", 2)]);
        for cut in 1..whole.len() {
            let mut state = StateFile::default();
            let r = replay(&mut state, &whole[..cut]).expect("a torn tail is not an error");
            let first_len = whole.iter().position(|b| *b == b'\n').map_or(0, |p| p + 1);
            if cut < first_len {
                assert_eq!(r, Replayed { records: 0, valid_len: 0 });
            } else {
                assert_eq!(r.records, 1 + usize::from(cut == whole.len()));
                assert_eq!(r.valid_len as usize, if cut == whole.len() { cut } else { first_len });
                assert_eq!(last(&state, "a"), Some(1));
            }
        }
    }

    #[test]
    fn a_damaged_complete_line_is_an_error_naming_it() {
        let mut bytes = encode(&[record("a", 1)]);
        bytes.extend_from_slice(b"{not json}\n");
        bytes.extend_from_slice(&encode(&[record("a", 2)]));
        let e = replay(&mut StateFile::default(), &bytes).expect_err("damaged");
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn log_paths_sit_beside_the_state_file() {
        let p = Path::new("/var/lib/vmsh/scheduler.json");
        assert_eq!(path(p), Path::new("/var/lib/vmsh/scheduler.json.wal"));
        assert_eq!(rotated_path(p), Path::new("/var/lib/vmsh/scheduler.json.wal.1"));
    }
}
