//! Operators' requests for a namespace's cadences (pause, resume, trigger, skip), as the
//! supervisor routes them to the namespace's actor, and how each can fail.

use actix::prelude::*;

pub(crate) use super::track::{Control, Controlled};
use crate::model::CadenceKind;

/// Asks `namespace`'s actor to apply `control` to `cadence`, or to every cadence when
/// `None` (pause and resume only). Answered once the state it changed is durable.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<(CadenceKind, Controlled)>, ControlError>")]
pub(crate) struct ControlNamespace {
    /// The namespace.
    pub namespace: String,
    /// One cadence, or all.
    pub cadence: Option<CadenceKind>,
    /// What to do.
    pub control: Control,
}

/// Why a request was not carried out; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControlError {
    /// No such namespace in the running config.
    #[error("namespace {0:?} is not configured")]
    UnknownNamespace(String),
    /// The namespace has no such cadence.
    #[error("namespace {namespace:?} has no {cadence} cadence (it has: {has})")]
    UnknownCadence {
        /// The namespace.
        namespace: String,
        /// The cadence asked for.
        cadence: String,
        /// The cadences it has, comma-separated.
        has: String,
    },
    /// The request needs one cadence.
    #[error("name the cadence: ?cadence=fast, strong or cold")]
    CadenceRequired,
    /// The cadence's state forbids it now (e.g. a trigger while paused).
    #[error("{0}")]
    Conflict(String),
    /// Cluster mode: another replica runs the namespace.
    #[error("namespace {0:?} runs on another replica: send the request to its owner (see /health's cluster section)")]
    NotHere(String),
    /// The service cannot do it now: shutting down, or the state cannot be written.
    #[error("{0}")]
    Unavailable(String),
}
