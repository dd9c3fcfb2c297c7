//! One client connection: the magic, then a reader (nsqd's `IOLoop`, which executes commands)
//! and a writer task (the output half of nsqd's `messagePump`: responses, messages and
//! heartbeats, written in batches and flushed when nothing more is queued).
//!
//! The stream is a boxed `AsyncRead + AsyncWrite`, split in two halves; after the IDENTIFY
//! reply both halves are put back together so that [`upgrade_stream`] can wrap the socket
//! (TLS, then snappy or deflate), exactly where nsqd upgrades it.

use std::{sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf},
    net::TcpStream,
    sync::{
        mpsc::{self, UnboundedReceiver, UnboundedSender},
        oneshot, watch,
    },
    task::JoinHandle,
    time::{Instant, Interval, MissedTickBehavior},
};
use tokio_util::codec::FramedRead;

use super::{
    broker::new_client_entry,
    identify::{ClientSettings, Upgrades},
    record::{ClientId, RecordedCommand},
    server::{Shared, Signals},
    upgrade::upgrade_stream,
};
use crate::protocol::{ErrorCode, Frame, Inbound, Response, ServerCodec, ServerError, MAGIC_V2};

/// Anything a connection can run over: a TCP socket, or one wrapped in TLS or compression.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connection's stream, whatever it has been upgraded to.
pub(crate) type BoxIo = Box<dyn Io>;

/// What the writer task is asked to do, in order.
pub(crate) enum Outbound {
    /// Write a frame.
    Frame(Frame),
    /// Write bytes as they are (the "server that lies" hook).
    Raw(Bytes),
    /// The heartbeat interval changed (IDENTIFY); `None` disables heartbeats.
    Heartbeat(Option<Duration>),
    /// Flush, then hand the write half back for an upgrade.
    Upgrade(oneshot::Sender<WriterParts>),
    /// Flush, shut the write side down, then report.
    Close(oneshot::Sender<()>),
    /// Stop at once (channel deleted, test asked to drop the client).
    Abort,
}

/// What the writer hands back before an upgrade.
pub(crate) struct WriterParts {
    io: WriteHalf<BoxIo>,
    rx: UnboundedReceiver<Outbound>,
}

/// Why the reader stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hangup {
    /// The client closed the connection or the read failed.
    Gone,
    /// Nothing arrived for twice the heartbeat interval (nsqd's read deadline).
    Timeout,
    /// The test closed it, or the writer is gone.
    Closed,
}

/// The connection's reading side, which executes commands (see `exec.rs`).
pub(super) struct Conn {
    pub(super) shared: Arc<Shared>,
    pub(super) id: ClientId,
    pub(super) settings: ClientSettings,
    pub(super) tls: bool,
    pub(super) authed: bool,
    /// The body read for the command being executed, for the recording.
    pub(super) body: Option<Bytes>,
    reader: FramedRead<ReadHalf<BoxIo>, ServerCodec>,
    out: UnboundedSender<Outbound>,
    writer: JoinHandle<()>,
    signals: watch::Receiver<Signals>,
    deadline: Option<Instant>,
}

impl Drop for Conn {
    /// A connection task that is aborted (kill) must take its writer with it: a detached
    /// writer would keep the socket open, so the client would never see the server die.
    fn drop(&mut self) {
        self.writer.abort();
    }
}

/// Serves one accepted socket until it closes.
pub(crate) async fn serve(shared: Arc<Shared>, id: ClientId, mut socket: TcpStream) {
    let Ok(remote) = socket.peer_addr() else {
        return;
    };
    let mut signals = shared.signals.subscribe();
    let mut magic = [0u8; 4];
    // nsqd reads the 4-byte magic with no deadline (`tcpServer.Handle`).
    let read = tokio::select! {
        read = socket.read_exact(&mut magic) => read,
        _ = signals.wait_for(|s| s.closed(id)) => return,
    };
    if read.is_err() {
        return;
    }
    if &magic != MAGIC_V2 {
        tracing::debug!(client = %id, magic = ?magic, "bad protocol magic");
        let frame = Frame::Error(ServerError::new(ErrorCode::BadProtocol, ""));
        let _ = socket.write_all(&frame.to_bytes()).await;
        let _ = socket.shutdown().await;
        return;
    }
    tracing::debug!(client = %id, %remote, "client connected");
    let settings = ClientSettings::initial(&shared.opts);
    let (out, rx) = mpsc::unbounded_channel();
    let entry = new_client_entry(id, remote, out.clone(), settings.msg_timeout);
    shared.broker().add_client(entry);
    let (read_half, write_half) = tokio::io::split(Box::new(socket) as BoxIo);
    let writer = spawn_writer(&shared, id, write_half, rx, settings.heartbeat);
    let mut conn = Conn {
        reader: FramedRead::new(read_half, ServerCodec::default()),
        shared,
        id,
        settings,
        tls: false,
        authed: false,
        body: None,
        out,
        writer,
        signals,
        deadline: None,
    };
    let why = conn.run().await;
    tracing::debug!(client = %id, reason = ?why, "client disconnected");
    conn.shared.broker().remove_client(id);
    conn.finish().await;
}

