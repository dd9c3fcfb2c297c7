//! [`NsqdLink`]: one connection to nsqd, handshake done, for people building their own client
//! (pynsq `AsyncConn`, gnsq `NsqdTCPClient`). No actors, no reconnects, no flow control: typed
//! frames in, typed commands out.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_util::codec::{Framed, FramedParts};

use crate::{
    conn::{validate_addr, ConnectionConfig},
    error::Error,
    producer::IntoTopic,
    protocol::{Batch, Body, Channel, Command, Frame, MessageId, NsqCodec, PublishLimits},
    transport::{self, BoxedStream, Negotiated},
};

/// A single connection to nsqd after the handshake: a [`Stream`] of [`Frame`]s and a
/// [`Sink`] of [`Command`]s, with a method per command.
///
/// [`connect`](Self::connect) dials and runs the same handshake as the crate's consumers and
/// producers, from a [`ConnectionConfig`]: IDENTIFY, then TLS, snappy or deflate as
/// negotiated, then AUTH when nsqd requires it. Commands go through the same client codec
/// ([`NsqCodec`]) with the config's publish limits: a body nsqd would reject (empty, over
/// `--max-msg-size` / `--max-body-size`) is an error here and nothing is written, so the
/// connection survives it.
///
/// What is left to you, as in go-nsq's `Conn`:
///
/// * **Heartbeats**: answer [`Response::Heartbeat`](crate::protocol::Response::Heartbeat) with
///   [`nop`](Self::nop) (any command will do); nsqd closes the connection after two
///   unanswered ones.
/// * **Responses**: SUB, PUB, MPUB, DPUB and CLS are answered in order by a response (`OK`,
///   `CLOSE_WAIT`) or an error frame; RDY, FIN, REQ, TOUCH and NOP have no success response.
/// * **Flow control and reconnects**: RDY is yours to send; a lost connection is an error or
///   the end of the stream.
///
/// Each command method writes and flushes. To read and write from different tasks, split it
/// with [`StreamExt::split`].
///
/// ```no_run
/// # async fn demo() -> Result<(), actix_nsq::Error> {
/// use actix_nsq::{protocol::{Frame, Response}, ConnectionConfig, NsqdLink};
///
/// let mut link = NsqdLink::connect("127.0.0.1:4150", &ConnectionConfig::new().snappy(true)).await?;
/// link.subscribe("events", "raw").await?;
/// link.rdy(10).await?;
/// while let Some(frame) = link.next_frame().await {
///     match frame? {
///         Frame::Message(message) => link.finish(message.id).await?,
///         Frame::Response(Response::Heartbeat) => link.nop().await?,
///         Frame::Response(_) => {}               // OK to SUB, ...
///         Frame::Error(error) => eprintln!("nsqd: {error}"),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub struct NsqdLink {
    framed: Framed<BoxedStream, NsqCodec>,
    addr: String,
    negotiated: Negotiated,
}

impl NsqdLink {
    /// Dials `addr` (`host:port`) and runs the handshake with `config`, all within its
    /// `connect_timeout`. The config's reconnect policy does not apply: a link is one
    /// connection.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid address or config; otherwise as the handshake fails:
    /// [`Error::Io`], [`Error::Tls`], [`Error::Auth`], [`Error::Server`],
    /// [`Error::Protocol`], [`Error::Timeout`].
    pub async fn connect(
        addr: impl Into<String>,
        config: &ConnectionConfig,
    ) -> Result<Self, Error> {
        let addr = addr.into();
        validate_addr(&addr).map_err(|reason| Error::config("nsqd", reason))?;
        config.validate()?;
        let established = transport::connect(&addr, &config.handshake(None)).await?;
        let codec = NsqCodec::new(config.max_frame_len).with_limits(config.publish_limits);
        let mut parts = FramedParts::new::<Command>(established.stream, codec);
        parts.read_buf = established.read_buf;
        tracing::debug!(nsqd = %addr, tls = established.negotiated.tls,
            compression = ?established.negotiated.compression, "link established");
        Ok(Self {
            framed: Framed::from_parts(parts),
            addr,
            negotiated: established.negotiated,
        })
    }

    /// The address dialled.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// What the handshake settled: nsqd's IDENTIFY reply (`max_rdy_count`, `msg_timeout`,
    /// ...), its AUTH reply, TLS and compression.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The limits publishes are checked against before they are written.
    pub fn publish_limits(&self) -> PublishLimits {
        self.framed.codec().limits()
    }

    /// The next frame from nsqd; `None` once nsqd closed the connection.
    pub async fn next_frame(&mut self) -> Option<Result<Frame, Error>> {
        self.next().await
    }

