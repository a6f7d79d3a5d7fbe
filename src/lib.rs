//! vmsh-scheduler anchors each VaultMesh namespace's latest Merkle root to external targets
//! on per-namespace cadences, with φ-backoff, durable state, metrics and health.
//!
//! The binary (`src/main.rs`) only parses the command line and environment; everything else
//! lives here so the integration tests can reach it.

pub mod admin;
pub mod anchor;
pub mod app;
pub mod batch;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub(crate) mod fsread;
pub mod health;
pub(crate) mod heap;
pub mod http;
pub mod metrics;
pub mod model;
pub mod response;
pub mod scheduler;
pub mod stdio;
pub mod storage;
pub mod telemetry;
pub(crate) mod worker_thread;

/// The scheduler's version, written into receipts, logs and `vmsh_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