fn spawn_writer(
    shared: &Arc<Shared>,
    id: ClientId,
    io: WriteHalf<BoxIo>,
    rx: UnboundedReceiver<Outbound>,
    heartbeat: Option<Duration>,
) -> JoinHandle<()> {
    let writer = Writer {
        shared: shared.clone(),
        id,
        signals: shared.signals.subscribe(),
    };
    tokio::spawn(writer.run(io, rx, heartbeat))
}

impl Conn {
    /// nsqd's `IOLoop`: read a line, execute it, answer; fatal errors end the connection
    /// after their error frame.
    async fn run(&mut self) -> Hangup {
        loop {
            // nsqd sets the read deadline before each command line.
            self.deadline = self.settings.heartbeat.map(|h| Instant::now() + h * 2);
            let line = match self.next_inbound().await {
                Ok(Inbound::Line(line)) => line,
                Ok(_) => return Hangup::Gone,
                Err(hangup) => return hangup,
            };
            let result = self.exec(&line).await;
            self.record(&line);
            match result {
                Ok(Some(frame)) => self.send(frame),
                Ok(None) => {}
                Err(Failure::Hangup(hangup)) => return hangup,
                Err(Failure::Client(error)) => {
                    tracing::warn!(client = %self.id, %error, "non-fatal error");
                    self.send(Frame::Error(error));
                }
                Err(Failure::Fatal(error)) => {
                    tracing::warn!(client = %self.id, %error, "fatal error, closing");
                    self.send(Frame::Error(error));
                    self.close_after_flush().await;
                    return Hangup::Closed;
                }
            }
        }
    }

    fn record(&mut self, line: &Bytes) {
        let command = RecordedCommand {
            client: self.id,
            line: String::from_utf8_lossy(line).into_owned(),
            body: self.body.take(),
        };
        self.shared.record(command);
    }

    pub(super) fn send(&self, frame: Frame) {
        let _ = self.out.send(Outbound::Frame(frame));
    }

    pub(super) fn set_heartbeat(&self, heartbeat: Option<Duration>) {
        let _ = self.out.send(Outbound::Heartbeat(heartbeat));
    }

    /// The next item from the codec, honouring the read deadline, the test's close and
    /// half-open switches, and the writer's death.
    pub(super) async fn next_inbound(&mut self) -> Result<Inbound, Hangup> {
        loop {
            let signals = *self.signals.borrow_and_update();
            if signals.closed(self.id) {
                return Err(Hangup::Closed);
            }
            if signals.frozen(self.id) {
                // A silent peer: read nothing and time nothing out until it wakes up.
                tokio::select! {
                    changed = self.signals.changed() => changed.map_err(|_| Hangup::Closed)?,
                    _ = self.out.closed() => return Err(Hangup::Closed),
                }
                self.deadline = self.settings.heartbeat.map(|h| Instant::now() + h * 2);
                continue;
            }
            let deadline = self.deadline;
            tokio::select! {
                biased;
                changed = self.signals.changed() => changed.map_err(|_| Hangup::Closed)?,
                _ = self.out.closed() => return Err(Hangup::Closed),
                item = read_until(deadline, &mut self.reader) => return item,
            }
        }
    }

    /// Asks the codec for a 4-byte size next and reads it.
    pub(super) async fn read_size(&mut self) -> Result<i32, Hangup> {
        self.reader.decoder_mut().read_body_size();
        match self.next_inbound().await? {
            Inbound::BodySize(size) => Ok(size),
            _ => Err(Hangup::Gone),
        }
    }

    /// Asks the codec for a body of `len` bytes (already bounded) and reads it.
    pub(super) async fn read_body(&mut self, len: usize) -> Result<Bytes, Hangup> {
        self.reader.decoder_mut().read_body(len);
        match self.next_inbound().await? {
            Inbound::Body(body) => Ok(body),
            _ => Err(Hangup::Gone),
        }
    }

