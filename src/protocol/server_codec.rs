//! nsqd's side of the connection, as a tokio-util codec: [`ServerCodec`] decodes command
//! lines and bodies step by step (as nsqd's `IOLoop` reads them, `nsqd/protocol_v2.go`) and
//! encodes frames. Only the in-process test servers (`testing`) and the property tests need
//! it, so it is built with feature `testing` (and for the crate's own tests) and is no part of
//! a default build's public API. The limits and reservation rules are the client codec's (see
//! `client_codec.rs`).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{client_codec::reserve_for, Frame};
use crate::error::{Error, ProtocolError};

/// nsqd reads command lines with a 16 KiB `bufio.Reader` (`defaultBufferSize`); a longer line
/// fails the read and closes the connection.
pub const MAX_COMMAND_LINE: usize = 16 * 1024;

/// What the server side reads next. nsqd reads a line, decides from it whether a body follows,
/// then reads the 4-byte size, validates it, and only then reads the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Line,
    BodySize,
    Body(usize),
}

/// One step of what a client sent, as nsqd reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inbound {
    /// A command line without its `\n` (and without a `\r` before it).
    Line(Bytes),
    /// A body size (after [`ServerCodec::read_body_size`]).
    BodySize(i32),
    /// A body (after [`ServerCodec::read_body`]).
    Body(Bytes),
}

/// The server codec: command lines and bodies in, frames out.
#[derive(Debug, Clone)]
pub struct ServerCodec {
    state: ServerState,
    max_line: usize,
}

impl Default for ServerCodec {
    fn default() -> Self {
        Self {
            state: ServerState::Line,
            max_line: MAX_COMMAND_LINE,
        }
    }
}

impl ServerCodec {
    /// The next item will be a 4-byte body size.
    pub fn read_body_size(&mut self) {
        self.state = ServerState::BodySize;
    }

    /// The next item will be a body of `len` bytes (the caller has bounded `len`).
    pub fn read_body(&mut self, len: usize) {
        self.state = ServerState::Body(len);
    }

    /// Splits a command line into its space-separated words, as nsqd's `bytes.Split` does.
    pub fn params(line: &[u8]) -> Vec<&[u8]> {
        line.split(|&b| b == b' ').collect()
    }
}

impl Decoder for ServerCodec {
    type Item = Inbound;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, Error> {
        match self.state {
            ServerState::Line => {
                let Some(end) = src.iter().position(|&b| b == b'\n') else {
                    if src.len() >= self.max_line {
                        return Err(ProtocolError::BadCommand(format!(
                            "command line longer than {} bytes",
                            self.max_line
                        ))
                        .into());
                    }
                    return Ok(None);
                };
                if end >= self.max_line {
                    return Err(ProtocolError::BadCommand("command line too long".into()).into());
                }
                let mut line = src.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                Ok(Some(Inbound::Line(line.freeze())))
            }
            ServerState::BodySize => {
                let Some(size) = src.get(..4) else {
                    src.reserve(4 - src.len());
                    return Ok(None);
                };
                let size = i32::from_be_bytes([size[0], size[1], size[2], size[3]]);
                src.advance(4);
                self.state = ServerState::Line;
                Ok(Some(Inbound::BodySize(size)))
            }
            ServerState::Body(len) => {
                if src.len() < len {
                    reserve_for(src, len - src.len());
                    return Ok(None);
                }
                self.state = ServerState::Line;
                Ok(Some(Inbound::Body(src.split_to(len).freeze())))
            }
        }
    }
}

impl Encoder<Frame> for ServerCodec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        frame.encode(dst);
        Ok(())
    }
}

impl Encoder<&Frame> for ServerCodec {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        frame.encode(dst);
        Ok(())
    }
}

/// True for the commands nsqd follows with a body.
pub fn command_has_body(name: &[u8]) -> bool {
    matches!(name, b"IDENTIFY" | b"AUTH" | b"PUB" | b"MPUB" | b"DPUB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codec_reads_like_nsqd() {
        let mut codec = ServerCodec::default();
        let mut buf = BytesMut::from(&b"SUB t c\r\nPUB t\n\x00\x00\x00\x02hiNOP\n"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Inbound::Line(Bytes::from_static(b"SUB t c")))
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Inbound::Line(Bytes::from_static(b"PUB t")))
        );
        codec.read_body_size();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Inbound::BodySize(2)));
        codec.read_body(2);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Inbound::Body(Bytes::from_static(b"hi")))
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Inbound::Line(Bytes::from_static(b"NOP")))
        );
        assert_eq!(
            ServerCodec::params(b"REQ id 10"),
            vec![&b"REQ"[..], b"id", b"10"]
        );
        let mut long = BytesMut::from(&vec![b'a'; MAX_COMMAND_LINE][..]);
        assert!(codec.decode(&mut long).is_err());
    }
}
