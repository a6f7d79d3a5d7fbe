//! Reading /health in assertions: the parts a test needs, failing the test (and showing the
//! document) when one is missing, and waits on the config tick it reports.

use std::time::Duration;

use vmsh_scheduler::health::contract::{Cadence, Config, Health, LastError, Namespace, Reload};

use super::{Scheduler, wait_for};

/// `lastTick` of /health, Unix ms.
pub(crate) fn last_tick(s: &Scheduler) -> Option<i64> {
    s.health().last_tick
}

/// Parts of /health a test needs: a missing one fails the test, showing the document.
pub(crate) trait HealthParts {
    /// A namespace.
    fn ns(&self, name: &str) -> &Namespace;
    /// A namespace's cadence (`fast`, `strong` or `cold`).
    fn cadence_of(&self, ns: &str, kind: &str) -> &Cadence;
    /// The running config.
    fn running_config(&self) -> &Config;
    /// The outcome of the last config change seen on disk.
    fn last_reload(&self) -> &Reload;
}

impl HealthParts for Health {
    fn ns(&self, name: &str) -> &Namespace {
        self.namespace(name).unwrap_or_else(|| panic!("no namespace {name:?} in /health: {self}"))
    }

    fn cadence_of(&self, ns: &str, kind: &str) -> &Cadence {
        self.cadence(ns, kind).unwrap_or_else(|| panic!("no cadence {ns:?}.{kind} in /health: {self}"))
    }

    fn running_config(&self) -> &Config {
        self.config.as_ref().unwrap_or_else(|| panic!("no config in /health: {self}"))
    }

    fn last_reload(&self) -> &Reload {
        self.running_config().last_reload.as_ref().unwrap_or_else(|| panic!("no lastReload in /health: {self}"))
    }
}

/// Parts of a cadence in /health a test needs: a missing one fails the test, showing the cadence.
pub(crate) trait CadenceParts {
    /// The last failure since the last success.
    fn error(&self) -> &LastError;
}

impl CadenceParts for Cadence {
    fn error(&self) -> &LastError {
        self.last_error.as_ref().unwrap_or_else(|| panic!("no lastError in the cadence: {self}"))
    }
}

/// Waits until the scheduler's config tick has run for at least `ms` more milliseconds: proof
/// that time passed while it kept working (used to show that something did not happen).
pub(crate) fn wait_ticking(s: &Scheduler, ms: i64, limit: Duration) {
    let first = wait_for(limit, "a first config tick", || last_tick(s));
    wait_for(limit, "the config tick to keep advancing", || last_tick(s).filter(|t| *t >= first + ms));
}
