//! Commands a client sends to nsqd, as typed values that encode themselves.
//!
//! Wire format (tcp_protocol_spec): `NAME[ SP param]*\n`, and for IDENTIFY, AUTH, PUB, DPUB and
//! MPUB a 4-byte big-endian size followed by the body. Every parameter is a validated type
//! ([`Topic`], [`Channel`], [`MessageId`], numbers), so no command can carry a space or a newline
//! that would inject another; bodies are length-prefixed and may hold anything.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Channel, IdentifyRequest, MessageId, Topic};
use crate::error::BodyError;

/// The 4-byte protocol magic a client sends first.
pub const MAGIC_V2: &[u8; 4] = b"  V2";

/// A non-empty message body. Cloning is cheap (a reference count).
#[derive(Clone, PartialEq, Eq)]
pub struct Body(Bytes);

impl Body {
    /// Wraps a body, rejecting an empty one (nsqd answers those with a fatal `E_BAD_MESSAGE`).
    ///
    /// # Errors
    ///
    /// [`BodyError::Empty`] for an empty body, [`BodyError::TooLarge`] for one that does not fit
    /// the protocol's 32-bit signed size field.
    pub fn new(body: impl Into<Bytes>) -> Result<Self, BodyError> {
        let body = body.into();
        if body.is_empty() {
            return Err(BodyError::Empty);
        }
        check_size(body.len(), i32::MAX as usize)?;
        Ok(Self(body))
    }

    /// Checks the body against a server's `--max-msg-size`.
    ///
    /// # Errors
    ///
    /// [`BodyError::TooLarge`] when it is bigger.
    pub fn check_max(&self, max_msg_size: usize) -> Result<(), BodyError> {
        check_size(self.0.len(), max_msg_size)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a `Body` is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Gives back the bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.0.len())
    }
}

fn check_size(size: usize, max: usize) -> Result<(), BodyError> {
    if size > max {
        Err(BodyError::TooLarge { size, max })
    } else {
        Ok(())
    }
}

/// The messages of one MPUB: at least one, each non-empty.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch(Vec<Body>);

impl Batch {
    /// Builds a batch from bodies.
    ///
    /// # Errors
    ///
    /// [`BodyError::NoMessages`] for an empty batch; [`BodyError::InBatch`] naming the first
    /// empty body; [`BodyError::BatchTooLarge`] when the MPUB body would not fit the 32-bit size.
    pub fn new<I, B>(bodies: I) -> Result<Self, BodyError>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let bodies = bodies
            .into_iter()
            .enumerate()
            .map(|(index, body)| {
                Body::new(body).map_err(|e| BodyError::InBatch {
                    index,
                    source: Box::new(e),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_bodies(bodies)
    }

    /// Builds a batch from already-validated bodies.
    ///
    /// # Errors
    ///
    /// [`BodyError::NoMessages`] for an empty vector, [`BodyError::BatchTooLarge`] when the
    /// encoded body would not fit the 32-bit size field.
    pub fn from_bodies(bodies: Vec<Body>) -> Result<Self, BodyError> {
        if bodies.is_empty() {
            return Err(BodyError::NoMessages);
        }
        let batch = Self(bodies);
        let size = batch.body_size();
        if size > i32::MAX as usize {
            return Err(BodyError::BatchTooLarge {
                size,
                max: i32::MAX as usize,
            });
        }
        Ok(batch)
    }

    /// Checks each message against `--max-msg-size` and the whole body against
    /// `--max-body-size`, as nsqd does.
    ///
    /// # Errors
    ///
    /// [`BodyError::InBatch`] for the first message that is too big, or
    /// [`BodyError::BatchTooLarge`].
    pub fn check_max(&self, max_msg_size: usize, max_body_size: usize) -> Result<(), BodyError> {
        for (index, body) in self.0.iter().enumerate() {
            body.check_max(max_msg_size)
                .map_err(|e| BodyError::InBatch {
                    index,
                    source: Box::new(e),
                })?;
        }
        let size = self.body_size();
        if size > max_body_size {
            return Err(BodyError::BatchTooLarge {
                size,
                max: max_body_size,
            });
        }
        Ok(())
    }

    /// Size of the MPUB body: the 4-byte count plus a 4-byte size and the bytes per message.
    pub fn body_size(&self) -> usize {
        4 + self.0.iter().map(|b| 4 + b.len()).sum::<usize>()
    }

    /// The bodies.
    pub fn bodies(&self) -> &[Body] {
        &self.0
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a `Batch` is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Batch({} messages, {} bytes)",
            self.0.len(),
            self.body_size()
        )
    }
}

/// A command nsqd accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `IDENTIFY\n[size][json]`: negotiate features. Sent once, right after the magic.
    Identify(Box<IdentifyRequest>),
    /// `AUTH\n[size][secret]`: only when nsqd's IDENTIFY reply says `auth_required`.
    Auth(Bytes),
    /// `SUB <topic> <channel>\n`: subscribe (once per connection).
    Sub {
        /// Topic to read.
        topic: Topic,
        /// Channel to read it through.
        channel: Channel,
    },
    /// `RDY <count>\n`: how many messages may be in flight on this connection.
    Rdy(u32),
    /// `FIN <id>\n`: the message was handled.
    Fin(MessageId),
    /// `REQ <id> <ms>\n`: put the message back, to be redelivered after `delay`.
    Req {
        /// The message.
        id: MessageId,
        /// Redelivery delay (nsqd clamps it to `--max-req-timeout`).
        delay: Duration,
    },
    /// `TOUCH <id>\n`: reset the message's timeout.
    Touch(MessageId),
    /// `CLS\n`: stop delivering; nsqd answers `CLOSE_WAIT`.
    Cls,
    /// `NOP\n`: no-op, the answer to `_heartbeat_`.
    Nop,
    /// `PUB <topic>\n[size][body]`.
    Pub {
        /// Destination topic.
        topic: Topic,
        /// The message.
        body: Body,
    },
    /// `MPUB <topic>\n[size][count]([size][body])*`.
    Mpub {
        /// Destination topic.
        topic: Topic,
        /// The messages.
        bodies: Batch,
    },
    /// `DPUB <topic> <ms>\n[size][body]`: publish, deliverable after `delay`.
    Dpub {
        /// Destination topic.
        topic: Topic,
        /// Delay before the message becomes deliverable.
        delay: Duration,
        /// The message.
        body: Body,
    },
}

/// Appends the decimal form of `n`, without going through `fmt`.
fn put_decimal(dst: &mut BytesMut, mut n: u128) {
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[at..]);
}

