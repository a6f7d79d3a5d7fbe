//! The shared vocabulary: the words every part of the scheduler uses to talk to every other
//! (cadence kinds, targets, times). It imports nothing of ours, so anything may import it
//! without making a cycle.

pub mod aggregate;
pub mod anchor;
pub mod cadence;
pub mod digest;
pub mod evidence;
pub mod fsname;
pub mod merkle;
pub mod probe;
pub mod receipt;
pub mod target;
pub mod time;

pub use anchor::{
    AnchorError, AnchorRequest, Attestation, Confirmation, ErrorClass, Pending, PendingFee, Recovery, Submitted,
};
pub use cadence::CadenceKind;
pub use probe::Ping;
pub use target::{Scheme, Target};
pub use time::{MonoMs, WallMs};
