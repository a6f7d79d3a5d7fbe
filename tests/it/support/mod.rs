//! Shared test support. The harness runs the real `vmsh-scheduler` binary in a temporary
//! VMSH_ROOT ([`root`]) on a free loopback port ([`scheduler`]), and reads what it shows
//! ([`http`], [`health`]); the doubles stand in for the targets it anchors to.

pub mod fake_bitcoind;
pub mod health;
pub mod http;
pub mod proc;
pub mod report;
pub mod root;
pub mod scheduler;
pub mod tsa_server;
pub mod wait;

pub use health::{CadenceParts, HealthParts, last_tick, wait_ticking};
pub use http::{http, http_with_head};
pub use root::{
    Root, exec_targets, file_sha256, lines, receipt_files, root_hex, stamps, write_file, write_file_atomic,
};
pub use scheduler::{BIN, Scheduler, base_env, command, metric, now_ms, run_verify};
pub use wait::wait_for;
