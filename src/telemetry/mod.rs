//! What the scheduler tells its operators: structured log lines ([`log`]).

pub mod log;

pub use log::{LogGuard, discard, init};
