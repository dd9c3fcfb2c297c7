//! The NSQ TCP protocol (v2), pure: bytes in, typed values out, and back. No sockets, no timers,
//! no actors.
//!
//! Sources: the TCP protocol spec (nsqio.github.io `_posts/2013-01-01-tcp_protocol_spec.md`) and
//! nsqd itself (`nsqd/protocol_v2.go`, `nsqd/client_v2.go`, `internal/protocol/names.go`).

mod codec;
mod command;
mod frame;
mod identify;
mod message;
mod names;
mod parse;
mod server_error;

pub use codec::{
    command_has_body, Inbound, NsqCodec, PublishLimits, ServerCodec, DEFAULT_MAX_FRAME_LEN,
    MAX_COMMAND_LINE,
};
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
pub use parse::CommandDecoder;
pub use server_error::{ErrorCode, ServerError};
