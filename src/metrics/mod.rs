//! The Prometheus registry and every series the scheduler exports besides actix-web-prom's
//! HTTP series. Names and labels are public interface: docs/HTTP.md, the dashboard and the
//! alert rules use exactly these.

use prometheus::{
    CounterVec, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use std::sync::Arc;

use crate::model::CadenceKind;

pub mod fleet;
pub mod lanes;
pub(crate) mod namespace;
pub(crate) mod tsa;

use namespace::FAMILIES;
pub use namespace::{Kind, NamespaceSeries, SeriesTable};
pub use tsa::{TsaBoard, TsaFailure, TsaUrlStatus};

/// Anchor duration buckets, 10 ms to 10 min.
pub const DURATION_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Schedule lag buckets, 1 ms to 5 min.
pub const LAG_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Leaves per aggregate anchor, 1 to 65,536.
pub const LEAVES_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0, 65536.0];

/// Every metric of the scheduler.
pub struct Metrics {
    /// The registry /metrics serves (shared with actix-web-prom).
    pub registry: Registry,
    /// `vmsh_anchor_duration_seconds{namespace,cadence,target,status}`, or without
    /// `namespace` when [`Metrics::with_options`] says so; observe through
    /// [`Metrics::observe_duration`].
    pub duration: HistogramVec,
    /// Whether `duration` carries the namespace label.
    namespace_histograms: bool,
    /// Whether `duration`'s series were made in fleet mode (with an empty namespace).
    duration_fleet: std::sync::atomic::AtomicBool,
    /// The series labelled by namespace (counters and gauges), outside the registry.
    pub series: SeriesTable,
    /// `vmsh_schedule_lag_seconds{cadence}`: anchor start minus due time.
    pub lag: HistogramVec,
    /// `vmsh_anchors_in_flight`.
    pub in_flight: IntGauge,
    /// `vmsh_anchor_queue_depth`.
    pub queued: IntGauge,
    /// `vmsh_target_concurrency{target}`: how many of the target's jobs may run at once.
    pub target_concurrency: IntGaugeVec,
    /// `vmsh_target_running{target}`: the target's jobs running.
    pub target_running: IntGaugeVec,
    /// `vmsh_target_queued{target}`: the target's jobs waiting for a free slot.
    pub target_queued: IntGaugeVec,
    /// `vmsh_target_saturated{target}`: 1 while the target's jobs wait over a second for a slot.
    pub target_saturated: IntGaugeVec,
    /// `vmsh_target_saturated_seconds_total{target}`: time the target spent saturated.
    pub target_saturated_seconds: CounterVec,
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
    /// `vmsh_batch_reads_stuck`: batch reads left behind because they did not return.
    pub batch_reads_stuck: IntGauge,
    /// `vmsh_aggregate_leaves{target}`: leaves per aggregate anchored.
    pub aggregate_leaves: HistogramVec,
    /// `vmsh_aggregate_anchors_saved_total{target}`: anchors aggregation did not send (size − 1
    /// per aggregate anchored).
    pub aggregate_saved: IntCounterVec,
    /// `vmsh_aggregate_collecting_age_seconds{target}`: how long the target's collecting
    /// aggregates have been open (0 when none collects).
    pub aggregate_age: GaugeVec,
    /// `vmsh_aggregate_collecting_leaves{target}`: members waiting in the target's
    /// collecting aggregates.
    pub aggregate_waiting: IntGaugeVec,
    // -- cluster mode: registered by [`Metrics::register_cluster`], so a single process
    // exports none of them --
    /// `vmsh_cluster_ownership_changes_total{change}`: namespaces this replica gained,
    /// released (handed over) or lost (its lease expired).
    pub ownership_changes: IntCounterVec,
    /// `vmsh_cluster_fenced_writes_total{what}`: writes etcd refused because this replica
    /// no longer owned what it wrote.
    pub fenced_writes: IntCounterVec,
    /// `vmsh_cluster_namespaces_owned`: namespaces this replica holds.
    pub owned: IntGauge,
    /// `vmsh_cluster_members`: live members, as the last round read them.
    pub members: IntGauge,
    /// `vmsh_cluster_lease_valid`: 1 while this replica's lease can be counted on.
    pub lease_valid: IntGauge,
    /// `vmsh_cluster_unowned_namespaces`: configured namespaces nobody held at the last round.
    pub unowned: IntGauge,
    /// `vmsh_cluster_unowned_max_age_seconds`: how long the longest-unowned of them has been.
    pub unowned_age: Gauge,
    /// `vmsh_pause_alert_after_seconds`: the age past which a pause alerts
    /// (`VMSH_PAUSE_ALERT_AFTER_S`).
    pub pause_alert_after: Gauge,
    // -- the admin API: registered by [`Metrics::register_admin`] --
    /// `vmsh_admin_requests_total{action,code}`: admin API requests by action and answer.
    pub admin_requests: IntCounterVec,
    /// `vmsh_admin_token_file_valid`: 0 while the token file on disk is refused (the tokens
    /// read before stay in force).
    pub admin_tokens_ok: IntGauge,
    // -- rfc3161 TSAs --
    /// The TSA board, rendered at each scrape once start-up hands it over.
    tsa: std::sync::OnceLock<Arc<TsaBoard>>,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
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

impl Metrics {
    /// Creates and registers every series, the duration histogram per namespace.
    pub fn new() -> prometheus::Result<Self> {
        Self::with_options(true)
    }

