//! What happens to the config files: loaded, reloaded, rejected, back to the running config.
//!
//! Metrics: `vmsh_config_reloads_total{result}`, `vmsh_config_last_reload_successful`,
//! `vmsh_config_last_reload_timestamp_seconds`, `vmsh_config_info{hash}` and `vmsh_namespaces`.

use slog::{Logger, error, info};

use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::model::{MonoMs, WallMs};
use crate::telemetry::InternalEvent;

/// The config read at start-up is in force.
pub(crate) struct ConfigLoaded<'a> {
    /// SHA-256 of the namespaces file.
    pub hash: &'a str,
    /// Namespaces in it.
    pub namespaces: usize,
    /// When (Unix ms).
    pub at_ms: WallMs,
}

impl InternalEvent for ConfigLoaded<'_> {
    fn emit(self, _: &Logger, metrics: &Metrics) {
        // Start-up has a line of its own, naming what it loaded.
        in_force(metrics, None, self.hash, self.namespaces, self.at_ms);
    }
}

/// A changed config was validated and put in force.
pub(crate) struct ConfigReloaded<'a> {
    /// SHA-256 of the namespaces file that was in force.
    pub previous_hash: &'a str,
    /// SHA-256 of the namespaces file now in force.
    pub hash: &'a str,
    /// Namespaces started or taken back.
    pub added: usize,
    /// Namespaces retired.
    pub removed: usize,
    /// Namespaces reconfigured in place.
    pub changed: usize,
    /// Namespaces in the config now.
    pub namespaces: usize,
    /// From the files read to every actor told (monotonic ms).
    pub took_ms: MonoMs,
    /// When (Unix ms).
    pub at_ms: WallMs,
}

impl InternalEvent for ConfigReloaded<'_> {
    fn emit(self, log: &Logger, metrics: &Metrics) {
        metrics.reloads.with_label_values(&["success"]).inc();
        in_force(metrics, Some(self.previous_hash), self.hash, self.namespaces, self.at_ms);
        info!(log, "config reloaded";
            "hash" => self.hash, "added" => self.added, "removed" => self.removed, "changed" => self.changed,
            "namespaces" => self.namespaces, "took_ms" => self.took_ms);
    }
}

/// Puts the gauges of a config in force: its hash, its namespaces, and a successful load.
fn in_force(metrics: &Metrics, previous_hash: Option<&str>, hash: &str, namespaces: usize, at_ms: WallMs) {
    if let Some(old) = previous_hash {
        // A hash that had no series (the same file again) is nothing to report.
        let _ = metrics.config_info.remove_label_values(&[old]);
    }
    metrics.config_info.with_label_values(&[hash]).set(1);
    metrics.namespaces.set(i64::try_from(namespaces).unwrap_or(i64::MAX));
    metrics.reload_ok.set(1);
    metrics.reload_time.set(at_ms as f64 / 1000.0);
}

/// A change to the config files did not validate; the running config stays in force. Each
/// problem is a line of its own.
pub(crate) struct ConfigRejected<'a> {
    /// Every problem found.
    pub errors: &'a [ConfigError],
    /// When (Unix ms).
    pub at_ms: WallMs,
}

impl InternalEvent for ConfigRejected<'_> {
    fn emit(self, log: &Logger, metrics: &Metrics) {
        for e in self.errors {
            error!(log, "config change rejected; the running config stays in force";
                "file" => %e.file.display(), "ns" => e.namespace.as_deref().unwrap_or_default(),
                "field" => &e.field, "reason" => &e.reason, "err" => %e);
        }
        metrics.reloads.with_label_values(&["failure"]).inc();
        metrics.reload_ok.set(0);
        metrics.reload_time.set(self.at_ms as f64 / 1000.0);
    }
}

/// After a rejected change, the files on disk are the running config again.
pub(crate) struct ConfigRestored;

impl InternalEvent for ConfigRestored {
    fn emit(self, log: &Logger, metrics: &Metrics) {
        metrics.reload_ok.set(1);
        info!(log, "config files match the running config again");
    }
}

/// SIGHUP asked for the config files to be looked at now.
pub(crate) struct ConfigCheckRequested;

