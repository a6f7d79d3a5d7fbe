//! What verifying a receipt against its target finds: the checks made, and how a check can
//! fail. Each driver verifies its own receipts in these terms; `verify` only dispatches.

use super::receipt::{Receipt, field_error};
use super::time::{WallMs, rfc3339};

/// Why a check against a target did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The evidence contradicts the receipt.
    Mismatch(String),
    /// The evidence could not be had (a node down or refusing the credentials, a journal or
    /// trust bundle not found): nothing was checked either way.
    Unreachable(String),
    /// The attestation is not one this service writes (an unknown or missing field, a value
    /// of the wrong form): there is nothing to check it against.
    Malformed(String),
}

impl CheckError {
    /// The reason, whichever kind it is.
    pub fn reason(&self) -> &str {
        match self {
            CheckError::Mismatch(r) | CheckError::Unreachable(r) | CheckError::Malformed(r) => r,
        }
    }

    /// The same kind of error with its reason rewritten by `f`.
    pub fn map_reason(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            CheckError::Mismatch(r) => CheckError::Mismatch(f(&r)),
            CheckError::Unreachable(r) => CheckError::Unreachable(f(&r)),
            CheckError::Malformed(r) => CheckError::Malformed(f(&r)),
        }
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl From<String> for CheckError {
    fn from(reason: String) -> Self {
        CheckError::Mismatch(reason)
    }
}

impl From<&str> for CheckError {
    fn from(reason: &str) -> Self {
        CheckError::Mismatch(reason.to_string())
    }
}

/// Reads a scheme's attestation strictly into `T` (whose serde attributes deny unknown
/// fields); any difference from what the driver writes is [`CheckError::Malformed`].
pub fn read_attestation<T: serde::de::DeserializeOwned>(attestation: &serde_json::Value) -> Result<T, CheckError> {
    serde_path_to_error::deserialize(attestation.clone())
        .map_err(|e| CheckError::Malformed(field_error(&e, "attestation.")))
}

/// What a driver established about a receipt from its target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// What was checked, one line each.
    pub checks: Vec<String>,
    /// The top-level receipt fields the target attests and that were checked against it
    /// (`root` always; `time`, `namespace` … where the target holds them).
    pub attests: Vec<&'static str>,
    /// Attestation fields that are the writer's own claims, not evidence, one line each.
    pub claims: Vec<String>,
}

impl Evidence {
    /// The same evidence with every line rewritten by `f` (to clean it of secrets).
    pub fn map_lines(self, f: impl Fn(&str) -> String) -> Self {
        let map = |lines: Vec<String>| lines.iter().map(|l| f(l)).collect();
        Evidence { checks: map(self.checks), attests: self.attests, claims: map(self.claims) }
    }
}

/// Compares the receipt's time with the time the evidence gives (Unix ms); `source` names
/// that time ("the block's time").
pub fn check_time(receipt: &Receipt, evidence_ms: WallMs, source: &str) -> Result<String, CheckError> {
    if receipt.time_ms != evidence_ms {
        return Err(CheckError::Mismatch(format!(
            "the receipt's time {} is not {source} {}",
            receipt.time,
            rfc3339(evidence_ms)
        )));
    }
    Ok(format!("the receipt's time {} is {source}", receipt.time))
}
