//! What happens to a cadence's anchors, from the first send to the receipt or the failure.
//!
//! Counters go to the namespace's series (`vmsh_anchors_*_total`, `vmsh_anchor_pending`,
//! `vmsh_last_success_timestamp_seconds` …) and the registry's histograms
//! (`vmsh_anchor_duration_seconds`, `vmsh_schedule_lag_seconds`); lines carry the cadence's
//! `ns`, `cadence` and `target`.

use std::path::Path;
use std::time::Duration;

use slog::{Logger, debug, info, warn};

use super::{Cadence, millis, seconds};
use crate::metrics::Metrics;
use crate::metrics::namespace::PendingSeries;
use crate::model::time::rfc3339;
use crate::model::{AnchorError, Pending, WallMs};
use crate::telemetry::InternalEvent;

/// An attempt left unfinished by the last shutdown or crash is resumed.
pub(crate) struct AttemptResumed<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
}

impl InternalEvent for AttemptResumed<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        info!(log, "resuming an attempt interrupted by the last shutdown or crash"; self.cadence);
    }
}

/// A recorded attempt was dropped: its target is no longer the cadence's.
pub(crate) struct AttemptAbandoned<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// The attempt's id.
    pub attempt: &'a str,
    /// The target it was for.
    pub was: &'a str,
}

impl InternalEvent for AttemptAbandoned<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        info!(log, "abandoning a recorded attempt: its target changed";
            self.cadence, "attempt" => self.attempt, "was" => self.was);
    }
}

/// The cadence was due with nothing to anchor; told once when the wait for a batch begins.
pub(crate) struct AnchorSkipped<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
}

impl InternalEvent for AnchorSkipped<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        let Cadence { series, kind, .. } = self.cadence;
        series.skipped_no_batch(kind);
        // No target: a skip is the cadence's, whatever it anchors to.
        debug!(log, "nothing to anchor yet: no batch"; "ns" => series.name(), "cadence" => kind.as_str());
    }
}

/// A run was skipped, as an operator asked.
pub(crate) struct RunSkipped<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// When the skipped run was due (Unix ms).
    pub due_ms: WallMs,
    /// When the next run by period is due (Unix ms).
    pub next_ms: WallMs,
}

impl InternalEvent for RunSkipped<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        self.cadence.series.skipped_by_operator(self.cadence.kind);
        info!(log, "run skipped, as an operator asked"; self.cadence,
            "due" => rfc3339(self.due_ms), "next_due" => rfc3339(self.next_ms),
            "due_ms" => self.due_ms, "next_due_ms" => self.next_ms);
    }
}

/// A run by period began more than a period late; one run makes up for every period missed.
pub(crate) struct RunsMissed<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// Whole periods missed.
    pub periods: u64,
    /// How late the run began.
    pub late_ms: i64,
    /// `downtime`, `paused` or `overload`.
    pub reason: &'static str,
}

impl InternalEvent for RunsMissed<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        self.cadence.series.missed(self.cadence.kind, self.reason, self.periods);
        warn!(log, "run began more than a period late: one run now makes up for the missed ones"; self.cadence,
            "missed" => self.periods, "late_ms" => self.late_ms, "reason" => self.reason);
    }
}

/// The batch could not be read: an attempt that fails at once (an [`AnchorFailed`] follows).
pub(crate) struct BatchUnreadable<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// The target the attempt was for.
    pub target: &'a str,
}

impl InternalEvent for BatchUnreadable<'_> {
    fn emit(self, _: &Logger, _: &Metrics) {
        self.cadence.series.attempted(self.cadence.kind, self.target);
    }
}

/// A job went to the pool; a first send (not a resume or a confirmation) is an attempt.
pub(crate) struct AnchorDispatched<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// The target the job goes to.
    pub target: &'a str,
    /// The attempt's id.
    pub attempt: &'a str,
    /// The batch it anchors.
    pub batch: &'a str,
    /// `anchor`, `resume` or `confirm`.
    pub mode: &'static str,
    /// Whether the job sends the anchor for the first time.
    pub first_send: bool,
}

