//! A logger whose lines are kept for tests to read back.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use slog::{Drain, Key, Level, Logger, OwnedKVList, Record, Serializer};

/// One line: its level, message and every field (the record's and the logger's), as text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    pub(crate) level: Level,
    pub(crate) msg: String,
    pub(crate) fields: BTreeMap<String, String>,
}

impl Line {
    /// The field `key`, or a panic naming the line.
    pub(crate) fn field(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or_else(|| panic!("no field {key} in {self:?}"))
    }
}

/// Keeps the lines a logger writes.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<Line>>>);

impl Capture {
    /// A logger writing here, at every level.
    pub(crate) fn logger(&self) -> Logger {
        Logger::root(self.clone().fuse(), slog::o!())
    }

    /// The lines written so far.
    pub(crate) fn lines(&self) -> Vec<Line> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The only line written, or a panic saying how many there were.
    pub(crate) fn only(&self) -> Line {
        let lines = self.lines();
        assert_eq!(lines.len(), 1, "one line, not {lines:?}");
        lines.into_iter().next().expect("one line")
    }
}

struct Fields(BTreeMap<String, String>);

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        self.0.insert(key.to_string(), val.to_string());
        Ok(())
    }

    fn emit_none(&mut self, key: Key) -> slog::Result {
        self.0.insert(key.to_string(), "null".to_string());
        Ok(())
    }
}

impl Drain for Capture {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = Fields(BTreeMap::new());
        // Serializing into a map cannot fail.
        let _ = slog::KV::serialize(values, record, &mut fields);
        let _ = slog::KV::serialize(&record.kv(), record, &mut fields);
        let line = Line { level: record.level(), msg: record.msg().to_string(), fields: fields.0 };
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(line);
        Ok(())
    }
}

/// The value of the series `series` (its name and labels as /metrics writes them, labels in
/// alphabetical order), if /metrics shows it.
pub(crate) fn sample(metrics: &crate::metrics::Metrics, series: &str) -> Option<f64> {
    metrics.render().lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