    /// Writes any command and flushes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBody`] when a publish is over the limits (nothing written),
    /// [`Error::Io`] when the write fails.
    pub async fn send_command(&mut self, command: Command) -> Result<(), Error> {
        self.send(command).await
    }

    /// `SUB <topic> <channel>`: subscribe (once per connection; nsqd answers `OK`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name nsqd would reject; as [`send_command`](Self::send_command).
    pub async fn subscribe(&mut self, topic: impl IntoTopic, channel: &str) -> Result<(), Error> {
        let topic = topic.into_topic()?;
        let channel = Channel::new(channel)?;
        self.send(Command::Sub { topic, channel }).await
    }

    /// `RDY <count>`: how many messages nsqd may have in flight on this connection (at most
    /// the negotiated `max_rdy_count`).
    ///
    /// # Errors
    ///
    /// As [`send_command`](Self::send_command).
    pub async fn rdy(&mut self, count: u32) -> Result<(), Error> {
        self.send(Command::Rdy(count)).await
    }

    /// `FIN <id>`: the message was handled.
    ///
    /// # Errors
    ///
    /// As [`send_command`](Self::send_command).
    pub async fn finish(&mut self, id: MessageId) -> Result<(), Error> {
        self.send(Command::Fin(id)).await
    }

    /// `REQ <id> <ms>`: put the message back, redelivered after `delay` (nsqd caps it at its
    /// `--max-req-timeout`).
    ///
    /// # Errors
    ///
    /// As [`send_command`](Self::send_command).
    pub async fn requeue(&mut self, id: MessageId, delay: Duration) -> Result<(), Error> {
        self.send(Command::Req { id, delay }).await
    }

    /// `TOUCH <id>`: reset the message's timeout.
    ///
    /// # Errors
    ///
    /// As [`send_command`](Self::send_command).
    pub async fn touch(&mut self, id: MessageId) -> Result<(), Error> {
        self.send(Command::Touch(id)).await
    }

    /// `PUB <topic>`: publish one message (nsqd answers `OK`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::InvalidBody`] (empty or over the limits; nothing
    /// written); as [`send_command`](Self::send_command).
    pub async fn publish(
        &mut self,
        topic: impl IntoTopic,
        body: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let topic = topic.into_topic()?;
        let body = Body::new(body)?;
        self.send(Command::Pub { topic, body }).await
    }

    /// `DPUB <topic> <ms>`: publish one message, deliverable after `delay`.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn deferred_publish(
        &mut self,
        topic: impl IntoTopic,
        delay: Duration,
        body: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let topic = topic.into_topic()?;
        let body = Body::new(body)?;
        self.send(Command::Dpub { topic, delay, body }).await
    }

    /// `MPUB <topic>`: publish several messages at once (nsqd answers one `OK`).
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish); an empty batch is [`Error::InvalidBody`].
    pub async fn multi_publish<I, B>(
        &mut self,
        topic: impl IntoTopic,
        bodies: I,
    ) -> Result<(), Error>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let topic = topic.into_topic()?;
        let bodies = Batch::new(bodies)?;
        self.send(Command::Mpub { topic, bodies }).await
    }

    /// `NOP`: the answer to a heartbeat.
    ///
    /// # Errors
    ///
    /// As [`send_command`](Self::send_command).
    pub async fn nop(&mut self) -> Result<(), Error> {
        self.send(Command::Nop).await
    }

    /// `CLS`: ask nsqd to stop delivering. nsqd answers `CLOSE_WAIT`; answer the messages
    /// still in flight, then drop the link (which closes the socket).
    ///
    /// # Errors
    ///
    /// As [`send_command`](Self::send_command).
    pub async fn close(&mut self) -> Result<(), Error> {
        self.send(Command::Cls).await
    }
}

impl Stream for NsqdLink {
    type Item = Result<Frame, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.framed.poll_next_unpin(cx)
    }
}

impl Sink<Command> for NsqdLink {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        <Framed<BoxedStream, NsqCodec> as Sink<Command>>::poll_ready(Pin::new(&mut self.framed), cx)
    }

    fn start_send(mut self: Pin<&mut Self>, command: Command) -> Result<(), Error> {
        Pin::new(&mut self.framed).start_send(command)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        <Framed<BoxedStream, NsqCodec> as Sink<Command>>::poll_flush(Pin::new(&mut self.framed), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        <Framed<BoxedStream, NsqCodec> as Sink<Command>>::poll_close(Pin::new(&mut self.framed), cx)
    }
}

impl fmt::Debug for NsqdLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsqdLink")
            .field("addr", &self.addr)
            .field("negotiated", &self.negotiated)
            .finish_non_exhaustive()
    }
}
