//! What happens to an aggregate: sealed (its members' leaves fixed), then anchored. Counted
//! per target (`vmsh_aggregate_leaves`, `vmsh_aggregate_anchors_saved_total`); lines carry
//! the target, the tree's root and size.

use slog::{Logger, info};

use crate::metrics::Metrics;
use crate::telemetry::InternalEvent;

/// An aggregate stopped collecting: its tree is built and its members' membership is being
/// recorded before it is sent.
pub(crate) struct AggregateSealed<'a> {
    /// The members' target.
    pub target: &'a str,
    /// The members' cadence.
    pub cadence: &'a str,
    /// The tree's root, hex.
    pub root: &'a str,
    /// Its number of leaves.
    pub size: u64,
}

impl InternalEvent for AggregateSealed<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        info!(log, "aggregate sealed";
            "size" => self.size, "root" => self.root, "cadence" => self.cadence, "target" => self.target);
    }
}

/// An aggregate is final and its members' receipts are written.
pub(crate) struct AggregateAnchored<'a> {
    /// The members' target.
    pub target: &'a str,
    /// The tree's root, hex.
    pub root: &'a str,
    /// Its number of leaves.
    pub size: u64,
    /// The receipts written now.
    pub receipts: usize,
    /// The target already held it: nothing was sent this time.
    pub recovered: bool,
}

impl InternalEvent for AggregateAnchored<'_> {
    fn emit(self, log: &Logger, m: &Metrics) {
        m.aggregate_leaves.with_label_values(&[self.target]).observe(self.size as f64);
        m.aggregate_saved.with_label_values(&[self.target]).inc_by(self.size.saturating_sub(1));
        info!(log, "aggregate anchored";
            "recovered" => self.recovered, "receipts" => self.receipts, "size" => self.size,
            "root" => self.root, "target" => self.target);
    }
}
