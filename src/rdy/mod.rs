//! STUB (replaced by the rdy branch).
#![allow(dead_code)]
/// How a handler answered a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Finished,
    Requeued { backoff: bool },
}
