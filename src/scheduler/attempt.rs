//! Deterministic attempt ids.
//!
//! An id is the SHA-256 of the namespace, cadence, batch root and the period's nominal due
//! time. Every retry of one period with one root gets the same id, and so does a restart
//! that resumes it, so a target (or the journal) can recognise a repeat.

use sha2::{Digest, Sha256};

use crate::clock::WallMs;
use crate::model::CadenceKind;
use crate::model::digest::to_hex;

/// The id of the attempt to anchor `root` for `namespace`/`cadence` in the period due at
/// `nominal_due` (Unix ms).
pub(crate) fn attempt_id(namespace: &str, cadence: CadenceKind, root: &[u8; 32], nominal_due: WallMs) -> String {
    let mut h = Sha256::new();
    // Length-prefix the name so no two (namespace, cadence) pairs share an encoding.
    h.update((namespace.len() as u64).to_be_bytes());
    h.update(namespace.as_bytes());
    h.update(cadence.as_str().as_bytes());
    h.update([0]);
    h.update(root);
    h.update(nominal_due.to_be_bytes());
    to_hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_id_and_each_input_matters() {
        let base = attempt_id("ns", CadenceKind::Fast, &[1; 32], 1_000);
        assert_eq!(base, attempt_id("ns", CadenceKind::Fast, &[1; 32], 1_000));
        assert_eq!(base.len(), 64);
        assert_ne!(base, attempt_id("ns2", CadenceKind::Fast, &[1; 32], 1_000));
        assert_ne!(base, attempt_id("ns", CadenceKind::Strong, &[1; 32], 1_000));
        assert_ne!(base, attempt_id("ns", CadenceKind::Fast, &[2; 32], 1_000));
        assert_ne!(base, attempt_id("ns", CadenceKind::Fast, &[1; 32], 1_001));
    }
}
