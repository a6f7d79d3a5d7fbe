//! What a config reload does to a running namespace. Lines only: its series move with its
//! cadences' events.
//!
//! In fleet mode a namespace's own lines about a reload are at debug level: a reload that
//! changes 100,000 namespaces would otherwise write 100,000 lines, and its `config reloaded`
//! line already counts them.

use slog::{Logger, debug, info};

use crate::metrics::Metrics;
use crate::metrics::fleet::Mode;
use crate::model::CadenceKind;
use crate::telemetry::InternalEvent;

/// A reload changed the namespace, which carries on with its new cadences and their state.
pub(crate) struct NamespaceReconfigured<'a> {
    /// The namespace.
    pub ns: &'a str,
    /// Its cadences now.
    pub cadences: Vec<CadenceKind>,
}

impl InternalEvent for NamespaceReconfigured<'_> {
    fn emit(self, log: &Logger, metrics: &Metrics) {
        let cadences = self.cadences.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",");
        if in_fleet_mode(metrics) {
            debug!(log, "namespace reconfigured"; "ns" => self.ns, "cadences" => cadences);
        } else {
            info!(log, "namespace reconfigured"; "ns" => self.ns, "cadences" => cadences);
        }
    }
}

fn in_fleet_mode(metrics: &Metrics) -> bool {
    metrics.series.board().mode() == Mode::Fleet
}

/// The namespace left the config; it stops once its running anchors return.
pub(crate) struct NamespaceRemoved<'a> {
    /// The namespace.
    pub ns: &'a str,
}

impl InternalEvent for NamespaceRemoved<'_> {
    fn emit(self, log: &Logger, metrics: &Metrics) {
        if in_fleet_mode(metrics) {
            debug!(log, "namespace removed from config; stopping"; "ns" => self.ns);
        } else {
            info!(log, "namespace removed from config; stopping"; "ns" => self.ns);
        }
    }
}

/// The namespace came back into the config before it had stopped, and carries on.
pub(crate) struct NamespaceRevived<'a> {
    /// The namespace.
    pub ns: &'a str,
}

impl InternalEvent for NamespaceRevived<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        info!(log, "namespace back in the config before it stopped; carrying on"; "ns" => self.ns);
    }
}

/// Cluster mode: another replica owns the namespace now; it stops once its running anchors
/// return, and its claim goes once its state is durable.
pub(crate) struct NamespaceHandedOver<'a> {
    /// The namespace.
    pub ns: &'a str,
}

impl InternalEvent for NamespaceHandedOver<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        // One line per hand-over comes from the supervisor; this one is per namespace.
        debug!(log, "namespace moves to another replica; stopping once its running anchors return"; "ns" => self.ns);
    }
}

/// Cluster mode: the namespace was lost with the member lease; it stops at once and writes
/// nothing more.
pub(crate) struct NamespaceLost<'a> {
    /// The namespace.
    pub ns: &'a str,
}

impl InternalEvent for NamespaceLost<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        debug!(log, "namespace lost with the member lease; stopped, writing nothing more for it"; "ns" => self.ns);
    }
}

#[cfg(test)]
mod tests {
    use slog::Level;

    use super::*;
    use crate::telemetry::capture::Capture;

    fn one_line(event: impl InternalEvent) -> crate::telemetry::capture::Line {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        event.emit(&capture.logger(), &m);
        capture.only()
    }

    #[test]
    fn a_reconfigured_namespace_is_told_with_its_cadences_now() {
        let line =
            one_line(NamespaceReconfigured { ns: "dao:a", cadences: vec![CadenceKind::Fast, CadenceKind::Cold] });
        assert_eq!((line.level, line.msg.as_str()), (Level::Info, "namespace reconfigured"));
        assert_eq!((line.field("ns"), line.field("cadences")), ("dao:a", "fast,cold"));
    }

    #[test]
    fn in_fleet_mode_a_reload_s_lines_per_namespace_are_debug() {
        let m = Metrics::new().expect("metrics").with_fleet(crate::metrics::fleet::FleetPolicy {
            setting: crate::metrics::fleet::ModeSetting::Fleet,
            ..Default::default()
        });
        let capture = Capture::default();
        NamespaceReconfigured { ns: "dao:a", cadences: vec![CadenceKind::Fast] }.emit(&capture.logger(), &m);
        NamespaceRemoved { ns: "dao:b" }.emit(&capture.logger(), &m);
        let lines = capture.lines();
        let seen: Vec<(Level, &str)> = lines.iter().map(|l| (l.level, l.msg.as_str())).collect();
        assert_eq!(
            seen,
            [(Level::Debug, "namespace reconfigured"), (Level::Debug, "namespace removed from config; stopping")]
        );
    }

    #[test]
    fn a_removed_namespace_is_told_to_stop() {
        let line = one_line(NamespaceRemoved { ns: "dao:a" });
        assert_eq!((line.level, line.msg.as_str()), (Level::Info, "namespace removed from config; stopping"));
        assert_eq!(line.field("ns"), "dao:a");
    }

    #[test]
    fn a_namespace_back_before_it_stopped_is_told_to_carry_on() {
        let line = one_line(NamespaceRevived { ns: "dao:a" });
        assert_eq!(line.msg, "namespace back in the config before it stopped; carrying on");
        assert_eq!((line.level, line.field("ns")), (Level::Info, "dao:a"));
    }
}