    async fn close_after_flush(&mut self) {
        let (done, flushed) = oneshot::channel();
        if self.out.send(Outbound::Close(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
        }
    }

    async fn finish(mut self) {
        let _ = self.out.send(Outbound::Abort);
        if tokio::time::timeout(Duration::from_secs(1), &mut self.writer)
            .await
            .is_err()
        {
            self.writer.abort();
        }
    }

    /// Puts the stream back together after the IDENTIFY reply is flushed, upgrades it and
    /// starts reading and writing over the result.
    pub(super) async fn upgrade(&mut self, upgrades: Upgrades) -> Result<(), String> {
        let (give, take) = oneshot::channel();
        self.out
            .send(Outbound::Upgrade(give))
            .map_err(|_| "writer gone".to_owned())?;
        let parts = take.await.map_err(|_| "writer gone".to_owned())?;
        let reader = std::mem::replace(&mut self.reader, placeholder_reader());
        let read = reader.into_parts();
        if !read.io.is_pair_of(&parts.io) {
            return Err("stream halves do not match".to_owned());
        }
        let io = read.io.unsplit(parts.io);
        let io = upgrade_stream(io, read.read_buf, upgrades, &self.shared, self.id).await?;
        self.tls |= upgrades.tls;
        let (read_half, write_half) = tokio::io::split(io);
        self.reader = FramedRead::new(read_half, ServerCodec::default());
        self.writer = spawn_writer(
            &self.shared,
            self.id,
            write_half,
            parts.rx,
            self.settings.heartbeat,
        );
        Ok(())
    }
}

fn placeholder_reader() -> FramedRead<ReadHalf<BoxIo>, ServerCodec> {
    let (io, _) = tokio::io::duplex(1);
    FramedRead::new(
        tokio::io::split(Box::new(io) as BoxIo).0,
        ServerCodec::default(),
    )
}

async fn read_until(
    deadline: Option<Instant>,
    reader: &mut FramedRead<ReadHalf<BoxIo>, ServerCodec>,
) -> Result<Inbound, Hangup> {
    let item = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, reader.next())
            .await
            .map_err(|_| Hangup::Timeout)?,
        None => reader.next().await,
    };
    match item {
        Some(Ok(inbound)) => Ok(inbound),
        Some(Err(error)) => {
            tracing::debug!(%error, "read failed");
            Err(Hangup::Gone)
        }
        None => Err(Hangup::Gone),
    }
}

/// How a command failed.
pub(super) enum Failure {
    /// The connection went away while the command was read.
    Hangup(Hangup),
    /// `E_FIN_FAILED`, `E_REQ_FAILED`, `E_TOUCH_FAILED`: reported, the connection lives on.
    Client(ServerError),
    /// Everything else: reported, then the connection is closed.
    Fatal(ServerError),
}

impl From<Hangup> for Failure {
    fn from(hangup: Hangup) -> Self {
        Failure::Hangup(hangup)
    }
}

/// The writing half (nsqd's `messagePump` and `Send`).
struct Writer {
    shared: Arc<Shared>,
    id: ClientId,
    signals: watch::Receiver<Signals>,
}

fn heartbeat_ticker(heartbeat: Option<Duration>) -> Option<Interval> {
    heartbeat.map(|every| {
        let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    })
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Writer {
    async fn run(
        mut self,
        mut io: WriteHalf<BoxIo>,
        mut rx: UnboundedReceiver<Outbound>,
        mut heartbeat: Option<Duration>,
    ) {
        let mut ticker = heartbeat_ticker(heartbeat);
        let mut buf = BytesMut::new();
        loop {
            let signals = *self.signals.borrow_and_update();
            if signals.closed(self.id) {
                return;
            }
            if signals.frozen(self.id) {
                if self.signals.changed().await.is_err() {
                    return;
                }
                ticker = heartbeat_ticker(heartbeat);
                continue;
            }
            let first = tokio::select! {
                biased;
                changed = self.signals.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return,
                },
                next = rx.recv() => match next {
                    Some(next) => next,
                    None => return,
                },
                () = tick(&mut ticker) => Outbound::Frame(Frame::Response(Response::Heartbeat)),
            };
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Outbound::Frame(frame) => frame.encode(&mut buf),
                    Outbound::Raw(bytes) => buf.extend_from_slice(&bytes),
                    Outbound::Heartbeat(every) => {
                        heartbeat = every;
                        ticker = heartbeat_ticker(every);
                    }
                    Outbound::Upgrade(give) => {
                        if self.write(&mut io, &mut buf, heartbeat).await {
                            let _ = give.send(WriterParts { io, rx });
                        }
                        return;
                    }
                    Outbound::Close(done) => {
                        if self.write(&mut io, &mut buf, heartbeat).await {
                            let _ = io.shutdown().await;
                        }
                        let _ = done.send(());
                        return;
                    }
                    Outbound::Abort => return,
                }
                if self.frame_delay().is_some() && !self.write(&mut io, &mut buf, heartbeat).await {
                    return;
                }
                next = rx.try_recv().ok();
            }
            if !self.write(&mut io, &mut buf, heartbeat).await {
                return;
            }
        }
    }

    fn frame_delay(&self) -> Option<Duration> {
        let micros = self
            .shared
            .frame_delay_micros
            .load(std::sync::atomic::Ordering::Relaxed);
        (micros > 0).then(|| Duration::from_micros(micros))
    }

    /// Writes and flushes what is buffered, within nsqd's write deadline (the heartbeat
    /// interval). False when the connection is done for.
    async fn write(
        &self,
        io: &mut WriteHalf<BoxIo>,
        buf: &mut BytesMut,
        heartbeat: Option<Duration>,
    ) -> bool {
        if buf.is_empty() {
            return true;
        }
        if let Some(delay) = self.frame_delay() {
            tokio::time::sleep(delay).await;
        }
        let write = async {
            io.write_all(buf).await?;
            io.flush().await
        };
        let result = match heartbeat {
            Some(deadline) => tokio::time::timeout(deadline, write)
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "write deadline",
                    ))
                }),
            None => write.await,
        };
        buf.clear();
        if let Err(error) = result {
            tracing::debug!(client = %self.id, %error, "write failed");
            return false;
        }
        true
    }
}