impl InternalEvent for AnchorDispatched<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        if self.first_send {
            self.cadence.series.attempted(self.cadence.kind, self.target);
        }
        debug!(log, "job dispatched"; self.cadence, "attempt" => self.attempt, "batch" => self.batch, "mode" => self.mode);
    }
}

/// A first send began this long after its run was due.
pub(crate) struct ScheduleLagObserved<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// Milliseconds late, never negative.
    pub ms: i64,
}

impl InternalEvent for ScheduleLagObserved<'_> {
    fn emit(self, _: &Logger, metrics: &Metrics) {
        metrics.lag.with_label_values(&[self.cadence.kind.as_str()]).observe(self.ms as f64 / 1000.0);
    }
}

/// The anchor is final and its receipt durable.
pub(crate) struct AnchorSucceeded<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// The target it went to.
    pub target: &'a str,
    /// The batch anchored.
    pub batch: &'a str,
    /// The attempt's id.
    pub attempt: &'a str,
    /// Where its receipt is.
    pub receipt: &'a Path,
    /// From the send to final (or the driver's time, when it was final at once).
    pub took: Duration,
    /// How late its first send began, when this job was one.
    pub lag_ms: Option<i64>,
    /// The target already held it: nothing was sent this time.
    pub recovered: bool,
    /// Where the cadence's period now counts from (Unix ms).
    pub run_wall: WallMs,
}

impl InternalEvent for AnchorSucceeded<'_> {
    fn emit(self, log: &Logger, metrics: &Metrics) {
        let Cadence { series, kind, .. } = self.cadence;
        series.succeeded(kind, self.target);
        metrics.observe_duration(series.name(), kind, self.target, "success", self.took.as_secs_f64());
        series.set_last_success(kind, self.run_wall);
        info!(log, "anchored"; self.cadence,
            "batch" => self.batch, "attempt" => self.attempt,
            "receipt" => %self.receipt.display(), "duration_ms" => millis(self.took),
            "lag_ms" => self.lag_ms, "recovered" => self.recovered);
    }
}

/// The anchor is sent and waits for confirmations.
pub(crate) struct AnchorPending<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// The target it went to.
    pub target: &'a str,
    /// The attempt's id.
    pub attempt: &'a str,
    /// How deep it is.
    pub pending: &'a Pending,
    /// When it was first sent (Unix ms).
    pub sent_ms: Option<WallMs>,
    /// Seen pending for the first time, rather than looked at again.
    pub newly: bool,
    /// How late its first send began, when this job was one: the anchor that confirms it
    /// later is not a first send, so its `anchored` line cannot say.
    pub lag_ms: Option<i64>,
    /// How it stood before this look, if it was pending: what changed is told.
    pub before: Option<&'a Pending>,
}

impl InternalEvent for AnchorPending<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        let p = self.pending;
        let (kind, series) = (self.cadence.kind, self.cadence.series);
        if self.newly {
            info!(log, "anchor sent; waiting for confirmations"; self.cadence,
                "attempt" => self.attempt, "depth" => p.depth, "required" => p.required, "tx" => %p.data,
                "lag_ms" => self.lag_ms);
        } else {
            debug!(log, "waiting for confirmations"; self.cadence,
                "attempt" => self.attempt, "depth" => p.depth, "required" => p.required);
        }
        let before = self.before;
        if before.is_some_and(|b| b.depth > 0) && p.depth == 0 {
            series.reorged(kind, self.target);
            warn!(log, "the anchor's block left the chain; following it"; self.cadence,
                "attempt" => self.attempt, "was_depth" => before.map_or(0, |b| b.depth), "tx" => %p.data);
        }
        if let Some(fee) = &p.fee {
            let was = before.and_then(|b| b.fee.as_ref());
            let replaced = fee.replacements.saturating_sub(was.map_or(0, |w| w.replacements));
            if replaced > 0 {
                series.replaced(kind, self.target, u64::from(replaced));
                info!(log, "transaction replaced at a higher fee"; self.cadence,
                    "attempt" => self.attempt, "tx" => %p.data, "fee_rate" => fee.rate, "tip" => fee.tip,
                    "unit" => %fee.unit, "cap" => fee.cap, "replacements" => fee.replacements);
            }
            if fee.at_cap && !was.is_some_and(|w| w.at_cap) {
                warn!(log, "stuck at the fee cap; waiting for fees to drop"; self.cadence,
                    "attempt" => self.attempt, "tx" => %p.data, "fee_rate" => fee.rate, "tip" => fee.tip,
                    "unit" => %fee.unit, "cap" => fee.cap);
            }
        }
        series.set_pending(kind, self.target, Some(PendingSeries::of(p.depth, self.sent_ms, p.fee.as_ref())));
    }
}

