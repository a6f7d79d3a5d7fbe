//! `rfc3161:<name>`: a native RFC 3161 time-stamp client (to be implemented).

use super::{AnchorError, AnchorRequest, BoxFuture, Driver, ErrorClass, ProgressSink, Submitted};
use crate::config::targets::TsaTarget;

/// Time-stamps roots at one TSA.
pub struct TsaDriver {
    name: String,
}

impl TsaDriver {
    /// A driver for the entry `rfc3161.<name>`.
    pub fn new(name: &str, _target: &TsaTarget) -> Result<Self, String> {
        Ok(Self { name: name.to_string() })
    }
}

impl Driver for TsaDriver {
    fn anchor<'a>(
        &'a self,
        _req: &'a AnchorRequest,
        _progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Submitted, AnchorError>> {
        Box::pin(async move {
            Err(AnchorError::new(ErrorClass::Unknown, format!("rfc3161.{}: not implemented yet", self.name)))
        })
    }
}