    /// Exports cluster mode's series (a single process has no use for them).
    pub fn register_cluster(&self) -> prometheus::Result<()> {
        let r = &self.registry;
        for change in ["gained", "released", "lost"] {
            self.ownership_changes.with_label_values(&[change]);
        }
        for what in ["state", "receipt", "journal"] {
            self.fenced_writes.with_label_values(&[what]);
        }
        r.register(Box::new(self.ownership_changes.clone()))?;
        r.register(Box::new(self.fenced_writes.clone()))?;
        r.register(Box::new(self.owned.clone()))?;
        r.register(Box::new(self.members.clone()))?;
        r.register(Box::new(self.lease_valid.clone()))?;
        r.register(Box::new(self.unowned.clone()))?;
        r.register(Box::new(self.unowned_age.clone()))
    }

    /// Exports the admin API's series (only when it is on).
    pub fn register_admin(&self) -> prometheus::Result<()> {
        self.admin_tokens_ok.set(1);
        self.registry.register(Box::new(self.admin_requests.clone()))?;
        self.registry.register(Box::new(self.admin_tokens_ok.clone()))
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
            duration_fleet: std::sync::atomic::AtomicBool::new(false),
            series: if namespace_histograms { SeriesTable::default() } else { SeriesTable::counting_target_users() },
            lag: histogram_vec(
                &r,
                "vmsh_schedule_lag_seconds",
                "Anchor start minus the time it was due",
                LAG_BUCKETS,
                &["cadence"],
            )?,
            in_flight: int_gauge(&r, "vmsh_anchors_in_flight", "Anchor jobs running in the worker pool")?,
            queued: int_gauge(&r, "vmsh_anchor_queue_depth", "Anchor jobs waiting for a worker")?,
            target_concurrency: int_gauge_vec(
                &r,
                "vmsh_target_concurrency",
                "How many of the target's anchor jobs may run at once (its concurrency)",
                &["target"],
            )?,
            target_running: int_gauge_vec(&r, "vmsh_target_running", "The target's anchor jobs running", &["target"])?,
            target_queued: int_gauge_vec(
                &r,
                "vmsh_target_queued",
                "The target's anchor jobs waiting for a free slot",
                &["target"],
            )?,
            target_saturated: int_gauge_vec(
                &r,
                "vmsh_target_saturated",
                "1 while the target's anchor jobs have waited over a second for a free slot (raise its concurrency)",
                &["target"],
            )?,
            target_saturated_seconds: {
                let c = CounterVec::new(
                    Opts::new(
                        "vmsh_target_saturated_seconds_total",
                        "Seconds the target spent saturated (jobs waiting over a second for a free slot)",
                    ),
                    &["target"],
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
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
            batch_reads_stuck: int_gauge(
                &r,
                "vmsh_batch_reads_stuck",
                "Batch reads that did not return within VMSH_BATCH_READ_TIMEOUT_S and still have not, each holding a thread",
            )?,
            ownership_changes: IntCounterVec::new(
                Opts::new(
                    "vmsh_cluster_ownership_changes_total",
                    "Cluster mode: namespaces this replica gained, released (handed over) or lost (lease expired)",
                ),
                &["change"],
            )?,
            fenced_writes: IntCounterVec::new(
                Opts::new(
                    "vmsh_cluster_fenced_writes_total",
                    "Cluster mode: writes etcd refused because this replica no longer owned what it wrote",
                ),
                &["what"],
            )?,
            owned: IntGauge::new("vmsh_cluster_namespaces_owned", "Cluster mode: namespaces this replica holds")?,
            members: IntGauge::new("vmsh_cluster_members", "Cluster mode: live members at the last round")?,
            lease_valid: IntGauge::new(
                "vmsh_cluster_lease_valid",
                "Cluster mode: 1 while this replica's member lease can be counted on (it starts anchors)",
            )?,
            unowned: IntGauge::new(
                "vmsh_cluster_unowned_namespaces",
                "Cluster mode: configured namespaces nobody held at the last round",
            )?,
            unowned_age: Gauge::new(
                "vmsh_cluster_unowned_max_age_seconds",
                "Cluster mode: how long the longest-unowned configured namespace has had no owner",
            )?,
            aggregate_leaves: histogram_vec(
                &r,
                "vmsh_aggregate_leaves",
                "Leaves (namespace anchors) per aggregate anchored, by target",
                LEAVES_BUCKETS,
                &["target"],
            )?,
            aggregate_saved: counter(
                &r,
                "vmsh_aggregate_anchors_saved_total",
                "Anchors aggregation saved: the leaves of each aggregate anchored, minus one",
                &["target"],
            )?,
            aggregate_age: {
                let g = GaugeVec::new(
                    Opts::new(
                        "vmsh_aggregate_collecting_age_seconds",
                        "How long the oldest aggregate collecting for the target has been open; 0 when none",
                    ),
                    &["target"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            aggregate_waiting: int_gauge_vec(
                &r,
                "vmsh_aggregate_collecting_leaves",
                "Namespace anchors waiting in the target's collecting aggregates",
                &["target"],
            )?,
            pause_alert_after: {
                let g = Gauge::new(
                    "vmsh_pause_alert_after_seconds",
                    "Age of a pause past which VmshCadencePausedTooLong fires (VMSH_PAUSE_ALERT_AFTER_S)",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            admin_requests: IntCounterVec::new(
                Opts::new(
                    "vmsh_admin_requests_total",
                    "Admin API requests, by action (pause, resume, trigger, skip, paused, other) and HTTP status",
                ),
                &["action", "code"],
            )?,
            admin_tokens_ok: IntGauge::new(
                "vmsh_admin_token_file_valid",
                "0 while the admin token file on disk is refused (the tokens read before stay in force), else 1",
            )?,
            registry: r,
            tsa: std::sync::OnceLock::new(),
        };
        m.build_info.with_label_values(&[crate::VERSION]).set(1);
        for result in ["success", "failure"] {
            m.reloads.with_label_values(&[result]).inc_by(0);
            m.state_writes.with_label_values(&[result]).inc_by(0);
        }
        m.reload_ok.set(1);
        Ok(m)
    }

    /// The series of namespace `name`, created on first use; its actor keeps the handle and
    /// hands it back to [`Metrics::forget_namespace`] when it stops.
    pub fn namespace<N: AsRef<str> + Into<Arc<str>>>(&self, name: N) -> Arc<NamespaceSeries> {
        self.series.namespace(name)
    }

    /// Renders `board`'s TSA series on every scrape from now on; a second board is ignored
    /// (there is one per process).
    pub fn show_tsa(&self, board: Arc<TsaBoard>) {
        let _ = self.tsa.set(board);
    }

    /// Records how long one attempt took.
    pub fn observe_duration(&self, ns: &str, cadence: CadenceKind, target: &str, status: &str, secs: f64) {
        // Fleet mode keeps one histogram per (cadence, target, status): an empty label is none.
        self.sync_duration_mode();
        let ns = if self.series.board().mode() == fleet::Mode::Fleet { "" } else { ns };
        let h = if self.namespace_histograms {
            self.duration.with_label_values(&[ns, cadence.as_str(), target, status])
        } else {
            self.duration.with_label_values(&[cadence.as_str(), target, status])
        };
        h.observe(secs);
    }

    /// Chooses fleet mode by `policy` from now on.
    pub fn with_fleet(mut self, policy: fleet::FleetPolicy) -> Self {
        let series = std::mem::take(&mut self.series);
        self.series = series.with_board(Arc::new(fleet::FleetBoard::new(policy)));
        self
    }

    /// The mode, and what fleet mode shows.
    pub fn fleet(&self) -> &Arc<fleet::FleetBoard> {
        self.series.board()
    }

    /// Starts the duration histogram afresh when the mode changed since its series were
    /// made: they are labelled the other way now (by namespace, or not).
    fn sync_duration_mode(&self) {
        let fleet = self.series.board().mode() == fleet::Mode::Fleet;
        if self.namespace_histograms && self.duration_fleet.swap(fleet, std::sync::atomic::Ordering::Relaxed) != fleet {
            self.duration.reset();
        }
    }

    /// Removes the series of one (cadence, target) of a namespace.
    pub fn forget_cadence_target(&self, series: &NamespaceSeries, cadence: CadenceKind, target: &str) {
        series.forget_cadence_target(cadence, target, || self.forget_shared_duration(cadence, target));
        if self.namespace_histograms {
            for status in ["success", "failure"] {
                // A series that was never created is not an error worth reporting.
                let _ = self.duration.remove_label_values(&[series.name(), cadence.as_str(), target, status]);
            }
        }
    }

    /// Removes a namespace's own series, and the shared ones it was the last to use.
    pub fn forget_namespace(&self, series: &Arc<NamespaceSeries>) {
        for (cadence, target) in series.targets() {
            self.forget_cadence_target(series, cadence, &target);
        }
        self.series.forget(series, |cadence, target| self.forget_shared_duration(cadence, target));
    }

    /// Drops what is kept of every target `keep` refuses (one no namespace names any more):
    /// fleet mode's totals, and the shared duration histogram, whose users fleet mode does
    /// not count per namespace.
    pub fn retain_targets(&self, keep: impl Fn(&str) -> bool) {
        for (cadence, target) in self.series.retain_totals(keep) {
            self.forget_shared_duration(cadence, &target);
        }
    }

    /// Removes the duration histogram of (cadence, target) when it is shared by namespaces
    /// (`namespace_histograms` off), once no namespace uses the target.
    fn forget_shared_duration(&self, cadence: CadenceKind, target: &str) {
        if !self.namespace_histograms {
            for status in ["success", "failure"] {
                let _ = self.duration.remove_label_values(&[cadence.as_str(), target, status]);
            }
        }
    }

    /// Every family /metrics can show besides actix-web-prom's and the process collector's,
    /// cluster mode's included: name, type and label names, for checks that dashboards and
    /// alerts use real names.
    pub fn families(&self) -> Vec<(String, Kind, Vec<String>)> {
        let mut out: Vec<(String, Kind, Vec<String>)> = FAMILIES
            .iter()
            .chain(tsa::FAMILIES.iter())
            .chain(fleet::FAMILIES.iter())
            .map(|f| (f.name.to_string(), f.kind, f.labels.iter().map(|l| (*l).to_string()).collect()))
            .collect();
        let registered: [(&dyn prometheus::core::Collector, Kind); 32] = [
            (&self.duration, Kind::Histogram),
            (&self.lag, Kind::Histogram),
            (&self.in_flight, Kind::Gauge),
            (&self.queued, Kind::Gauge),
            (&self.target_concurrency, Kind::Gauge),
            (&self.target_running, Kind::Gauge),
            (&self.target_queued, Kind::Gauge),
            (&self.target_saturated, Kind::Gauge),
            (&self.target_saturated_seconds, Kind::Counter),
            (&self.reloads, Kind::Counter),
            (&self.reload_ok, Kind::Gauge),
            (&self.reload_time, Kind::Gauge),
            (&self.namespaces, Kind::Gauge),
            (&self.build_info, Kind::Gauge),
            (&self.config_info, Kind::Gauge),
            (&self.state_writes, Kind::Counter),
            (&self.state_write_duration, Kind::Histogram),
            (&self.batch_reads_stuck, Kind::Gauge),
            (&self.aggregate_leaves, Kind::Histogram),
            (&self.aggregate_saved, Kind::Counter),
            (&self.aggregate_age, Kind::Gauge),
            (&self.aggregate_waiting, Kind::Gauge),
            // Cluster mode's, registered only there.
            (&self.ownership_changes, Kind::Counter),
            (&self.fenced_writes, Kind::Counter),
            (&self.owned, Kind::Gauge),
            (&self.members, Kind::Gauge),
            (&self.lease_valid, Kind::Gauge),
            (&self.unowned, Kind::Gauge),
            (&self.unowned_age, Kind::Gauge),
            (&self.pause_alert_after, Kind::Gauge),
            // The admin API's, registered only when it is on.
            (&self.admin_requests, Kind::Counter),
            (&self.admin_tokens_ok, Kind::Gauge),
        ];
        for (c, kind) in registered {
            for d in c.desc() {
                out.push((d.fq_name.clone(), kind, d.variable_labels.clone()));
            }
        }
        out
    }

    /// Renders everything in the Prometheus text format, in chunks that together are
    /// [`Self::render`]'s text.
    pub fn render_chunks(&self) -> prometheus::Result<Vec<actix_web::web::Bytes>> {
        self.sync_duration_mode();
        let mut registry = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut registry)?;
        let mut chunks = vec![actix_web::web::Bytes::from(registry)];
        chunks.extend(self.series.render_chunks());
        if let Some(board) = self.tsa.get() {
            let mut text = String::new();
            board.render_into(&mut text);
            if !text.is_empty() {
                chunks.push(actix_web::web::Bytes::from(text));
            }
        }
        Ok(chunks)
    }

    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        // Encoding only fails for inconsistent metric families, which registration prevents.
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut buf);
        self.series.render_into(&mut buf);
        if let Some(board) = self.tsa.get() {
            board.render_into(&mut buf);
        }
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `vmsh_anchor_duration_seconds` samples of `target`.
    fn duration_lines(m: &Metrics, target: &str) -> usize {
        let label = format!("target=\"{target}\"");
        m.render().lines().filter(|l| l.starts_with("vmsh_anchor_duration_seconds") && l.contains(&label)).count()
    }

    #[test]
    fn a_shared_duration_histogram_goes_with_the_last_namespace_on_its_target() {
        let m = Metrics::with_options(false).expect("metrics");
        let (a, b) = (m.namespace("a"), m.namespace("b"));
        for s in [&a, &b] {
            s.init_cadence(CadenceKind::Fast, "local:x");
            s.succeeded(CadenceKind::Fast, "local:x");
            m.observe_duration(s.name(), CadenceKind::Fast, "local:x", "success", 0.1);
        }
        assert!(duration_lines(&m, "local:x") > 0);
        m.forget_cadence_target(&a, CadenceKind::Fast, "local:x");
        assert!(duration_lines(&m, "local:x") > 0, "b still anchors to local:x");
        // Forgotten twice: counted once.
        m.forget_cadence_target(&a, CadenceKind::Fast, "local:x");
        assert!(duration_lines(&m, "local:x") > 0, "b still anchors to local:x");
        m.forget_cadence_target(&b, CadenceKind::Fast, "local:x");
        assert_eq!(duration_lines(&m, "local:x"), 0, "nobody anchors to local:x any more");

        // A namespace that stops takes its targets with it.
        let c = m.namespace("c");
        c.failed(CadenceKind::Cold, "local:y", crate::model::ErrorClass::Network);
        m.observe_duration("c", CadenceKind::Cold, "local:y", "failure", 0.2);
        assert!(duration_lines(&m, "local:y") > 0);
        m.forget_namespace(&c);
        assert_eq!(duration_lines(&m, "local:y"), 0);
    }

    #[test]
    fn a_namespace_duration_histogram_goes_with_its_namespace() {
        let m = Metrics::new().expect("metrics");
        let a = m.namespace("a");
        a.init_cadence(CadenceKind::Fast, "local:x");
        m.observe_duration("a", CadenceKind::Fast, "local:x", "success", 0.1);
        assert!(duration_lines(&m, "local:x") > 0);
        m.forget_namespace(&a);
        assert_eq!(duration_lines(&m, "local:x"), 0);
    }
}
