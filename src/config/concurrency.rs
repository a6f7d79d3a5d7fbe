//! `concurrency`, which any entry of the targets file may carry: how many of the target's
//! anchor jobs may run at once. A target without one takes `VMSH_ANCHOR_WORKERS` when that is
//! set, else its scheme's default ([`scheme_default`]). Each driver's section reads it through
//! [`build`], so every section accepts and refuses the same values.

use crate::model::Scheme;

use super::targets::{Flex, Problem};

/// Most jobs of one target at once: beyond this a target is better split or aggregated.
pub(crate) const MAX_CONCURRENCY: u32 = 4_096;

/// How many jobs of a target of `scheme` run at once when nothing says otherwise.
///
/// Each fits what the scheme's job waits on:
/// - `local`: a journal append that takes a lock and a write, so more in flight only queue on
///   the lock;
/// - `exec`: a process that mostly waits (a CLI calling out), so many run side by side at
///   little cost; an operator whose command is heavy sets less;
/// - `rfc3161`: an HTTP round trip to a TSA, which serves many clients but not unboundedly;
/// - `eip155`: sends are serialized by the account's nonce anyway; the slots beyond one let
///   confirmations (reads) run beside a send;
/// - `btc`: wallet calls to one node, which a node serves a few at a time.
pub fn scheme_default(scheme: Scheme) -> u32 {
    match scheme {
        Scheme::Local => 64,
        Scheme::Exec => 128,
        Scheme::Rfc3161 => 32,
        Scheme::Eip155 => 16,
        Scheme::Btc => 8,
    }
}

/// The limit an entry's optional `concurrency` sets, or why it is refused; `prefix` is the
/// entry's field (`exec.stamp`).
pub(crate) fn build(raw: Option<&Flex<u32>>, prefix: &str) -> Result<Option<u32>, Vec<Problem>> {
    match raw {
        None => Ok(None),
        Some(Flex(n)) if (1..=MAX_CONCURRENCY).contains(n) => Ok(Some(*n)),
        Some(_) => Err(vec![(format!("{prefix}.concurrency"), format!("must be 1 to {MAX_CONCURRENCY}"))]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_within_bounds_is_taken_and_one_outside_is_refused_naming_the_field() {
        assert_eq!(build(None, "exec.stamp"), Ok(None));
        assert_eq!(build(Some(&Flex(1)), "exec.stamp"), Ok(Some(1)));
        assert_eq!(build(Some(&Flex(MAX_CONCURRENCY)), "exec.stamp"), Ok(Some(MAX_CONCURRENCY)));
        let refused = build(Some(&Flex(0)), "exec.stamp").expect_err("zero refused");
        assert_eq!(refused, vec![("exec.stamp.concurrency".to_string(), "must be 1 to 4096".to_string())]);
        assert!(build(Some(&Flex(MAX_CONCURRENCY + 1)), "eip155.base").is_err());
    }

    #[test]
    fn every_scheme_has_a_default_of_at_least_one() {
        for scheme in [Scheme::Local, Scheme::Exec, Scheme::Rfc3161, Scheme::Eip155, Scheme::Btc] {
            assert!(scheme_default(scheme) >= 1, "{scheme:?}");
        }
    }
}
