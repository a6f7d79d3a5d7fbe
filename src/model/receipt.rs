//! A receipt as this service writes it and a third party reads it: the format, and reading it
//! back strictly.

use serde::{Deserialize, Serialize};

use super::CadenceKind;
use super::time::WallMs;

/// Receipt format version.
pub const RECEIPT_VERSION: u32 = 1;

/// What a third party needs to check an anchor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Receipt {
    /// Receipt format version.
    pub version: u32,
    /// The attempt's deterministic id.
    pub attempt_id: String,
    /// The namespace whose root was anchored.
    pub namespace: String,
    /// Cadence that anchored.
    pub cadence: CadenceKind,
    /// Target, as configured (`local:demo`).
    pub target: String,
    /// The batch the root comes from, as its file gives it.
    pub batch_id: String,
    /// The root, `sha256:<hex>`.
    pub root: String,
    /// When the anchor happened, RFC 3339 UTC.
    pub time: String,
    /// The same instant in Unix milliseconds.
    pub time_ms: WallMs,
    /// When the root was anchored as a leaf of an aggregate: the proof that leads from this
    /// receipt's leaf to the root the attestation is about. Absent for an anchor of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion: Option<Inclusion>,
    /// The driver's proof; its fields depend on the target's scheme, and each driver reads
    /// them back as strictly as this struct is read.
    pub attestation: serde_json::Value,
    /// Version of the scheduler that wrote this receipt.
    pub scheduler_version: String,
    /// Cluster mode: the etcd prefix under which this receipt's record is committed. The file
    /// counts as a receipt only with that record (its SHA-256); absent from a single process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<String>,
}

/// The proof that a receipt's anchor is a leaf of an aggregate's tree (RFC 9162 §2.1.3),
/// every hash in lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inclusion {
    /// The leaf's bytes (docs/RECEIPTS.md, "Inclusion proofs").
    pub leaf: String,
    /// The leaf's index in the tree, from 0.
    pub index: u64,
    /// The tree's number of leaves.
    pub size: u64,
    /// The audit path, the leaf's sibling first.
    pub path: Vec<String>,
    /// The tree's root: what the target attests.
    pub root: String,
}

/// Why bytes are not a receipt this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Not JSON at all (a README passed by mistake).
    #[error("it is not JSON ({0})")]
    NotJson(String),
    /// JSON, but not shaped as a receipt: a missing, unknown or wrongly typed field.
    #[error("{0}")]
    NotAReceipt(String),
    /// A receipt of a format version this build does not know.
    #[error("receipt format version {0} is unknown to this build, which reads version {RECEIPT_VERSION}")]
    UnknownVersion(String),
}

/// Reads a receipt as this service writes it: a JSON object of [`RECEIPT_VERSION`] with
/// exactly the fields of [`Receipt`]. The version is looked at first, so a receipt of a later
/// format is named as such rather than as one with unknown fields.
pub fn parse(bytes: &[u8]) -> Result<Receipt, ReadError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ReadError::NotJson(e.to_string()))?;
    let Some(fields) = value.as_object() else {
        return Err(ReadError::NotAReceipt(format!("it is a JSON {}, not an object", json_kind(&value))));
    };
    match fields.get("version") {
        None => return Err(ReadError::NotAReceipt("it has no `version`".into())),
        Some(v) if v.as_u64() == Some(u64::from(RECEIPT_VERSION)) => {}
        Some(v) if v.is_u64() => return Err(ReadError::UnknownVersion(v.to_string())),
        Some(v) => return Err(ReadError::NotAReceipt(format!("its `version` is {v}, not a number"))),
    }
    serde_path_to_error::deserialize(value).map_err(|e| ReadError::NotAReceipt(field_error(&e, "")))
}

/// A deserialization error naming the field it is about (`attestation.seq: invalid type …`);
/// `prefix` is where the value sits in the receipt (`attestation.`).
pub fn field_error(e: &serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> String {
    let path = e.path().to_string();
    match (prefix, path.as_str()) {
        ("", ".") => e.inner().to_string(),
        (p, ".") => format!("{}: {}", p.trim_end_matches('.'), e.inner()),
        (p, path) => format!("{p}{path}: {}", e.inner()),
    }
}

pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Whether `s` is exactly `len` lower-case hex digits.
pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
