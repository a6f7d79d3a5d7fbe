//! Durable storage of what anchors leave behind: the writer thread that makes writes durable
//! in rounds of the group commit, and the receipts it writes.

pub mod receipts;
pub mod writer;
