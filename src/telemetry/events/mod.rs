//! Every internal event, by what it happened to: a cadence's anchors ([`anchor`]), an
//! aggregate ([`aggregate`]), a namespace
//! ([`namespace`]), the config files ([`config`]) and the state ([`state`]).
//!
//! An event is a struct of what happened, borrowed from whoever saw it; handlers build one and
//! call [`InternalEvent::emit`](super::InternalEvent::emit). Names say what happened, in the
//! past tense (`AnchorSucceeded`, `ConfigRejected`).

pub(crate) mod aggregate;
pub(crate) mod anchor;
pub(crate) mod config;
pub(crate) mod namespace;
pub(crate) mod state;

use slog::{KV, Record, Serializer};

use crate::metrics::NamespaceSeries;
use crate::model::CadenceKind;

pub(crate) use aggregate::{AggregateAnchored, AggregateSealed};
pub(crate) use anchor::{
    AnchorCheckFailed, AnchorDispatched, AnchorDropped, AnchorFailed, AnchorInterrupted, AnchorPending,
    AnchorPendingEnded, AnchorSkipped, AnchorSucceeded, AttemptAbandoned, AttemptResumed, BatchUnreadable, RunSkipped,
    RunsMissed, ScheduleLagObserved,
};
pub(crate) use config::{ConfigCheckRequested, ConfigLoaded, ConfigRejected, ConfigReloaded, ConfigRestored};
pub(crate) use namespace::{
    NamespaceHandedOver, NamespaceLost, NamespaceReconfigured, NamespaceRemoved, NamespaceRevived,
};
pub(crate) use state::{
    StateFlushRetried, StateFoldFailed, StateSnapshotWritten, StateWritableAgain, StateWriteFailed, StateWriteSucceeded,
};

/// The cadence an event happened to. Its namespace's series are where the event is counted
/// (they carry the namespace's name); its lines carry `ns`, `cadence` and `target`, the target
/// the cadence is configured with now.
#[derive(Clone, Copy)]
pub(crate) struct Cadence<'a> {
    /// The namespace's series.
    pub series: &'a NamespaceSeries,
    /// Which of its cadences.
    pub kind: CadenceKind,
    /// The cadence's configured target, as its lines name it.
    pub target: &'a str,
}

impl Cadence<'_> {
    /// The namespace's name.
    pub(crate) fn ns(&self) -> &str {
        self.series.name()
    }
}

/// `ns`, `cadence` and `target`, in the order a line shows them after the event's own fields.
impl KV for Cadence<'_> {
    fn serialize(&self, _: &Record<'_>, ser: &mut dyn Serializer) -> slog::Result {
        ser.emit_str("target", self.target)?;
        ser.emit_str("cadence", self.kind.as_str())?;
        ser.emit_str("ns", self.ns())
    }
}

/// Milliseconds in a log field: whole, and saturating rather than wrapping.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Seconds in a log field, to the millisecond.
fn seconds(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
