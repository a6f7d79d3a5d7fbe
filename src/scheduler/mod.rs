//! Scheduling: the supervisor and namespace actors, and the pure functions they call to
//! decide when a cadence is due, how long a failure waits, and what each event leads to.

pub mod attempt;
pub mod backoff;
pub mod config;
pub mod due;
pub mod effect;
pub mod namespace;
pub mod reload;
pub mod supervisor;
pub mod track;
