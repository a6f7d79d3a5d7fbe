//! Shared test support. The harness runs the real `vmsh-scheduler` binary in a temporary
//! VMSH_ROOT ([`root`]) on a free loopback port ([`scheduler`]), reads what it shows
//! ([`http`], [`health`]) and watches its process ([`proc`]); [`report`] prints the scenario
//! lines of docs/RELIABILITY.md. The doubles stand in for the targets it anchors to: a fake
//! bitcoind ([`fake_bitcoind`]), a real TSA behind a loopback endpoint ([`tsa_server`]), and
//! targets that misbehave ([`faulty_server`]), lie ([`lying_proxy`]) or echo ([`echo_server`]).

pub mod echo_server;
pub mod fake_bitcoind;
pub mod faulty_server;
pub mod health;
pub mod http;
pub mod lying_proxy;
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