/// The anchor is no longer pending: final, dropped or refused.
pub(crate) struct AnchorPendingEnded<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// The target it went to.
    pub target: &'a str,
}

impl InternalEvent for AnchorPendingEnded<'_> {
    fn emit(self, _: &Logger, _: &Metrics) {
        self.cadence.series.set_pending(self.cadence.kind, self.target, None);
    }
}

/// The target dropped the pending anchor, which is sent again.
pub(crate) struct AnchorDropped<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// The target that dropped it.
    pub target: &'a str,
    /// The attempt's id.
    pub attempt: &'a str,
    /// What the driver saw.
    pub why: &'a str,
    /// It had confirmations before it was gone: a reorg took it.
    pub reorged: bool,
}

impl InternalEvent for AnchorDropped<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        self.cadence.series.resent(self.cadence.kind, self.target);
        if self.reorged {
            self.cadence.series.reorged(self.cadence.kind, self.target);
        }
        warn!(log, "the target dropped the anchor; sending it again"; self.cadence,
            "attempt" => self.attempt, "err" => %self.why, "reorged" => self.reorged);
    }
}

/// Shutdown cut the job short; the attempt is resumed on the next start.
pub(crate) struct AnchorInterrupted<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// The attempt's id.
    pub attempt: &'a str,
    /// What the pool said.
    pub error: &'a str,
}

impl InternalEvent for AnchorInterrupted<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        warn!(log, "anchor interrupted by shutdown; it will be resumed on the next start"; self.cadence,
            "attempt" => self.attempt, "err" => %self.error);
    }
}

/// Looking at the pending anchor failed; it is looked at again after `wait`.
pub(crate) struct AnchorCheckFailed<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// The attempt's id.
    pub attempt: &'a str,
    /// Why.
    pub error: &'a AnchorError,
    /// Until the next look.
    pub wait: Duration,
}

impl InternalEvent for AnchorCheckFailed<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        warn!(log, "cannot check the pending anchor; looking again later"; self.cadence,
            "attempt" => self.attempt, "err" => %self.error.message, "class" => self.error.class.as_str(),
            "retry_in_s" => seconds(self.wait));
    }
}

/// The anchor, or the batch read before it, failed; the cadence backs off.
pub(crate) struct AnchorFailed<'a> {
    /// The cadence.
    pub cadence: Cadence<'a>,
    /// The target it failed on.
    pub target: &'a str,
    /// The attempt's id and batch, when an attempt had begun (a batch that cannot be read
    /// fails before that).
    pub attempt: Option<(&'a str, &'a str)>,
    /// What went wrong.
    pub error: &'a AnchorError,
    /// The backoff level now.
    pub level: u32,
    /// Until the retry.
    pub delay: Duration,
    /// Failures since the last success.
    pub failures: u32,
    /// Time spent in the driver, when it is a failure of the driver's own.
    pub duration: Option<Duration>,
}

