//! The server's reading of commands: a command line and its body back into a typed
//! [`Command`], the inverse of [`Command::encode`]. nsqd reads a line, decides from its name
//! whether a 4-byte size and a body follow (`nsqd/protocol_v2.go`, `readLen` in `PUB`,
//! `MPUB`, `DPUB`, `IDENTIFY`, `AUTH`), then reads them; [`CommandDecoder`] does the same over
//! [`ServerCodec`]. Used by `testing::MockNsqd` to hand tests the commands a client sent.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{
    server_codec::{command_has_body, Inbound, ServerCodec},
    Batch, Body, Channel, Command, Frame, IdentifyRequest, MessageId, Topic,
};
use crate::error::{Error, ProtocolError};

fn bad(what: impl Into<String>) -> ProtocolError {
    ProtocolError::BadCommand(what.into())
}

fn text<'a>(param: &'a [u8], what: &str) -> Result<&'a str, ProtocolError> {
    std::str::from_utf8(param).map_err(|_| bad(format!("{what} is not UTF-8")))
}

fn millis(param: &[u8], what: &str) -> Result<Duration, ProtocolError> {
    text(param, what)?
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| bad(format!("{what} is not a number of milliseconds")))
}

fn topic(param: &[u8]) -> Result<Topic, ProtocolError> {
    Topic::new(text(param, "topic")?).map_err(|e| bad(e.to_string()))
}

fn body(body: Option<Bytes>, name: &str) -> Result<Body, ProtocolError> {
    let body = body.ok_or_else(|| bad(format!("{name} without a body")))?;
    Body::new(body).map_err(|e| bad(format!("{name}: {e}")))
}

/// An MPUB body: `[4-byte count]([4-byte size][bytes])*`, nothing left over.
fn batch(body: Option<Bytes>) -> Result<Batch, ProtocolError> {
    let mut body = body.ok_or_else(|| bad("MPUB without a body"))?;
    let short = || bad("MPUB body shorter than its sizes say");
    if body.len() < 4 {
        return Err(short());
    }
    let count = body.get_u32();
    let mut bodies = Vec::new();
    for _ in 0..count {
        if body.len() < 4 {
            return Err(short());
        }
        let len = usize::try_from(body.get_u32()).map_err(|_| short())?;
        if body.len() < len {
            return Err(short());
        }
        bodies.push(Body::new(body.split_to(len)).map_err(|e| bad(format!("MPUB: {e}")))?);
    }
    if !body.is_empty() {
        return Err(bad("MPUB body longer than its sizes say"));
    }
    Batch::from_bodies(bodies).map_err(|e| bad(format!("MPUB: {e}")))
}

