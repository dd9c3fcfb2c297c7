//! The NSQ TCP protocol (v2), pure: bytes in, typed values out, and back. No sockets, no timers,
//! no actors.
//!
//! Sources: the TCP protocol spec (nsqio.github.io `_posts/2013-01-01-tcp_protocol_spec.md`) and
//! nsqd itself (`nsqd/protocol_v2.go`, `nsqd/client_v2.go`, `internal/protocol/names.go`).

mod client_codec;
mod command;
mod frame;
mod identify;
mod message;
mod names;
// nsqd's side (reading commands, writing frames) exists for the test servers: it is public
// with feature `testing` only, and otherwise compiled just for the crate's own unit tests.
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub, dead_code))]
mod parse;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub, dead_code))]
mod server_codec;
mod server_error;

pub use client_codec::{NsqCodec, PublishLimits, DEFAULT_MAX_FRAME_LEN};
pub use command::{Batch, Body, Command, MAGIC_V2};
pub use frame::{
    Frame, Response, FRAME_TYPE_ERROR, FRAME_TYPE_MESSAGE, FRAME_TYPE_RESPONSE, MESSAGE_HEADER_LEN,
};
pub use identify::{
    AuthResponse, IdentifyRequest, IdentifyResponse, DEFAULT_MAX_RDY_COUNT, DEFAULT_MSG_TIMEOUT_MS,
    MAX_HEARTBEAT_INTERVAL_MS, MAX_MSG_TIMEOUT_MS, MAX_OUTPUT_BUFFER_SIZE,
    MAX_OUTPUT_BUFFER_TIMEOUT_MS, MIN_OUTPUT_BUFFER_TIMEOUT_MS,
};
pub use message::{Message, MessageId, MESSAGE_ID_LEN};
pub use names::{Channel, Topic, EPHEMERAL_SUFFIX, MAX_NAME_LEN};
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use parse::CommandDecoder;
#[cfg(all(test, not(feature = "testing")))]
pub(crate) use server_codec::{command_has_body, Inbound, ServerCodec};
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use server_codec::{command_has_body, Inbound, ServerCodec, MAX_COMMAND_LINE};
pub use server_error::{ErrorCode, ServerError};
