//! Re-checks an `rfc3161:` receipt against the token it carries: the token time-stamps the
//! root's SHA-256 and holds what the attestation says of it (genTime, which is also the
//! receipt's time, serial number, policy, nonce and TSA name); with a trust bundle, its
//! signature, the signer's chain as of genTime and its time-stamping usage as well. No TSA is
//! asked: the token is the evidence.

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::protocol::nonce_int;
use super::token::{Expected, check, imprint_of};
use super::trust::TrustBundle;
use crate::clock::rfc3339;
use crate::fsread::read_regular;
use crate::model::evidence::{CheckError, Evidence, check_time, read_attestation};
use crate::model::receipt::{Receipt, is_lower_hex};

/// Largest trust bundle read: a bundle of every public CA is a few hundred kilobytes.
const MAX_BUNDLE_BYTES: u64 = 16 * 1024 * 1024;

/// An `rfc3161:` attestation, exactly as the driver writes it (a field added there must be
/// added here: the tests verify real receipts through this struct).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TsaAttestation {
    /// The whole token (DER ContentInfo), base64.
    pub token: String,
    /// The token's genTime, RFC 3339.
    pub gen_time: String,
    /// The token's serial number, hex.
    pub serial_number: String,
    /// The policy the token was issued under, dotted.
    pub policy: String,
    /// Always `sha256`.
    pub imprint_algorithm: String,
    /// The request's nonce, 16 hex digits.
    pub nonce: String,
    /// Whether the writer checked the signature against a trust bundle when it anchored.
    pub verified: bool,
    /// The TSA's name, when the token carries one.
    #[serde(default)]
    pub tsa: Option<String>,
}

/// Verifies an `rfc3161:` receipt for `root`; with `bundle` (a PEM file of trusted CAs), the
/// token's signature and chain as well.
pub fn verify_receipt(receipt: &Receipt, root: &[u8; 32], bundle: Option<&Path>) -> Result<Evidence, CheckError> {
    let att: TsaAttestation = read_attestation(&receipt.attestation)?;
    let token = base64::engine::general_purpose::STANDARD
        .decode(&att.token)
        .map_err(|e| CheckError::Malformed(format!("attestation.token is not base64: {e}")))?;
    if !is_lower_hex(&att.nonce, 16) {
        return Err(CheckError::Malformed("attestation.nonce is not 16 lower-case hex digits".into()));
    }
    let nonce = u64::from_str_radix(&att.nonce, 16)
        .map_err(|e| CheckError::Malformed(format!("attestation.nonce: {e}")))
        .and_then(|n| nonce_int(n).map_err(CheckError::Malformed))?;
    let trust = match bundle {
        Some(path) => {
            let pem = read_regular(path, MAX_BUNDLE_BYTES).map_err(|e| {
                CheckError::Unreachable(format!("trust bundle {}: cannot read it: {e}", path.display()))
            })?;
            let parsed = TrustBundle::from_pem(&pem)
                .map_err(|e| CheckError::Unreachable(format!("trust bundle {}: {e}", path.display())))?;
            Some((path, parsed))
        }
        None => None,
    };
    let imprint = imprint_of(root);
    let any_nonce = Expected { imprint: &imprint, nonce: None, policy: None };
    let info = check(&token, &any_nonce, trust.as_ref().map(|(_, b)| b))
        .map_err(|e| CheckError::Mismatch(format!("token: {e}")))?;
    let mut checks = vec![format!(
        "token time-stamps the root's SHA-256 (genTime {}, serial {}, policy {}{})",
        rfc3339(info.gen_time_ms),
        info.serial_hex,
        info.policy,
        info.tsa_name.as_ref().map(|n| format!(", TSA {n}")).unwrap_or_default()
    )];
    let mut claims = Vec::new();
    match &trust {
        Some((path, _)) => checks
            .push(format!("token signature, signer chain and time-stamping usage verified against {}", path.display())),
        None => claims.push(format!(
            "the token's signature (attestation.verified {}: the writer's own check when it anchored); \
             give --trust-bundle PEM to check it",
            att.verified
        )),
    }
    if trust.is_some() {
        claims.push(format!(
            "attestation.verified ({}): whether the writer checked the signature when it anchored",
            att.verified
        ));
    }
    let with_nonce = Expected { imprint: &imprint, nonce: Some(&nonce), policy: None };
    if check(&token, &with_nonce, None).is_err() {
        return Err(CheckError::Mismatch(format!("the token's nonce is not the receipt's nonce {}", att.nonce)));
    }
    let stated = [
        ("genTime", att.gen_time.clone(), rfc3339(info.gen_time_ms)),
        ("serialNumber", att.serial_number.clone(), info.serial_hex.clone()),
        ("policy", att.policy.clone(), info.policy.clone()),
        ("imprintAlgorithm", att.imprint_algorithm.clone(), "sha256".to_string()),
    ];
    for (field, said, held) in stated {
        if said != held {
            return Err(CheckError::Mismatch(format!("the token's {field} is {held}, the receipt says {said}")));
        }
    }
    if att.tsa != info.tsa_name {
        let shown = |n: &Option<String>| n.as_ref().map_or("no TSA name".to_string(), |n| format!("TSA name {n:?}"));
        return Err(CheckError::Mismatch(format!(
            "the token holds {}, the receipt says {}",
            shown(&info.tsa_name),
            shown(&att.tsa)
        )));
    }
    checks.push("the token holds the attested genTime, serialNumber, policy, nonce and TSA name".into());
    checks.push(check_time(receipt, info.gen_time_ms, "the token's genTime")?);
    Ok(Evidence { checks, attests: vec!["root", "time", "timeMs"], claims })
}
