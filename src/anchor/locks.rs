//! Send locks: one per account that sends transactions (an EVM key on a node, a bitcoind
//! wallet), held while its next transaction is built and sent.
//!
//! Namespaces anchoring through one account at once would otherwise pick the same nonce or
//! the same coins. The registry lives in [`super::Drivers`] and survives config reloads, so
//! drivers rebuilt by a reload share the locks of the jobs still running on the old ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A held lock serialises one account's sends.
pub type SendLock = Arc<tokio::sync::Mutex<()>>;

/// Send locks by account key.
#[derive(Default)]
pub struct SendLocks {
    locks: Mutex<HashMap<String, SendLock>>,
}

impl SendLocks {
    /// The lock of the account named `key` (e.g. `eip155:<rpc url>#<address>`).
    pub fn get(&self, key: &str) -> SendLock {
        // A poisoned map only means a panic mid-insert elsewhere; the map itself is intact.
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(key.to_string()).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_account_one_lock() {
        let locks = SendLocks::default();
        assert!(Arc::ptr_eq(&locks.get("a"), &locks.get("a")));
        assert!(!Arc::ptr_eq(&locks.get("a"), &locks.get("b")));
    }
}
