//! Cluster mode's building blocks: an etcd client, and which replica owns which namespace.

pub mod claim;
pub mod etcd;
pub mod member;
pub mod ownership;
