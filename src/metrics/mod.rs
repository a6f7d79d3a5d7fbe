//! The Prometheus registry and every series the scheduler exports besides actix-web-prom's
//! HTTP series. Names and labels are public interface: the README, the dashboard and the
//! alert rules use exactly these.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::anchor::ErrorClass;
use crate::config::CadenceKind;

/// Anchor duration buckets, 10 ms to 10 min.
pub const DURATION_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Schedule lag buckets, 1 ms to 5 min.
pub const LAG_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Every metric of the scheduler.
pub struct Metrics {
    /// The registry /metrics serves (shared with actix-web-prom).
    pub registry: Registry,
    /// `vmsh_anchors_attempted_total{namespace,cadence,target}`.
    pub attempted: IntCounterVec,
    /// `vmsh_anchors_succeeded_total{namespace,cadence,target}`.
    pub succeeded: IntCounterVec,
    /// `vmsh_anchors_failed_total{namespace,cadence,target}`.
    pub failed: IntCounterVec,
    /// `vmsh_anchor_errors_total{namespace,cadence,target,class}`.
    pub errors: IntCounterVec,
    /// `vmsh_anchors_skipped_total{namespace,cadence,reason}`.
    pub skipped: IntCounterVec,
    /// `vmsh_anchor_duration_seconds{namespace,cadence,target,status}`, or without
    /// `namespace` when [`Metrics::with_options`] says so; observe through
    /// [`Metrics::observe_duration`].
    pub duration: HistogramVec,
    /// Whether `duration` carries the namespace label.
    namespace_histograms: bool,
    /// `vmsh_backoff_state{namespace}`: highest backoff level of the namespace's cadences.
    pub backoff: IntGaugeVec,
    /// `vmsh_last_success_timestamp_seconds{namespace,cadence}`.
    pub last_success: GaugeVec,
    /// `vmsh_next_due_timestamp_seconds{namespace,cadence}`.
    pub next_due: GaugeVec,
    /// `vmsh_schedule_lag_seconds{cadence}`: anchor start minus due time.
    pub lag: HistogramVec,
    /// `vmsh_anchor_pending{namespace,cadence,target}`: 1 while an anchor waits for confirmations.
    pub pending: IntGaugeVec,
    /// `vmsh_anchor_pending_since_timestamp_seconds{namespace,cadence}`.
    pub pending_since: GaugeVec,
    /// `vmsh_anchor_confirmations{namespace,cadence}`: depth of the pending anchor.
    pub confirmations: IntGaugeVec,
    /// `vmsh_anchors_resent_total{namespace,cadence,target}`.
    pub resent: IntCounterVec,
    /// `vmsh_anchors_in_flight`.
    pub in_flight: IntGauge,
    /// `vmsh_anchor_queue_depth`.
    pub queued: IntGauge,
    /// `vmsh_config_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `vmsh_config_last_reload_successful`.
    pub reload_ok: IntGauge,
    /// `vmsh_config_last_reload_timestamp_seconds`.
    pub reload_time: Gauge,
    /// `vmsh_namespaces`.
    pub namespaces: IntGauge,
    /// `vmsh_build_info{version}`.
    pub build_info: IntGaugeVec,
    /// `vmsh_config_info{hash}`.
    pub config_info: IntGaugeVec,
    /// `vmsh_state_writes_total{result}`.
    pub state_writes: IntCounterVec,
    /// `vmsh_state_write_duration_seconds`.
    pub state_write_duration: Histogram,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

const NCT: &[&str] = &["namespace", "cadence", "target"];

impl Metrics {
    /// Creates and registers every series, the duration histogram per namespace.
    pub fn new() -> prometheus::Result<Self> {
        Self::with_options(true)
    }

