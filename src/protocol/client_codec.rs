//! The client's tokio-util codec, [`NsqCodec`]: it decodes [`Frame`]s and encodes
//! [`Command`]s. nsqd's side is in `server_codec.rs` (feature `testing`).
//!
//! Decoding follows the tokio-util contract: on short input reserve room for what is missing
//! and return `Ok(None)`; check every length against a limit *before* reserving; use checked
//! arithmetic; return exactly one item per call; never spin on unknown input. What is reserved
//! is capped at [`RESERVE_CHUNK`]: a length field is a claim, not bytes, and an 8-byte header
//! claiming 16 MiB must not cost 16 MiB before the peer has sent them. The buffer grows as the
//! bytes arrive (`BytesMut` grows geometrically, so a big frame still costs O(log n) copies).

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{
    Command, Frame, Message, MessageId, Response, ServerError, FRAME_TYPE_ERROR,
    FRAME_TYPE_MESSAGE, FRAME_TYPE_RESPONSE, MESSAGE_HEADER_LEN,
};
use crate::error::{Error, ProtocolError};

/// Default bound on a frame from nsqd: 16 MiB, well above nsqd's default `--max-msg-size`
/// (1 MiB) while keeping a lying peer from making us allocate gigabytes.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// The most a decoder reserves ahead of bytes actually received.
const RESERVE_CHUNK: usize = 64 * 1024;

/// Reserves room for `missing` more bytes, at most [`RESERVE_CHUNK`] ahead of what arrived.
/// The server codec reserves the same way.
pub(super) fn reserve_for(src: &mut BytesMut, missing: usize) {
    src.reserve(missing.min(RESERVE_CHUNK));
}

/// `"HTTP"` read as a big-endian i32: the peer is an HTTP server (go-nsq `protocol.go`).
const HTTP_AS_SIZE: i32 = i32::from_be_bytes(*b"HTTP");

/// Size limits a server enforces on publishes, checked again when encoding so that nothing
/// nsqd would reject (with a fatal error that drops every other request on the connection)
/// is ever written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishLimits {
    /// nsqd `--max-msg-size`: the largest single message.
    pub max_msg_size: usize,
    /// nsqd `--max-body-size`: the largest MPUB body.
    pub max_body_size: usize,
}

impl PublishLimits {
    /// nsqd's defaults: 1 MiB messages, 5 MiB bodies.
    pub const NSQD_DEFAULT: Self = Self {
        max_msg_size: 1024 * 1024,
        max_body_size: 5 * 1024 * 1024,
    };

    /// Checks a command against the limits. Only PUB, DPUB and MPUB carry messages.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBody`] when a body is over a limit.
    pub fn check(&self, command: &Command) -> Result<(), Error> {
        match command {
            Command::Pub { body, .. } | Command::Dpub { body, .. } => {
                body.check_max(self.max_msg_size)?
            }
            Command::Mpub { bodies, .. } => {
                bodies.check_max(self.max_msg_size, self.max_body_size)?
            }
            _ => {}
        }
        Ok(())
    }
}

impl Default for PublishLimits {
    fn default() -> Self {
        Self::NSQD_DEFAULT
    }
}

/// The client codec: frames in, commands out.
#[derive(Debug, Clone)]
pub struct NsqCodec {
    max_frame_len: usize,
    limits: PublishLimits,
}

impl Default for NsqCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl NsqCodec {
    /// A codec that rejects frames larger than `max_frame_len` bytes (size field excluded).
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            limits: PublishLimits::NSQD_DEFAULT,
        }
    }

    /// Sets the limits publishes are checked against when encoded.
    pub fn with_limits(mut self, limits: PublishLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The largest frame accepted.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The publish limits in force.
    pub fn limits(&self) -> PublishLimits {
        self.limits
    }
}

