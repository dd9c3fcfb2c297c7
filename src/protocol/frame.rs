//! Frames nsqd sends: `[i32 size][i32 frame type][data]`, where size counts the type field.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Message, ServerError};

/// Frame type of a response (`OK`, `_heartbeat_`, `CLOSE_WAIT`, JSON).
pub const FRAME_TYPE_RESPONSE: i32 = 0;
/// Frame type of an error (`E_* description`).
pub const FRAME_TYPE_ERROR: i32 = 1;
/// Frame type of a message.
pub const FRAME_TYPE_MESSAGE: i32 = 2;

/// Bytes of a message frame's data before the body: timestamp, attempts, id.
pub const MESSAGE_HEADER_LEN: usize = 8 + 2 + 16;

/// The payload of a response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// `OK`: the command succeeded.
    Ok,
    /// `CLOSE_WAIT`: the answer to CLS.
    CloseWait,
    /// `_heartbeat_`: answer with any command (NOP) or be dropped after two.
    Heartbeat,
    /// Anything else: the JSON replies to IDENTIFY and AUTH.
    Data(Bytes),
}

impl Response {
    /// Classifies a response frame's data.
    pub fn parse(data: Bytes) -> Self {
        match &data[..] {
            b"OK" => Response::Ok,
            b"CLOSE_WAIT" => Response::CloseWait,
            b"_heartbeat_" => Response::Heartbeat,
            _ => Response::Data(data),
        }
    }

    /// The data bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Response::Ok => b"OK",
            Response::CloseWait => b"CLOSE_WAIT",
            Response::Heartbeat => b"_heartbeat_",
            Response::Data(data) => data,
        }
    }
}

/// A frame from nsqd.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A response (type 0).
    Response(Response),
    /// An error (type 1).
    Error(ServerError),
    /// A message (type 2).
    Message(Message),
}

impl Frame {
    /// Appends the frame's wire bytes (what nsqd writes; used by the test server).
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Frame::Response(response) => put_frame(dst, FRAME_TYPE_RESPONSE, response.as_bytes()),
            Frame::Error(error) => put_frame(dst, FRAME_TYPE_ERROR, error.to_wire().as_bytes()),
            Frame::Message(message) => {
                let len = MESSAGE_HEADER_LEN + message.body.len();
                dst.reserve(8 + len);
                dst.put_u32(u32::try_from(4 + len).unwrap_or(u32::MAX));
                dst.put_i32(FRAME_TYPE_MESSAGE);
                dst.put_i64(message.timestamp);
                dst.put_u16(message.attempts);
                dst.extend_from_slice(message.id.as_bytes());
                dst.extend_from_slice(&message.body);
            }
        }
    }

    /// The encoded frame as bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

fn put_frame(dst: &mut BytesMut, frame_type: i32, data: &[u8]) {
    dst.reserve(8 + data.len());
    dst.put_u32(u32::try_from(4 + data.len()).unwrap_or(u32::MAX));
    dst.put_i32(frame_type);
    dst.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, MessageId};

    #[test]
    fn encodes_like_nsqd() {
        assert_eq!(
            &Frame::Response(Response::Ok).to_bytes()[..],
            b"\x00\x00\x00\x06\x00\x00\x00\x00OK"
        );
        assert_eq!(
            &Frame::Response(Response::Heartbeat).to_bytes()[..],
            b"\x00\x00\x00\x0f\x00\x00\x00\x00_heartbeat_"
        );
        assert_eq!(
            &Frame::Error(ServerError::new(ErrorCode::Invalid, "bad")).to_bytes()[..],
            b"\x00\x00\x00\x11\x00\x00\x00\x01E_INVALID bad"
        );
        let id = MessageId::new(*b"0123456789abcdef").unwrap();
        let message = Message::new(id, 0x0102030405060708, 3, Bytes::from_static(b"hi"));
        let mut expected = vec![0, 0, 0, 32, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 3];
        expected.extend_from_slice(b"0123456789abcdefhi");
        assert_eq!(&Frame::Message(message).to_bytes()[..], &expected[..]);
    }

    #[test]
    fn classifies_responses() {
        assert_eq!(Response::parse(Bytes::from_static(b"OK")), Response::Ok);
        assert_eq!(
            Response::parse(Bytes::from_static(b"CLOSE_WAIT")),
            Response::CloseWait
        );
        assert_eq!(
            Response::parse(Bytes::from_static(b"_heartbeat_")),
            Response::Heartbeat
        );
        assert!(matches!(
            Response::parse(Bytes::from_static(b"{}")),
            Response::Data(_)
        ));
    }
}