    /// Creates and registers every series; without `namespace_histograms` the duration
    /// histogram is labelled by cadence, target and status only. Its 18 series per
    /// (cadence, target, status) are most of a namespace's series, so large fleets keep
    /// `namespace` on counters and gauges only.
    pub fn with_options(namespace_histograms: bool) -> prometheus::Result<Self> {
        let r = Registry::new();
        // Process CPU, memory and file descriptors, for the dashboard and capacity planning.
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let m = Metrics {
            attempted: counter(&r, "vmsh_anchors_attempted_total", "Anchor attempts started", NCT)?,
            succeeded: counter(&r, "vmsh_anchors_succeeded_total", "Anchor attempts that succeeded", NCT)?,
            failed: counter(&r, "vmsh_anchors_failed_total", "Anchor attempts that failed", NCT)?,
            errors: counter(
                &r,
                "vmsh_anchor_errors_total",
                "Failed anchor attempts by error class (network, auth, validation, unknown)",
                &["namespace", "cadence", "target", "class"],
            )?,
            skipped: counter(
                &r,
                "vmsh_anchors_skipped_total",
                "Due cadences that had nothing to anchor",
                &["namespace", "cadence", "reason"],
            )?,
            duration: histogram_vec(
                &r,
                "vmsh_anchor_duration_seconds",
                "Time from driver start to result, per attempt",
                DURATION_BUCKETS,
                if namespace_histograms {
                    &["namespace", "cadence", "target", "status"]
                } else {
                    &["cadence", "target", "status"]
                },
            )?,
            namespace_histograms,
            backoff: int_gauge_vec(
                &r,
                "vmsh_backoff_state",
                "Highest backoff level k of the namespace's cadences (0 = healthy)",
                &["namespace"],
            )?,
            last_success: gauge_vec(
                &r,
                "vmsh_last_success_timestamp_seconds",
                "Start time of the last successful anchor, Unix seconds",
                &["namespace", "cadence"],
            )?,
            next_due: gauge_vec(
                &r,
                "vmsh_next_due_timestamp_seconds",
                "When the cadence is next due (including backoff), Unix seconds",
                &["namespace", "cadence"],
            )?,
            lag: histogram_vec(
                &r,
                "vmsh_schedule_lag_seconds",
                "Anchor start minus the time it was due",
                LAG_BUCKETS,
                &["cadence"],
            )?,
            pending: int_gauge_vec(
                &r,
                "vmsh_anchor_pending",
                "1 while the cadence's anchor is sent and waiting for confirmations",
                NCT,
            )?,
            pending_since: gauge_vec(
                &r,
                "vmsh_anchor_pending_since_timestamp_seconds",
                "When the pending anchor was sent, Unix seconds",
                &["namespace", "cadence"],
            )?,
            confirmations: int_gauge_vec(
                &r,
                "vmsh_anchor_confirmations",
                "Confirmations the pending anchor has so far",
                &["namespace", "cadence"],
            )?,
            resent: counter(
                &r,
                "vmsh_anchors_resent_total",
                "Pending anchors sent again because the target dropped them",
                NCT,
            )?,
            in_flight: int_gauge(&r, "vmsh_anchors_in_flight", "Anchor jobs running in the worker pool")?,
            queued: int_gauge(&r, "vmsh_anchor_queue_depth", "Anchor jobs waiting for a worker")?,
            reloads: counter(
                &r,
                "vmsh_config_reloads_total",
                "Config reloads after a content change, by result (success, failure)",
                &["result"],
            )?,
            reload_ok: int_gauge(
                &r,
                "vmsh_config_last_reload_successful",
                "1 if the config files on disk are the running config, 0 if the last change was rejected",
            )?,
            reload_time: {
                let g = Gauge::new(
                    "vmsh_config_last_reload_timestamp_seconds",
                    "When the config was last loaded or a change rejected, Unix seconds",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            namespaces: int_gauge(&r, "vmsh_namespaces", "Namespaces in the running config")?,
            build_info: int_gauge_vec(&r, "vmsh_build_info", "Scheduler build information", &["version"])?,
            config_info: int_gauge_vec(&r, "vmsh_config_info", "SHA-256 of the running namespaces file", &["hash"])?,
            state_writes: counter(
                &r,
                "vmsh_state_writes_total",
                "State writes (log appends and snapshots) by result",
                &["result"],
            )?,
            state_write_duration: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "vmsh_state_write_duration_seconds",
                        "Time to write and fsync a state log append or snapshot",
                    )
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            registry: r,
        };
        m.build_info.with_label_values(&[crate::VERSION]).set(1);
        for result in ["success", "failure"] {
            m.reloads.with_label_values(&[result]).inc_by(0);
            m.state_writes.with_label_values(&[result]).inc_by(0);
        }
        m.reload_ok.set(1);
        Ok(m)
    }

    /// Creates a cadence's series at zero so rates and alerts see them before the first event.
    pub fn init_cadence(&self, ns: &str, cadence: CadenceKind, target: &str) {
        let l = [ns, cadence.as_str(), target];
        self.attempted.with_label_values(&l).inc_by(0);
        self.succeeded.with_label_values(&l).inc_by(0);
        self.failed.with_label_values(&l).inc_by(0);
        self.backoff.with_label_values(&[ns]).add(0);
    }

    /// Records how long one attempt took.
    pub fn observe_duration(&self, ns: &str, cadence: CadenceKind, target: &str, status: &str, secs: f64) {
        let h = if self.namespace_histograms {
            self.duration.with_label_values(&[ns, cadence.as_str(), target, status])
        } else {
            self.duration.with_label_values(&[cadence.as_str(), target, status])
        };
        h.observe(secs);
    }

    /// Removes the series of one (cadence, target) of a namespace.
    pub fn forget_cadence_target(&self, ns: &str, cadence: CadenceKind, target: &str) {
        let l = [ns, cadence.as_str(), target];
        // A series that was never created is not an error worth reporting.
        let _ = self.attempted.remove_label_values(&l);
        let _ = self.pending.remove_label_values(&l);
        let _ = self.resent.remove_label_values(&l);
        let _ = self.succeeded.remove_label_values(&l);
        let _ = self.failed.remove_label_values(&l);
        for class in ErrorClass::ALL {
            let _ = self.errors.remove_label_values(&[ns, cadence.as_str(), target, class.as_str()]);
        }
        // Without the namespace label the histogram is shared by every namespace on the target.
        for status in ["success", "failure"] {
            if self.namespace_histograms {
                let _ = self.duration.remove_label_values(&[ns, cadence.as_str(), target, status]);
            }
        }
    }

    /// Removes the per-cadence series that do not depend on the target.
    pub fn forget_cadence(&self, ns: &str, cadence: CadenceKind) {
        let _ = self.last_success.remove_label_values(&[ns, cadence.as_str()]);
        let _ = self.next_due.remove_label_values(&[ns, cadence.as_str()]);
        let _ = self.pending_since.remove_label_values(&[ns, cadence.as_str()]);
        let _ = self.confirmations.remove_label_values(&[ns, cadence.as_str()]);
        let _ = self.skipped.remove_label_values(&[ns, cadence.as_str(), "no_batch"]);
    }

    /// Removes a namespace's own series.
    pub fn forget_namespace(&self, ns: &str) {
        let _ = self.backoff.remove_label_values(&[ns]);
    }

    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        // Encoding only fails for inconsistent metric families, which registration prevents.
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut buf);
        buf
    }
}
