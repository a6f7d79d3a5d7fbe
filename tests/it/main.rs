//! Integration tests: the real binary, in a temporary root, on a free loopback port.
//! One test binary (modules per area) keeps link time down; what the suites share (the
//! harness and the doubles of targets) is in `support`.

mod admin;
mod adversarial;
mod aggregate;
mod anchoring;
mod architecture;
mod backoff;
mod btc;
mod cluster;
mod cluster_scenarios;
mod deploy;
mod evm;
mod fleet;
mod hostile;
mod inprocess;
mod lifecycle;
mod merkle;
mod migrate;
mod pool;
mod prometheus;
mod readme;
mod reliability;
mod reload;
mod security;
mod smoke;
mod startup;
mod status_page;
mod support;
mod tsa;
mod verify;
