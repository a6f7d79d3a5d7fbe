//! The application: where modules that know nothing of each other are brought together,
//! started, served and stopped.

pub(crate) mod cluster;
pub mod control;
pub mod shutdown;
pub mod startup;

/// The configuration the scheduler runs. It lives with the supervisor that reloads it, below
/// this module, so that nothing the application starts imports the application back.
pub use crate::scheduler::config;