impl Decoder for NsqCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let Some(size_bytes) = src.get(..4) else {
            src.reserve(4 - src.len());
            return Ok(None);
        };
        let size = i32::from_be_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]);
        if size == HTTP_AS_SIZE {
            return Err(ProtocolError::LooksLikeHttp.into());
        }
        if size < 4 {
            return Err(ProtocolError::FrameTooSmall(i64::from(size)).into());
        }
        let size = size as usize; // non-negative, checked above
        if size > self.max_frame_len {
            return Err(ProtocolError::FrameTooLarge {
                size: size as u64,
                max: self.max_frame_len,
            }
            .into());
        }
        let total = size.checked_add(4).ok_or(ProtocolError::FrameTooLarge {
            size: size as u64,
            max: self.max_frame_len,
        })?;
        if src.len() < total {
            reserve_for(src, total - src.len());
            return Ok(None);
        }
        let frame_type = i32::from_be_bytes([src[4], src[5], src[6], src[7]]);
        let data_len = size - 4;
        match frame_type {
            FRAME_TYPE_RESPONSE => {
                src.advance(8);
                Ok(Some(Frame::Response(Response::parse(
                    src.split_to(data_len).freeze(),
                ))))
            }
            FRAME_TYPE_ERROR => {
                src.advance(8);
                let data = src.split_to(data_len);
                Ok(Some(Frame::Error(ServerError::parse(&data))))
            }
            FRAME_TYPE_MESSAGE => {
                if data_len < MESSAGE_HEADER_LEN {
                    return Err(ProtocolError::ShortMessage(data_len).into());
                }
                let header = &src[8..8 + MESSAGE_HEADER_LEN];
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&header[..8]);
                let attempts = u16::from_be_bytes([header[8], header[9]]);
                let id = MessageId::from_slice(&header[10..26])?;
                src.advance(8 + MESSAGE_HEADER_LEN);
                let body = src.split_to(data_len - MESSAGE_HEADER_LEN).freeze();
                Ok(Some(Frame::Message(Message::new(
                    id,
                    i64::from_be_bytes(ts),
                    attempts,
                    body,
                ))))
            }
            other => Err(ProtocolError::UnknownFrameType(other).into()),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtocolError::Truncated(src.len()).into()),
        }
    }
}

impl Encoder<Command> for NsqCodec {
    type Error = Error;

    fn encode(&mut self, command: Command, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&command, dst)
    }
}

impl Encoder<&Command> for NsqCodec {
    type Error = Error;