fn put_size(dst: &mut BytesMut, size: usize) {
    // Sizes were bounded to i32::MAX when the body was built.
    dst.put_u32(u32::try_from(size).unwrap_or(u32::MAX));
}

impl Command {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Identify(_) => "IDENTIFY",
            Command::Auth(_) => "AUTH",
            Command::Sub { .. } => "SUB",
            Command::Rdy(_) => "RDY",
            Command::Fin(_) => "FIN",
            Command::Req { .. } => "REQ",
            Command::Touch(_) => "TOUCH",
            Command::Cls => "CLS",
            Command::Nop => "NOP",
            Command::Pub { .. } => "PUB",
            Command::Mpub { .. } => "MPUB",
            Command::Dpub { .. } => "DPUB",
        }
    }

    /// True for the commands nsqd answers with a response or error frame (as opposed to
    /// FIN/REQ/TOUCH/RDY/NOP, which are only answered when they fail).
    pub fn expects_response(&self) -> bool {
        matches!(
            self,
            Command::Identify(_)
                | Command::Auth(_)
                | Command::Sub { .. }
                | Command::Cls
                | Command::Pub { .. }
                | Command::Mpub { .. }
                | Command::Dpub { .. }
        )
    }

    /// Appends the command's bytes to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Command::Identify(request) => {
                // Serialising a struct of strings, integers and bools cannot fail.
                let json = serde_json::to_vec(request).unwrap_or_default();
                dst.reserve(9 + 4 + json.len());
                dst.extend_from_slice(b"IDENTIFY\n");
                put_size(dst, json.len());
                dst.extend_from_slice(&json);
            }
            Command::Auth(secret) => {
                dst.reserve(5 + 4 + secret.len());
                dst.extend_from_slice(b"AUTH\n");
                put_size(dst, secret.len());
                dst.extend_from_slice(secret);
            }
            Command::Sub { topic, channel } => {
                dst.reserve(6 + topic.len() + channel.len());
                dst.extend_from_slice(b"SUB ");
                dst.extend_from_slice(topic.as_bytes());
                dst.put_u8(b' ');
                dst.extend_from_slice(channel.as_bytes());
                dst.put_u8(b'\n');
            }
            Command::Rdy(count) => {
                dst.reserve(15);
                dst.extend_from_slice(b"RDY ");
                put_decimal(dst, u128::from(*count));
                dst.put_u8(b'\n');
            }
            Command::Fin(id) => Self::encode_with_id(dst, b"FIN ", id),
            Command::Touch(id) => Self::encode_with_id(dst, b"TOUCH ", id),
            Command::Req { id, delay } => {
                dst.reserve(4 + 16 + 1 + 20 + 1);
                dst.extend_from_slice(b"REQ ");
                dst.extend_from_slice(id.as_bytes());
                dst.put_u8(b' ');
                put_decimal(dst, delay.as_millis());
                dst.put_u8(b'\n');
            }
            Command::Cls => dst.extend_from_slice(b"CLS\n"),
            Command::Nop => dst.extend_from_slice(b"NOP\n"),
            Command::Pub { topic, body } => {
                dst.reserve(4 + topic.len() + 1 + 4 + body.len());
                dst.extend_from_slice(b"PUB ");
                dst.extend_from_slice(topic.as_bytes());
                dst.put_u8(b'\n');
                put_size(dst, body.len());
                dst.extend_from_slice(body.as_bytes());
            }
            Command::Dpub { topic, delay, body } => {
                dst.reserve(5 + topic.len() + 22 + 4 + body.len());
                dst.extend_from_slice(b"DPUB ");
                dst.extend_from_slice(topic.as_bytes());
                dst.put_u8(b' ');
                put_decimal(dst, delay.as_millis());
                dst.put_u8(b'\n');
                put_size(dst, body.len());
                dst.extend_from_slice(body.as_bytes());
            }
            Command::Mpub { topic, bodies } => {
                let body_size = bodies.body_size();
                dst.reserve(5 + topic.len() + 1 + 4 + body_size);
                dst.extend_from_slice(b"MPUB ");
                dst.extend_from_slice(topic.as_bytes());
                dst.put_u8(b'\n');
                put_size(dst, body_size);
                put_size(dst, bodies.len());
                for body in bodies.bodies() {
                    put_size(dst, body.len());
                    dst.extend_from_slice(body.as_bytes());
                }
            }
        }
    }

    fn encode_with_id(dst: &mut BytesMut, prefix: &[u8], id: &MessageId) {
        dst.reserve(prefix.len() + 17);
        dst.extend_from_slice(prefix);
        dst.extend_from_slice(id.as_bytes());
        dst.put_u8(b'\n');
    }

    /// The encoded command as bytes (handy in tests and fixtures).
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> MessageId {
        MessageId::new(*b"0123456789abcdef").unwrap()
    }
    fn topic() -> Topic {
        Topic::new("events").unwrap()
    }

    #[test]
    fn line_commands_match_the_spec() {
        let channel = Channel::new("indexer").unwrap();
        let fixtures: [(Command, &[u8]); 8] = [
            (
                Command::Sub {
                    topic: topic(),
                    channel,
                },
                b"SUB events indexer\n",
            ),
            (Command::Rdy(0), b"RDY 0\n"),
            (Command::Rdy(2500), b"RDY 2500\n"),
            (Command::Fin(id()), b"FIN 0123456789abcdef\n"),
            (
                Command::Req {
                    id: id(),
                    delay: Duration::from_millis(90_000),
                },
                b"REQ 0123456789abcdef 90000\n",
            ),
            (Command::Touch(id()), b"TOUCH 0123456789abcdef\n"),
            (Command::Cls, b"CLS\n"),
            (Command::Nop, b"NOP\n"),
        ];
        for (command, bytes) in fixtures {
            assert_eq!(&command.to_bytes()[..], bytes, "{command:?}");
        }
    }

    #[test]
    fn body_commands_match_the_spec() {
        let body = Body::new(&b"hello"[..]).unwrap();
        assert_eq!(
            &Command::Pub {
                topic: topic(),
                body: body.clone()
            }
            .to_bytes()[..],
            b"PUB events\n\x00\x00\x00\x05hello"
        );
        assert_eq!(
            &Command::Dpub {
                topic: topic(),
                delay: Duration::from_secs(5),
                body
            }
            .to_bytes()[..],
            b"DPUB events 5000\n\x00\x00\x00\x05hello"
        );
        let batch = Batch::new([&b"a"[..], &b"bc"[..]]).unwrap();
        assert_eq!(batch.body_size(), 4 + 5 + 6);
        assert_eq!(
            &Command::Mpub {
                topic: topic(),
                bodies: batch
            }
            .to_bytes()[..],
            b"MPUB events\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc"
        );
        assert_eq!(
            &Command::Auth(Bytes::from_static(b"s3cret")).to_bytes()[..],
            b"AUTH\n\x00\x00\x00\x06s3cret"
        );
    }

    #[test]
    fn identify_carries_json() {
        let bytes = Command::Identify(Box::default()).to_bytes();
        assert!(bytes.starts_with(b"IDENTIFY\n"));
        let size = u32::from_be_bytes(bytes[9..13].try_into().unwrap()) as usize;
        assert_eq!(size, bytes.len() - 13);
        let json: serde_json::Value = serde_json::from_slice(&bytes[13..]).unwrap();
        assert_eq!(json["feature_negotiation"], true);
    }

    #[test]
    fn bodies_are_validated() {
        assert_eq!(Body::new(Bytes::new()), Err(BodyError::Empty));
        assert_eq!(Batch::new(Vec::<Bytes>::new()), Err(BodyError::NoMessages));
        match Batch::new([&b"x"[..], &b""[..]]) {
            Err(BodyError::InBatch { index: 1, source }) => assert_eq!(*source, BodyError::Empty),
            other => panic!("{other:?}"),
        }
        let body = Body::new(vec![0u8; 101]).unwrap();
        assert_eq!(
            body.check_max(100),
            Err(BodyError::TooLarge {
                size: 101,
                max: 100
            })
        );
        let batch = Batch::new([vec![1u8; 50], vec![1u8; 50]]).unwrap();
        assert!(batch.check_max(100, 1000).is_ok());
        assert_eq!(
            batch.check_max(100, 100),
            Err(BodyError::BatchTooLarge {
                size: 112,
                max: 100
            })
        );
    }

    #[test]
    fn decimal_encoding() {
        for n in [0u128, 7, 10, 99, 100, 4_294_967_295, u128::from(u64::MAX)] {
            let mut buf = BytesMut::new();
            put_decimal(&mut buf, n);
            assert_eq!(&buf[..], n.to_string().as_bytes());
        }
    }
}
