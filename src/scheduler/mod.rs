//! Scheduling: the supervisor and namespace actors, and the pure functions they call to
//! decide when a cadence is due and how long a failure waits.

pub mod attempt;
pub mod backoff;
pub mod due;
pub mod namespace;
pub mod supervisor;
pub mod track;
