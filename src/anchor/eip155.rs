//! `eip155:<chain id>`: anchors through an EVM node's JSON-RPC with a local key (to be implemented).

use super::{AnchorError, AnchorRequest, BoxFuture, Driver, ErrorClass, ProgressSink, Submitted};
use crate::config::targets::EvmTarget;

/// Anchors roots in transactions on one EVM chain.
pub struct EvmDriver {
    name: String,
}

impl EvmDriver {
    /// A driver for the entry `eip155.<name>`.
    pub fn new(name: &str, _target: &EvmTarget) -> Result<Self, String> {
        Ok(Self { name: name.to_string() })
    }
}

impl Driver for EvmDriver {
    fn anchor<'a>(
        &'a self,
        _req: &'a AnchorRequest,
        _progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Submitted, AnchorError>> {
        Box::pin(async move {
            Err(AnchorError::new(ErrorClass::Unknown, format!("eip155.{}: not implemented yet", self.name)))
        })
    }
}
