//! `btc:<name>`: anchors through a bitcoind wallet's JSON-RPC (to be implemented).

use super::{AnchorError, AnchorRequest, BoxFuture, Driver, ErrorClass, ProgressSink, Submitted};
use crate::config::targets::BtcTarget;

/// Anchors roots in OP_RETURN outputs through one bitcoind wallet.
pub struct BtcDriver {
    name: String,
}

impl BtcDriver {
    /// A driver for the entry `btc.<name>`.
    pub fn new(name: &str, _target: &BtcTarget) -> Result<Self, String> {
        Ok(Self { name: name.to_string() })
    }
}

impl Driver for BtcDriver {
    fn anchor<'a>(
        &'a self,
        _req: &'a AnchorRequest,
        _progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Submitted, AnchorError>> {
        Box::pin(async move {
            Err(AnchorError::new(ErrorClass::Unknown, format!("btc.{}: not implemented yet", self.name)))
        })
    }
}
