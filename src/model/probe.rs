//! The liveness question every core actor answers.

use actix::Message;

/// Liveness ping: answered by any actor that is processing its mailbox, so one that does not
/// answer in time is stuck (`/livez`).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Ping;