impl InternalEvent for ConfigCheckRequested {
    fn emit(self, log: &Logger, _: &Metrics) {
        info!(log, "SIGHUP: checking the config files now");
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use slog::Level;

    use super::*;
    use crate::telemetry::capture::{Capture, sample};

    fn reloads(m: &Metrics, result: &str) -> Option<f64> {
        sample(m, &format!("vmsh_config_reloads_total{{result=\"{result}\"}}"))
    }

    fn last_ok(m: &Metrics) -> Option<f64> {
        sample(m, "vmsh_config_last_reload_successful")
    }

    fn reloaded<'a>(previous_hash: &'a str, hash: &'a str) -> ConfigReloaded<'a> {
        ConfigReloaded {
            previous_hash,
            hash,
            added: 2,
            removed: 1,
            changed: 3,
            namespaces: 9,
            took_ms: 12,
            at_ms: 1_700_000_000_500,
        }
    }

    #[test]
    fn the_config_loaded_at_start_up_sets_its_gauges_without_counting_a_reload_or_a_line() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        ConfigLoaded { hash: "h1", namespaces: 4, at_ms: 1_700_000_000_000 }.emit(&capture.logger(), &m);
        assert_eq!(sample(&m, r#"vmsh_config_info{hash="h1"}"#), Some(1.0));
        assert_eq!(sample(&m, "vmsh_namespaces"), Some(4.0));
        assert_eq!(last_ok(&m), Some(1.0));
        assert_eq!(sample(&m, "vmsh_config_last_reload_timestamp_seconds"), Some(1_700_000_000.0));
        assert_eq!((reloads(&m, "success"), reloads(&m, "failure")), (Some(0.0), Some(0.0)));
        assert!(capture.lines().is_empty());
    }

    #[test]
    fn a_reload_is_counted_replaces_the_config_hash_and_is_told_with_what_it_changed() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        ConfigLoaded { hash: "h1", namespaces: 4, at_ms: 0 }.emit(&capture.logger(), &m);
        m.reload_ok.set(0);
        reloaded("h1", "h2").emit(&capture.logger(), &m);
        assert_eq!(reloads(&m, "success"), Some(1.0));
        assert_eq!(sample(&m, r#"vmsh_config_info{hash="h1"}"#), None, "the old hash is gone");
        assert_eq!(sample(&m, r#"vmsh_config_info{hash="h2"}"#), Some(1.0));
        assert_eq!(sample(&m, "vmsh_namespaces"), Some(9.0));
        assert_eq!(last_ok(&m), Some(1.0));
        assert_eq!(sample(&m, "vmsh_config_last_reload_timestamp_seconds"), Some(1_700_000_000.5));
        let line = capture.only();
        assert_eq!((line.level, line.msg.as_str()), (Level::Info, "config reloaded"));
        let told: Vec<&str> =
            ["hash", "added", "removed", "changed", "namespaces", "took_ms"].iter().map(|k| line.field(k)).collect();
        assert_eq!(told, ["h2", "2", "1", "3", "9", "12"]);
    }

    #[test]
    fn a_reload_of_the_same_hash_keeps_its_config_info_series() {
        let m = Metrics::new().expect("metrics");
        reloaded("h1", "h1").emit(&crate::telemetry::discard(), &m);
        assert_eq!(sample(&m, r#"vmsh_config_info{hash="h1"}"#), Some(1.0));
    }

    #[test]
    fn a_rejected_change_is_counted_marks_the_last_reload_failed_and_tells_each_problem_on_its_own_line() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        let errors = [
            ConfigError {
                file: PathBuf::from("ns.yaml"),
                namespace: Some("dao:a".into()),
                field: "cadence.fast.every".into(),
                reason: "is not a duration".into(),
            },
            ConfigError {
                file: PathBuf::from("anchors.yaml"),
                namespace: None,
                field: "exec".into(),
                reason: "bad".into(),
            },
        ];
        ConfigRejected { errors: &errors, at_ms: 1_700_000_001_000 }.emit(&capture.logger(), &m);
        assert_eq!((reloads(&m, "success"), reloads(&m, "failure")), (Some(0.0), Some(1.0)));
        assert_eq!(last_ok(&m), Some(0.0));
        assert_eq!(sample(&m, "vmsh_config_last_reload_timestamp_seconds"), Some(1_700_000_001.0));
        let lines = capture.lines();
        assert_eq!(lines.len(), 2);
        for (line, e) in lines.iter().zip(&errors) {
            assert_eq!(
                (line.level, line.msg.as_str()),
                (Level::Error, "config change rejected; the running config stays in force")
            );
            assert_eq!(line.field("file"), e.file.display().to_string());
            assert_eq!((line.field("field"), line.field("reason")), (e.field.as_str(), e.reason.as_str()));
            assert_eq!(line.field("err"), e.to_string());
        }
        assert_eq!((lines[0].field("ns"), lines[1].field("ns")), ("dao:a", ""), "no namespace: an empty ns");
    }

    #[test]
    fn files_back_to_the_running_config_mark_the_last_reload_successful_and_say_so() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        m.reload_ok.set(0);
        ConfigRestored.emit(&capture.logger(), &m);
        assert_eq!(last_ok(&m), Some(1.0));
        assert_eq!((reloads(&m, "success"), reloads(&m, "failure")), (Some(0.0), Some(0.0)), "no reload counted");
        let line = capture.only();
        assert_eq!((line.level, line.msg.as_str()), (Level::Info, "config files match the running config again"));
    }

    #[test]
    fn a_sighup_check_is_told_at_info() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        ConfigCheckRequested.emit(&capture.logger(), &m);
        let line = capture.only();
        assert_eq!((line.level, line.msg.as_str()), (Level::Info, "SIGHUP: checking the config files now"));
    }
}
