//! Cluster mode's building blocks: an etcd client, which replica owns which namespace, and
//! the fenced commit points of state and outputs.

pub mod actor;
pub mod claim;
pub mod connect;
pub mod etcd;
pub mod ledger;
pub mod member;
pub mod ownership;
