//! Shared test support. The harness runs the real `vmsh-scheduler` binary in a temporary
//! VMSH_ROOT ([`root`]) on a free loopback port ([`scheduler`]), reads what it shows
//! ([`http`], [`health`]) and watches its process ([`proc`]); [`replicas`] runs a fleet of
//! them in cluster mode on a real etcd cluster ([`etcd`]) and checks what it left;
//! [`report`] prints the scenario lines of docs/RELIABILITY.md. The doubles stand in for the
//! targets it anchors to: a fake bitcoind ([`fake_bitcoind`]), a real TSA behind a loopback
//! endpoint ([`tsa_server`]), and targets that misbehave ([`faulty_server`]), lie
//! ([`lying_proxy`]) or echo ([`echo_server`]).

pub(crate) mod echo_server;
pub(crate) mod etcd;
pub(crate) mod fake_bitcoind;
pub(crate) mod faulty_server;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod lying_proxy;
pub(crate) mod proc;
pub(crate) mod replicas;
pub(crate) mod report;
pub(crate) mod root;
pub(crate) mod scheduler;
pub(crate) mod tsa_server;
pub(crate) mod wait;

pub(crate) use health::{CadenceParts, HealthParts, last_tick, wait_ticking};
pub(crate) use http::{http, http_with_head};
pub(crate) use root::{
    Root, exec_targets, file_sha256, lines, receipt_files, root_hex, stamps, write_file, write_file_atomic,
};
pub(crate) use scheduler::{BIN, Scheduler, base_env, command, metric, now_ms, run_verify};
pub(crate) use wait::wait_for;
