//! Deserialising a YAML value while collecting every shape error (unknown field, wrong type),
//! not just the first.
//!
//! serde stops at the first error. After each one the offending key is removed from the value
//! and deserialisation tried again, so an unknown field or a wrongly typed optional field does
//! not hide the next problem. A missing required field cannot be repaired and ends the walk.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::Value;

/// Most repairs tried on one value; a document with more problems than this is reported in part.
const MAX_REPAIRS: usize = 64;

/// One shape problem: the field path (dotted, `[i]` for list items; empty for the value
/// itself) and serde's reason.
pub(crate) type ShapeError = (String, String);

/// Deserialises `value` as `T`, returning it (when every problem could be repaired away)
/// and every problem found.
pub(crate) fn deserialize_all<T: DeserializeOwned>(mut value: Value) -> (Option<T>, Vec<ShapeError>) {
    let mut errors = Vec::new();
    // Where repairs were made: the paths of the removed elements' parents.
    let mut repaired: Vec<String> = Vec::new();
    for _ in 0..MAX_REPAIRS {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(v) => return (Some(v), errors),
            Err(e) => e,
        };
        let segments: Vec<Segment> = err.path().iter().cloned().collect();
        let reason = err.into_inner().to_string();
        let path = render(&segments);
        let missing = reason.starts_with("missing field");
        // Removing a wrongly typed required field makes serde report it missing: that is the
        // same problem again, not a new one.
        if !(missing && repaired.contains(&path)) {
            errors.push((path, reason));
        }
        if missing || !remove(&mut value, &segments) {
            return (None, errors);
        }
        repaired.push(render(&segments[..segments.len().saturating_sub(1)]));
    }
    (None, errors)
}

/// Renders a path as `a.b[2].c`.
fn render(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// Removes the element at `path`; false when there is nothing removable there.
fn remove(value: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut at = value;
    for segment in parents {
        let next = match (segment, at) {
            (Segment::Map { key }, Value::Mapping(m)) => m.get_mut(key.as_str()),
            (Segment::Seq { index }, Value::Sequence(s)) => s.get_mut(*index),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match (last, at) {
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        (Segment::Seq { index }, Value::Sequence(s)) if *index < s.len() => {
            s.remove(*index);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        every: String,
        confirmations: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: Option<String>,
        inner: Inner,
        list: Option<Vec<u32>>,
    }

    fn run(yaml: &str) -> (Option<Outer>, Vec<ShapeError>) {
        deserialize_all(serde_yaml::from_str(yaml).expect("yaml"))
    }

    #[test]
    fn reports_every_unknown_field_and_wrong_type() {
        let (v, errs) = run("nmae: x\ninner: {every: 1s, evry: 2, confirmations: many}\nlist: [1, x, 3]\n");
        let mut paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, vec!["inner.confirmations", "inner.evry", "list[1]", "nmae"], "{errs:?}");
        assert!(v.is_some(), "all problems were removable");
    }

    #[test]
    fn a_wrongly_typed_required_field_is_reported_once() {
        let (v, errs) = run("inner: {every: [1]}\n");
        assert!(v.is_none());
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "inner.every");
        assert!(errs[0].1.contains("invalid type"), "{errs:?}");
    }

    #[test]
    fn a_missing_required_field_ends_the_walk() {
        let (v, errs) = run("name: x\n");
        assert!(v.is_none());
        assert_eq!(errs, vec![(String::new(), "missing field `inner`".to_string())]);
    }
}