impl InternalEvent for AnchorFailed<'_> {
    fn emit(self, log: &Logger, metrics: &Metrics) {
        let Cadence { series, kind, .. } = self.cadence;
        series.failed(kind, self.target, self.error.class);
        if let Some(d) = self.duration {
            metrics.observe_duration(series.name(), kind, self.target, "failure", d.as_secs_f64());
        }
        let (attempt, batch) = self.attempt.unzip();
        warn!(log, "anchor failed"; self.cadence,
            "attempt" => attempt, "batch" => batch,
            "err" => %self.error.message, "class" => self.error.class.as_str(), "backoff" => self.level,
            "retry_in_s" => seconds(self.delay), "failures" => self.failures);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;
    use slog::Level;

    use super::*;
    use crate::metrics::NamespaceSeries;
    use crate::model::{CadenceKind, ErrorClass};
    use crate::telemetry::capture::{Capture, Line, sample};

    const CNT: &str = r#"{cadence="fast",namespace="dao:a",target="local:j"}"#;
    const CN: &str = r#"{cadence="fast",namespace="dao:a"}"#;

    /// A namespace `dao:a` whose `fast` cadence anchors to `local:j`.
    struct Fixture {
        capture: Capture,
        log: Logger,
        metrics: Metrics,
        series: std::sync::Arc<NamespaceSeries>,
    }

    impl Fixture {
        fn new() -> Self {
            let capture = Capture::default();
            let metrics = Metrics::new().expect("metrics");
            let series = metrics.namespace("dao:a");
            series.init_cadence(CadenceKind::Fast, "local:j");
            Self { log: capture.logger(), capture, metrics, series }
        }

        fn cadence(&self) -> Cadence<'_> {
            Cadence { series: &self.series, kind: CadenceKind::Fast, target: "local:j" }
        }

        fn emit(&self, event: impl InternalEvent) {
            event.emit(&self.log, &self.metrics);
        }

        fn sample(&self, series: &str) -> Option<f64> {
            sample(&self.metrics, series)
        }
    }

    /// Asserts that the line names the fixture's cadence.
    fn names_the_cadence(line: &Line) {
        assert_eq!((line.field("ns"), line.field("cadence"), line.field("target")), ("dao:a", "fast", "local:j"));
    }

    fn error(class: ErrorClass) -> AnchorError {
        AnchorError { class, message: "connection refused".into(), refused: false }
    }

    #[test]
    fn a_resumed_attempt_is_told_at_info_with_its_cadence() {
        let f = Fixture::new();
        f.emit(AttemptResumed { cadence: f.cadence() });
        let line = f.capture.only();
        assert_eq!(line.level, Level::Info);
        assert_eq!(line.msg, "resuming an attempt interrupted by the last shutdown or crash");
        names_the_cadence(&line);
    }

    #[test]
    fn an_abandoned_attempt_is_told_with_its_id_and_the_target_it_was_for() {
        let f = Fixture::new();
        f.emit(AttemptAbandoned { cadence: f.cadence(), attempt: "a1", was: "local:old" });
        let line = f.capture.only();
        assert_eq!(line.level, Level::Info);
        assert_eq!(line.msg, "abandoning a recorded attempt: its target changed");
        assert_eq!((line.field("attempt"), line.field("was")), ("a1", "local:old"));
        names_the_cadence(&line);
    }

    #[test]
    fn a_skip_for_want_of_a_batch_is_counted_and_told_at_debug_without_a_target() {
        let f = Fixture::new();
        f.emit(AnchorSkipped { cadence: f.cadence() });
        let skipped = r#"vmsh_anchors_skipped_total{cadence="fast",namespace="dao:a",reason="no_batch"}"#;
        assert_eq!(f.sample(skipped), Some(1.0));
        let line = f.capture.only();
        assert_eq!((line.level, line.msg.as_str()), (Level::Debug, "nothing to anchor yet: no batch"));
        assert_eq!((line.field("ns"), line.field("cadence")), ("dao:a", "fast"));
        assert!(!line.fields.contains_key("target"), "{line:?}");
    }

    #[test]
    fn an_unreadable_batch_counts_an_attempt_and_leaves_the_telling_to_the_failure() {
        let f = Fixture::new();
        f.emit(BatchUnreadable { cadence: f.cadence(), target: "local:j" });
        assert_eq!(f.sample(&format!("vmsh_anchors_attempted_total{CNT}")), Some(1.0));
        assert!(f.capture.lines().is_empty());
    }

    #[test]
    fn a_first_send_is_counted_as_an_attempt_and_every_dispatch_told_at_debug() {
        let f = Fixture::new();
        let dispatched = |mode, first_send| AnchorDispatched {
            cadence: f.cadence(),
            target: "local:j",
            attempt: "a1",
            batch: "b1",
            mode,
            first_send,
        };
        f.emit(dispatched("anchor", true));
        f.emit(dispatched("confirm", false));
        assert_eq!(f.sample(&format!("vmsh_anchors_attempted_total{CNT}")), Some(1.0), "a confirmation is no attempt");
        let lines = f.capture.lines();
        assert_eq!(lines.len(), 2);
        for (line, mode) in lines.iter().zip(["anchor", "confirm"]) {
            assert_eq!((line.level, line.msg.as_str()), (Level::Debug, "job dispatched"));
            assert_eq!((line.field("attempt"), line.field("batch"), line.field("mode")), ("a1", "b1", mode));
            names_the_cadence(line);
        }
    }

    #[test]
    fn the_lag_of_a_first_send_goes_into_the_schedule_lag_histogram_in_seconds() {
        let f = Fixture::new();
        f.emit(ScheduleLagObserved { cadence: f.cadence(), ms: 250 });
        assert_eq!(f.sample(r#"vmsh_schedule_lag_seconds_count{cadence="fast"}"#), Some(1.0));
        assert_eq!(f.sample(r#"vmsh_schedule_lag_seconds_sum{cadence="fast"}"#), Some(0.25));
        assert!(f.capture.lines().is_empty());
    }

    #[test]
    fn a_success_is_counted_timed_and_stamped_and_told_as_anchored() {
        let f = Fixture::new();
        let receipt = PathBuf::from("out/anchors/dao:a/r.json");
        f.emit(AnchorSucceeded {
            cadence: f.cadence(),
            target: "local:j",
            batch: "b1",
            attempt: "a1",
            receipt: &receipt,
            took: Duration::from_millis(1_500),
            lag_ms: Some(20),
            recovered: false,
            run_wall: 7_000,
        });
        assert_eq!(f.sample(&format!("vmsh_anchors_succeeded_total{CNT}")), Some(1.0));
        let duration =
            r#"vmsh_anchor_duration_seconds_sum{cadence="fast",namespace="dao:a",status="success",target="local:j"}"#;
        assert_eq!(f.sample(duration), Some(1.5));
        assert_eq!(f.sample(&format!("vmsh_last_success_timestamp_seconds{CN}")), Some(7.0));
        let line = f.capture.only();
        assert_eq!((line.level, line.msg.as_str()), (Level::Info, "anchored"));
        assert_eq!((line.field("batch"), line.field("attempt")), ("b1", "a1"));
        assert_eq!(line.field("receipt"), "out/anchors/dao:a/r.json");
        assert_eq!((line.field("duration_ms"), line.field("lag_ms"), line.field("recovered")), ("1500", "20", "false"));
        names_the_cadence(&line);
    }

    #[test]
    fn a_newly_pending_anchor_is_told_at_info_a_look_again_at_debug_and_both_set_the_pending_gauges() {
        let f = Fixture::new();
        let pending = Pending { data: json!({"tx": "0xab"}), required: 6, depth: 0, poll_ms: 1_000, fee: None };
        let told = |pending, newly| AnchorPending {
            cadence: f.cadence(),
            target: "local:j",
            attempt: "a1",
            pending,
            sent_ms: Some(5_000),
            newly,
            lag_ms: Some(40),
            before: None,
        };
        f.emit(told(&pending, true));
        assert_eq!(f.sample(&format!("vmsh_anchor_pending{CNT}")), Some(1.0));
        assert_eq!(f.sample(&format!("vmsh_anchor_confirmations{CN}")), Some(0.0));
        assert_eq!(f.sample(&format!("vmsh_anchor_pending_since_timestamp_seconds{CN}")), Some(5.0));
        let deeper = Pending { depth: 2, ..pending.clone() };
        f.emit(told(&deeper, false));
        assert_eq!(f.sample(&format!("vmsh_anchor_confirmations{CN}")), Some(2.0));

        let lines = f.capture.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].level, lines[0].msg.as_str()), (Level::Info, "anchor sent; waiting for confirmations"));
        assert_eq!(lines[0].field("tx"), r#"{"tx":"0xab"}"#);
        assert_eq!(lines[0].field("lag_ms"), "40", "a first send says how late it began");
        assert_eq!((lines[1].level, lines[1].msg.as_str()), (Level::Debug, "waiting for confirmations"));
        assert!(!lines[1].fields.contains_key("tx"));
        for (line, depth) in lines.iter().zip(["0", "2"]) {
            assert_eq!((line.field("attempt"), line.field("depth"), line.field("required")), ("a1", depth, "6"));
            names_the_cadence(line);
        }
    }

    #[test]
    fn a_replacement_a_reorg_and_the_fee_cap_are_each_told_once_and_counted() {
        let f = Fixture::new();
        let fee = |replacements, at_cap| crate::model::PendingFee {
            unit: "wei/gas".into(),
            rate: 40_000_000_000,
            tip: Some(2_000_000_000),
            cap: Some(40_000_000_000),
            replacements,
            at_cap,
            sent_ms: None,
            sent_height: None,
        };
        let at = |depth, replacements, at_cap| Pending {
            data: json!({"txHash": "0xab"}),
            required: 3,
            depth,
            poll_ms: 1_000,
            fee: Some(fee(replacements, at_cap)),
        };
        let told = |pending, before| AnchorPending {
            cadence: f.cadence(),
            target: "local:j",
            attempt: "a1",
            pending,
            sent_ms: Some(5_000),
            newly: false,
            lag_ms: None,
            before,
        };
        let (first, replaced, capped, mined) = (at(0, 0, false), at(0, 2, true), at(0, 2, true), at(1, 2, false));
        f.emit(told(&replaced, Some(&first)));
        f.emit(told(&capped, Some(&replaced)));
        f.emit(told(&mined, Some(&capped)));
        f.emit(told(&first, Some(&mined)));
        assert_eq!(f.sample(&format!("vmsh_anchor_replacements_total{CNT}")), Some(2.0));
        assert_eq!(f.sample(&format!("vmsh_anchor_reorgs_total{CNT}")), Some(1.0));
        assert_eq!(
            f.sample(r#"vmsh_anchor_pending_fee{cadence="fast",namespace="dao:a",unit="wei_per_gas"}"#),
            Some(4e10)
        );
        assert_eq!(f.sample(&format!("vmsh_anchor_fee_capped{CN}")), Some(0.0));
        let told: Vec<_> = f.capture.lines().into_iter().filter(|l| l.level != Level::Debug).collect();
        let said: Vec<_> = told.iter().map(|l| (l.level, l.msg.as_str())).collect();
        assert_eq!(
            said,
            [
                (Level::Info, "transaction replaced at a higher fee"),
                (Level::Warning, "stuck at the fee cap; waiting for fees to drop"),
                (Level::Warning, "the anchor's block left the chain; following it"),
            ],
            "the cap told once, not on every look"
        );
        assert_eq!(
            (told[0].field("replacements"), told[0].field("fee_rate"), told[0].field("unit")),
            ("2", "40000000000", "wei/gas")
        );
    }

    #[test]
    fn an_anchor_no_longer_pending_clears_the_pending_gauges_silently() {
        let f = Fixture::new();
        let pending = PendingSeries { depth: 3, sent_ms: Some(5_000), fee: None };
        f.series.set_pending(CadenceKind::Fast, "local:j", Some(pending));
        f.emit(AnchorPendingEnded { cadence: f.cadence(), target: "local:j" });
        assert_eq!(f.sample(&format!("vmsh_anchor_pending{CNT}")), Some(0.0));
        assert_eq!(f.sample(&format!("vmsh_anchor_confirmations{CN}")), None);
        assert_eq!(f.sample(&format!("vmsh_anchor_pending_since_timestamp_seconds{CN}")), None);
        assert!(f.capture.lines().is_empty());
    }

    #[test]
    fn a_dropped_anchor_is_counted_as_resent_and_warned_of_with_what_the_driver_saw() {
        let f = Fixture::new();
        f.emit(AnchorDropped {
            cadence: f.cadence(),
            target: "local:j",
            attempt: "a1",
            why: "not in the mempool",
            reorged: false,
        });
        assert_eq!(f.sample(&format!("vmsh_anchors_resent_total{CNT}")), Some(1.0));
        let line = f.capture.only();
        assert_eq!(
            (line.level, line.msg.as_str()),
            (Level::Warning, "the target dropped the anchor; sending it again")
        );
        assert_eq!((line.field("attempt"), line.field("err")), ("a1", "not in the mempool"));
        names_the_cadence(&line);
    }

    #[test]
    fn an_interrupted_anchor_is_warned_of_as_resumed_on_the_next_start() {
        let f = Fixture::new();
        f.emit(AnchorInterrupted { cadence: f.cadence(), attempt: "a1", error: "cancelled" });
        let line = f.capture.only();
        assert_eq!(line.level, Level::Warning);
        assert_eq!(line.msg, "anchor interrupted by shutdown; it will be resumed on the next start");
        assert_eq!((line.field("attempt"), line.field("err")), ("a1", "cancelled"));
        names_the_cadence(&line);
    }

    #[test]
    fn a_failed_check_of_a_pending_anchor_is_warned_of_with_its_class_and_when_it_looks_again() {
        let f = Fixture::new();
        let error = error(ErrorClass::Network);
        f.emit(AnchorCheckFailed {
            cadence: f.cadence(),
            attempt: "a1",
            error: &error,
            wait: Duration::from_micros(2_500_400),
        });
        let line = f.capture.only();
        assert_eq!(
            (line.level, line.msg.as_str()),
            (Level::Warning, "cannot check the pending anchor; looking again later")
        );
        assert_eq!(
            (line.field("attempt"), line.field("err"), line.field("class")),
            ("a1", "connection refused", "network")
        );
        assert_eq!(line.field("retry_in_s"), "2.5");
        names_the_cadence(&line);
    }

    #[test]
    fn a_failure_is_counted_by_class_timed_and_warned_of_with_its_backoff() {
        let f = Fixture::new();
        let error = error(ErrorClass::Auth);
        f.emit(AnchorFailed {
            cadence: f.cadence(),
            target: "local:j",
            attempt: Some(("a1", "b1")),
            error: &error,
            level: 2,
            delay: Duration::from_millis(6_854),
            failures: 3,
            duration: Some(Duration::from_millis(250)),
        });
        assert_eq!(f.sample(&format!("vmsh_anchors_failed_total{CNT}")), Some(1.0));
        let errors = r#"vmsh_anchor_errors_total{cadence="fast",class="auth",namespace="dao:a",target="local:j"}"#;
        assert_eq!(f.sample(errors), Some(1.0));
        let duration =
            r#"vmsh_anchor_duration_seconds_sum{cadence="fast",namespace="dao:a",status="failure",target="local:j"}"#;
        assert_eq!(f.sample(duration), Some(0.25));
        let line = f.capture.only();
        assert_eq!((line.level, line.msg.as_str()), (Level::Warning, "anchor failed"));
        assert_eq!((line.field("attempt"), line.field("batch")), ("a1", "b1"));
        assert_eq!((line.field("err"), line.field("class")), ("connection refused", "auth"));
        assert_eq!((line.field("backoff"), line.field("retry_in_s"), line.field("failures")), ("2", "6.854", "3"));
        names_the_cadence(&line);
    }

    #[test]
    fn a_failure_before_any_attempt_has_no_attempt_nor_batch_and_is_not_timed() {
        let f = Fixture::new();
        let error = error(ErrorClass::Validation);
        f.emit(AnchorFailed {
            cadence: f.cadence(),
            target: "local:j",
            attempt: None,
            error: &error,
            level: 1,
            delay: Duration::from_secs(1),
            failures: 1,
            duration: None,
        });
        assert_eq!(f.sample(&format!("vmsh_anchors_failed_total{CNT}")), Some(1.0));
        let duration =
            r#"vmsh_anchor_duration_seconds_count{cadence="fast",namespace="dao:a",status="failure",target="local:j"}"#;
        assert_eq!(f.sample(duration), None);
        let line = f.capture.only();
        assert_eq!((line.field("attempt"), line.field("batch")), ("null", "null"));
    }
}