    fn encode(&mut self, command: &Command, dst: &mut BytesMut) -> Result<(), Error> {
        self.limits.check(command)?;
        command.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::{Batch, Body, ErrorCode, Topic};

    fn decode_all(codec: &mut NsqCodec, bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        assert!(buf.is_empty());
        frames
    }

    #[test]
    fn decodes_spec_fixtures() {
        let mut codec = NsqCodec::default();
        let mut bytes = b"\x00\x00\x00\x06\x00\x00\x00\x00OK".to_vec();
        bytes.extend_from_slice(b"\x00\x00\x00\x0f\x00\x00\x00\x00_heartbeat_");
        bytes.extend_from_slice(b"\x00\x00\x00\x0e\x00\x00\x00\x00CLOSE_WAIT");
        bytes.extend_from_slice(
            b"\x00\x00\x00\x2e\x00\x00\x00\x01E_FIN_FAILED FIN x failed ID not in flight",
        );
        bytes.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1]);
        bytes.extend_from_slice(b"0123456789abcdefhi");
        let frames = decode_all(&mut codec, &bytes);
        assert_eq!(frames[0], Frame::Response(Response::Ok));
        assert_eq!(frames[1], Frame::Response(Response::Heartbeat));
        assert_eq!(frames[2], Frame::Response(Response::CloseWait));
        match &frames[3] {
            Frame::Error(e) => assert_eq!(e.code, ErrorCode::FinFailed),
            other => panic!("{other:?}"),
        }
        match &frames[4] {
            Frame::Message(m) => {
                assert_eq!((m.timestamp, m.attempts), (9, 1));
                assert_eq!(m.id.as_str(), "0123456789abcdef");
                assert_eq!(&m.body[..], b"hi");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reserves_on_short_input_and_yields_one_frame_per_call() {
        let mut codec = NsqCodec::default();
        let mut buf = BytesMut::from(&b"\x00\x00"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\x00\x06\x00\x00\x00\x00O");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() >= 10);
        buf.extend_from_slice(b"K\x00\x00\x00\x06\x00\x00\x00\x00OK");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::Response(Response::Ok))
        );
        assert_eq!(buf.len(), 10);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::Response(Response::Ok))
        );
    }

    #[test]
    fn bounds_lengths_before_allocating() {
        let mut codec = NsqCodec::new(100);
        let mut buf = BytesMut::from(&b"\x7f\xff\xff\xff"[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, Error::Protocol(ProtocolError::FrameTooLarge { .. })),
            "{err}"
        );
        assert!(buf.capacity() < 1024, "allocated {} bytes", buf.capacity());
        for size in [
            &b"\xff\xff\xff\xff"[..],
            b"\x00\x00\x00\x03",
            b"\x80\x00\x00\x00",
        ] {
            let err = codec.decode(&mut BytesMut::from(size)).unwrap_err();
            assert!(
                matches!(err, Error::Protocol(ProtocolError::FrameTooSmall(_))),
                "{err}"
            );
        }
    }

    /// An 8-byte header claiming a huge frame reserves a chunk, not the claim, even with no
    /// limit at all; the frame still decodes once its bytes have arrived, and the buffer never
    /// runs far ahead of them (issue 10.5: 16 MiB and 2 GiB were reserved up front).
    #[test]
    fn a_claimed_length_reserves_little_until_the_bytes_arrive() {
        for (mut codec, size) in [
            (NsqCodec::default(), DEFAULT_MAX_FRAME_LEN),
            (NsqCodec::new(usize::MAX), i32::MAX as usize),
        ] {
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&u32::try_from(size).unwrap().to_be_bytes());
            buf.extend_from_slice(&FRAME_TYPE_RESPONSE.to_be_bytes());
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(
                buf.capacity() <= 2 * RESERVE_CHUNK,
                "a {size}-byte claim reserved {} bytes",
                buf.capacity()
            );
        }
        let body = vec![b'x'; 1024 * 1024];
        let mut wire = (u32::try_from(body.len() + 4).unwrap())
            .to_be_bytes()
            .to_vec();
        wire.extend_from_slice(&FRAME_TYPE_RESPONSE.to_be_bytes());
        wire.extend_from_slice(&body);
        let mut codec = NsqCodec::default();
        let mut buf = BytesMut::new();
        let mut frame = None;
        for piece in wire.chunks(4096) {
            assert!(frame.is_none(), "one frame, decoded only when complete");
            buf.extend_from_slice(piece);
            frame = codec.decode(&mut buf).unwrap();
            let received = wire.len().min(buf.len());
            assert!(
                buf.capacity() <= 2 * received + 2 * RESERVE_CHUNK,
                "{} bytes reserved for {received} received",
                buf.capacity()
            );
        }
        assert_eq!(
            frame,
            Some(Frame::Response(Response::Data(Bytes::from(body))))
        );
    }

    /// The connection setting that sizes this codec has an upper bound (issue 10.5:
    /// `max_frame_len(usize::MAX)` validated). The check lives in `ConnectionConfig::validate`.
    #[test]
    fn max_frame_len_setting_is_bounded() {
        use crate::ConnectionConfig;
        for ok in [1024, DEFAULT_MAX_FRAME_LEN, 256 * 1024 * 1024] {
            ConnectionConfig::default()
                .max_frame_len(ok)
                .validate()
                .unwrap();
        }
        for bad in [1023, 256 * 1024 * 1024 + 1, i32::MAX as usize, usize::MAX] {
            let err = ConnectionConfig::default()
                .max_frame_len(bad)
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains("max_frame_len"), "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_http_unknown_types_and_short_messages() {
        let mut codec = NsqCodec::default();
        let err = codec.decode(&mut BytesMut::from(&b"HTTP/1.1 400 Bad Request\r\n"[..]));
        assert!(matches!(
            err,
            Err(Error::Protocol(ProtocolError::LooksLikeHttp))
        ));
        let err = codec.decode(&mut BytesMut::from(
            &b"\x00\x00\x00\x04\x00\x00\x00\x07"[..],
        ));
        assert!(matches!(
            err,
            Err(Error::Protocol(ProtocolError::UnknownFrameType(7)))
        ));
        let err = codec.decode(&mut BytesMut::from(
            &b"\x00\x00\x00\x05\x00\x00\x00\x02x"[..],
        ));
        assert!(matches!(
            err,
            Err(Error::Protocol(ProtocolError::ShortMessage(1)))
        ));
        let mut msg = vec![0, 0, 0, 30, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        msg.extend_from_slice(b"0123456789abcd\n ");
        let err = codec.decode(&mut BytesMut::from(&msg[..]));
        assert!(matches!(
            err,
            Err(Error::Protocol(ProtocolError::BadMessageId))
        ));
    }

    #[test]
    fn eof_in_the_middle_of_a_frame_is_an_error() {
        let mut codec = NsqCodec::default();
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x06\x00\x00"[..]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(matches!(err, Error::Protocol(ProtocolError::Truncated(6))));
        assert_eq!(codec.decode_eof(&mut BytesMut::new()).unwrap(), None);
    }

    #[test]
    fn encoder_refuses_what_the_server_would_reject() {
        let mut codec = NsqCodec::default().with_limits(PublishLimits {
            max_msg_size: 4,
            max_body_size: 20,
        });
        let topic = Topic::new("t").unwrap();
        let mut dst = BytesMut::new();
        let big = Command::Pub {
            topic: topic.clone(),
            body: Body::new(&b"12345"[..]).unwrap(),
        };
        assert!(matches!(
            codec.encode(&big, &mut dst),
            Err(Error::InvalidBody(_))
        ));
        let batch = Batch::new([&b"1234"[..], b"1234", b"1234"]).unwrap();
        let mpub = Command::Mpub {
            topic,
            bodies: batch,
        };
        assert!(matches!(
            codec.encode(&mpub, &mut dst),
            Err(Error::InvalidBody(_))
        ));
        assert!(
            dst.is_empty(),
            "nothing may be written for a rejected command"
        );
        codec.encode(Command::Nop, &mut dst).unwrap();
        assert_eq!(&dst[..], b"NOP\n");
    }
}
