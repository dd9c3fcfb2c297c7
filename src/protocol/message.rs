//! The message nsqd delivers, and its id.

use std::{fmt, time::Duration};

use bytes::Bytes;

use crate::error::ProtocolError;

/// Length of a message id on the wire.
pub const MESSAGE_ID_LEN: usize = 16;

/// A message id: 16 bytes that go back verbatim in FIN, REQ and TOUCH.
///
/// nsqd sends ASCII hex, but the protocol only promises 16 bytes. The decoder accepts printable
/// ASCII without spaces, so that echoing an id can never inject a command.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId([u8; MESSAGE_ID_LEN]);

impl MessageId {
    /// Builds an id from 16 bytes.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadMessageId`] when a byte is outside printable ASCII (`0x21..=0x7e`).
    pub fn new(bytes: [u8; MESSAGE_ID_LEN]) -> Result<Self, ProtocolError> {
        if bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
            Ok(Self(bytes))
        } else {
            Err(ProtocolError::BadMessageId)
        }
    }

    /// Parses 16 bytes from a slice (for example a parameter of a FIN line).
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadMessageId`] when the slice is not 16 printable bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let array: [u8; MESSAGE_ID_LEN] =
            bytes.try_into().map_err(|_| ProtocolError::BadMessageId)?;
        Self::new(array)
    }

    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; MESSAGE_ID_LEN] {
        &self.0
    }

    /// The id as text (it is always printable ASCII).
    pub fn as_str(&self) -> &str {
        // Printable ASCII is valid UTF-8; the fallback is unreachable but keeps this panic-free.
        std::str::from_utf8(&self.0).unwrap_or("<invalid>")
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.as_str())
    }
}

/// A message as nsqd delivers it: `[i64 timestamp][u16 attempts][16-byte id][body]`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// When nsqd accepted the message, in nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// How many times nsqd has delivered it, this delivery included (starts at 1).
    pub attempts: u16,
    /// The id to answer with.
    pub id: MessageId,
    /// The body, sharing the read buffer (no copy).
    pub body: Bytes,
}

impl Message {
    /// Assembles a message, for the test server and for mocks.
    pub fn new(id: MessageId, timestamp: i64, attempts: u16, body: Bytes) -> Self {
        Self {
            timestamp,
            attempts,
            id,
            body,
        }
    }

    /// How long ago, relative to `now_unix_nanos`, nsqd accepted the message.
    pub fn age(&self, now_unix_nanos: i64) -> Duration {
        let nanos = now_unix_nanos.saturating_sub(self.timestamp);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies can be large or sensitive: show their length only.
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("attempts", &self.attempts)
            .field("timestamp", &self.timestamp)
            .field("body_len", &self.body.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_printable() {
        assert!(MessageId::new(*b"0123456789abcdef").is_ok());
        assert!(MessageId::new(*b"0123456789abcde ").is_err());
        assert!(MessageId::new(*b"0123456789abcde\n").is_err());
        assert!(MessageId::from_slice(b"short").is_err());
        assert_eq!(
            MessageId::from_slice(b"0123456789abcdef").unwrap().as_str(),
            "0123456789abcdef"
        );
    }

    #[test]
    fn debug_hides_body() {
        let id = MessageId::new(*b"0123456789abcdef").unwrap();
        let msg = Message::new(id, 1, 1, Bytes::from_static(b"secret"));
        assert!(!format!("{msg:?}").contains("secret"));
    }
}
