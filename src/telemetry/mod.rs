//! What the scheduler tells its operators: structured log lines ([`log`]) and the internal
//! events ([`events`]) that write them.
//!
//! Everything observable that happens is one event type, whose [`InternalEvent::emit`] writes
//! its log line and updates its metrics together: the line's text, its fields and the series
//! it moves are read in one place, and a handler only says what happened. Log messages, field
//! names, metric names and labels are public interface (docs/HTTP.md, docs/OPERATIONS.md, the
//! dashboard and the alert rules use them): an event changes them only on purpose.

pub(crate) mod events;
pub mod log;

#[cfg(test)]
pub(crate) mod capture;

use slog::Logger;

use crate::metrics::Metrics;

pub use log::{LogGuard, discard, init};

/// Something that happened which operators see: a log line, metric updates, or both.
pub trait InternalEvent: Sized {
    /// Writes the event's log line to `log` (when it has one) and updates its metrics.
    fn emit(self, log: &Logger, metrics: &Metrics);
}
