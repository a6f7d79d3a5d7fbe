//! Scheduling: the supervisor and namespace actors, and the pure functions they call to
//! decide when a cadence is due, how long a failure waits, and what each event leads to.

pub(crate) mod alarm;
pub(crate) mod attempt;
pub mod backoff;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod control;
pub(crate) mod due;
pub(crate) mod effect;
pub(crate) mod gate;
pub(crate) mod jitter;
pub(crate) mod namespace;
pub(crate) mod reload;
pub(crate) mod supervisor;
pub(crate) mod track;
