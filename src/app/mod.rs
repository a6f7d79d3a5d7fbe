//! The application: where modules that know nothing of each other are brought together.

pub mod config;