impl Command {
    /// Parses a command line (without its `\n`) and, for IDENTIFY, AUTH, PUB, MPUB and DPUB,
    /// the body that followed it.
    ///
    /// ```
    /// use actix_nsq::protocol::Command;
    ///
    /// assert_eq!(Command::parse(b"RDY 5", None).unwrap(), Command::Rdy(5));
    /// let fin = Command::parse(b"FIN 0123456789abcdef", None).unwrap();
    /// assert_eq!(&fin.to_bytes()[..], b"FIN 0123456789abcdef\n");
    /// ```
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadCommand`] for an unknown name, a wrong number of parameters, an
    /// invalid parameter, or a missing or malformed body.
    pub fn parse(line: &[u8], body: Option<Bytes>) -> Result<Command, ProtocolError> {
        let params = ServerCodec::params(line);
        let name = params.first().copied().unwrap_or_default();
        let args = params.get(1..).unwrap_or_default();
        let name_text = String::from_utf8_lossy(name);
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(bad(format!(
                    "{name_text} takes {n} parameters, got {}",
                    args.len()
                )))
            }
        };
        let id = |param: &[u8]| MessageId::from_slice(param).map_err(|e| bad(e.to_string()));
        match name {
            b"IDENTIFY" => {
                arity(0)?;
                let json = body.ok_or_else(|| bad("IDENTIFY without a body"))?;
                let request: IdentifyRequest = serde_json::from_slice(&json)
                    .map_err(|e| bad(format!("IDENTIFY body: {e}")))?;
                Ok(Command::Identify(Box::new(request)))
            }
            b"AUTH" => {
                arity(0)?;
                Ok(Command::Auth(
                    body.ok_or_else(|| bad("AUTH without a body"))?,
                ))
            }
            b"SUB" => {
                arity(2)?;
                let channel =
                    Channel::new(text(args[1], "channel")?).map_err(|e| bad(e.to_string()))?;
                Ok(Command::Sub {
                    topic: topic(args[0])?,
                    channel,
                })
            }
            b"RDY" => {
                arity(1)?;
                let count = text(args[0], "RDY count")?
                    .parse::<u32>()
                    .map_err(|_| bad("RDY count is not a number"))?;
                Ok(Command::Rdy(count))
            }
            b"FIN" => {
                arity(1)?;
                Ok(Command::Fin(id(args[0])?))
            }
            b"TOUCH" => {
                arity(1)?;
                Ok(Command::Touch(id(args[0])?))
            }
            b"REQ" => {
                arity(2)?;
                Ok(Command::Req {
                    id: id(args[0])?,
                    delay: millis(args[1], "REQ timeout")?,
                })
            }
            b"CLS" => arity(0).map(|()| Command::Cls),
            b"NOP" => arity(0).map(|()| Command::Nop),
            b"PUB" => {
                arity(1)?;
                Ok(Command::Pub {
                    topic: topic(args[0])?,
                    body: self::body(body, "PUB")?,
                })
            }
            b"DPUB" => {
                arity(2)?;
                Ok(Command::Dpub {
                    topic: topic(args[0])?,
                    delay: millis(args[1], "DPUB defer")?,
                    body: self::body(body, "DPUB")?,
                })
            }
            b"MPUB" => {
                arity(1)?;
                Ok(Command::Mpub {
                    topic: topic(args[0])?,
                    bodies: batch(body)?,
                })
            }
            _ => Err(bad(format!("invalid command {name_text}"))),
        }
    }
}

/// Reads whole [`Command`]s off a client's byte stream (after the 4-byte magic) and writes
/// [`Frame`]s back: the server end of a connection, as a codec.
#[derive(Debug, Clone)]
pub struct CommandDecoder {
    inner: ServerCodec,
    /// The line of a command whose size and body are still to come.
    pending: Option<Bytes>,
    max_body: usize,
}

impl CommandDecoder {
    /// A decoder accepting bodies up to `max_body` bytes (nsqd's `--max-body-size`).
    pub fn new(max_body: usize) -> Self {
        Self {
            inner: ServerCodec::default(),
            pending: None,
            max_body,
        }
    }
}

impl Decoder for CommandDecoder {
    type Item = Command;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, Error> {
        loop {
            let Some(inbound) = self.inner.decode(src)? else {
                return Ok(None);
            };
            match inbound {
                Inbound::Line(line) => {
                    let name = line.split(|&b| b == b' ').next().unwrap_or_default();
                    if !command_has_body(name) {
                        return Ok(Some(Command::parse(&line, None)?));
                    }
                    self.pending = Some(line);
                    self.inner.read_body_size();
                }
                Inbound::BodySize(size) => {
                    let len = usize::try_from(size)
                        .ok()
                        .filter(|&len| len > 0 && len <= self.max_body)
                        .ok_or_else(|| bad(format!("invalid body size {size}")))?;
                    self.inner.read_body(len);
                }
                Inbound::Body(body) => {
                    let line = self.pending.take().unwrap_or_default();
                    return Ok(Some(Command::parse(&line, Some(body))?));
                }
            }
        }
    }
}

impl Encoder<Frame> for CommandDecoder {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        frame.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> MessageId {
        MessageId::new(*b"0123456789abcdef").unwrap()
    }

    fn every_command() -> Vec<Command> {
        let topic = Topic::new("events").unwrap();
        vec![
            Command::Identify(Box::default()),
            Command::Auth(Bytes::from_static(b"secret")),
            Command::Sub {
                topic: topic.clone(),
                channel: Channel::new("indexer#ephemeral").unwrap(),
            },
            Command::Rdy(2500),
            Command::Fin(id()),
            Command::Req {
                id: id(),
                delay: Duration::from_millis(90_000),
            },
            Command::Touch(id()),
            Command::Cls,
            Command::Nop,
            Command::Pub {
                topic: topic.clone(),
                body: Body::new("hello").unwrap(),
            },
            Command::Dpub {
                topic: topic.clone(),
                delay: Duration::from_millis(1500),
                body: Body::new("later").unwrap(),
            },
            Command::Mpub {
                topic,
                bodies: Batch::new(["a", "bc", "def"]).unwrap(),
            },
        ]
    }

    #[test]
    fn every_command_reads_back_as_encoded() {
        let commands = every_command();
        let mut wire = BytesMut::new();
        for command in &commands {
            command.encode(&mut wire);
        }
        // One byte at a time: the decoder must wait for every part without losing state.
        let mut decoder = CommandDecoder::new(1024);
        let mut buf = BytesMut::new();
        let mut read = Vec::new();
        for byte in wire {
            buf.extend_from_slice(&[byte]);
            while let Some(command) = decoder.decode(&mut buf).unwrap() {
                read.push(command);
            }
        }
        assert_eq!(read, commands);
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_commands_are_refused() {
        for (line, body) in [
            (&b"RDY"[..], None),
            (b"RDY x", None),
            (b"RDY 1 2", None),
            (b"FIN short", None),
            (b"REQ 0123456789abcdef soon", None),
            (b"SUB events", None),
            (b"SUB bad/topic ch", None),
            (b"PUB events", None),
            (
                b"MPUB events",
                Some(Bytes::from_static(b"\0\0\0\x02\0\0\0\x01a")),
            ),
            (
                b"MPUB events",
                Some(Bytes::from_static(b"\0\0\0\x01\0\0\0\x01ab")),
            ),
            (b"IDENTIFY", Some(Bytes::from_static(b"not json"))),
            (b"HELLO", None),
        ] {
            assert!(
                matches!(
                    Command::parse(line, body),
                    Err(ProtocolError::BadCommand(_))
                ),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn body_sizes_are_bounded() {
        let mut decoder = CommandDecoder::new(4);
        let mut buf = BytesMut::from(&b"PUB events\n\0\0\0\x05hello"[..]);
        assert!(decoder.decode(&mut buf).is_err());
        let mut decoder = CommandDecoder::new(4);
        let mut buf = BytesMut::from(&b"PUB events\n\0\0\0\0"[..]);
        assert!(decoder.decode(&mut buf).is_err());
    }
}
