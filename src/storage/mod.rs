//! Everything the scheduler keeps on disk, and how it stays there: crash-safe writes, the
//! group commit and the writer thread that does an anchor's durable writes in its rounds,
//! receipts, the scheduler's state, and the locks that give one process each state file and
//! root.

pub mod chain;
pub mod durable;
pub mod group_commit;
pub mod lockfile;
pub mod receipts;
pub mod state;
pub mod writer;
