//! [`MockNsqd`]: a scripted nsqd on the far end of in-memory pipes, for actor-level unit
//! tests with no server and no sockets.

mod link;
mod serve;

use std::{
    collections::HashMap,
    fmt, io,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc, Mutex, OnceLock, PoisonError, Weak,
    },
};

use futures_util::FutureExt;
use tokio::sync::mpsc;

pub use link::MockLink;

use super::{nsqd::Options, TestNsqdBuilder};
use crate::{
    conn::ConnectionConfig,
    error::Error,
    protocol::MessageId,
    transport::{BoxedStream, Dialer},
};

/// Bytes each direction of a pipe holds before the writer waits (nsqd's default output
/// buffer is 16 KiB; more keeps a burst of pushed messages from blocking the server end).
const PIPE_CAPACITY: usize = 256 * 1024;

/// Every live mock by address, so one [`ConnectionConfig`] reaches all of them.
fn registry() -> &'static Mutex<HashMap<String, Weak<Shared>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<Shared>>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Tells mocks apart in the registry: each gets its own host name.
static NEXT_MOCK: AtomicU64 = AtomicU64::new(1);

/// What the handle, the dialer and the server ends share.
pub(crate) struct Shared {
    addr: String,
    opts: Options,
    accept_tx: mpsc::UnboundedSender<MockLink>,
    accept_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<MockLink>>,
    refuse: AtomicU32,
    dials: AtomicU32,
    links: AtomicU64,
    messages: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockNsqd")
            .field("addr", &self.addr)
            .field("dials", &self.dials.load(Relaxed))
            .field("links", &self.links.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn next_link(&self) -> u64 {
        self.links.fetch_add(1, Relaxed) + 1
    }

    /// Ids as nsqd makes them: 16 hex digits, here from a counter (`0000000000000001`, ...).
    fn next_message_id(&self) -> MessageId {
        let n = self.messages.fetch_add(1, Relaxed) + 1;
        let text = format!("{n:016x}");
        let mut bytes = [b'0'; 16];
        bytes.copy_from_slice(&text.as_bytes()[text.len() - 16..]);
        match MessageId::new(bytes) {
            Ok(id) => id,
            Err(_) => unreachable!("hex digits are printable ASCII, all a MessageId asks"),
        }
    }

    /// A client dials: refused, or a pipe whose far end is served by a new task.
    fn open(self: &Arc<Self>) -> io::Result<BoxedStream> {
        self.dials.fetch_add(1, Relaxed);
        let refused = self
            .refuse
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if refused {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("MockNsqd at {} refused the connection", self.addr),
            ));
        }
        let (client, server) = tokio::io::duplex(PIPE_CAPACITY);
        tokio::spawn(serve::serve(server, self.clone()));
        Ok(Box::new(client))
    }
}

fn dial(addr: &str) -> io::Result<BoxedStream> {
    let mock = registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(addr)
        .and_then(Weak::upgrade);
    match mock {
        Some(mock) => mock.open(),
        None => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("no MockNsqd at {addr}"),
        )),
    }
}

/// A scripted nsqd for actor-level tests: no server, no sockets.
///
/// Point a consumer or producer at [`addr`](Self::addr) with a connection configuration
/// from [`connection_config`](Self::connection_config); take each connection the client
/// opens with [`accept`](Self::accept) and drive it through the [`MockLink`].
///
/// The client side is the real one: [`MockNsqd::connection_config`] only replaces the TCP dial
/// of every connection with a `tokio::io::duplex` pipe, so the connection actors, the
/// handshake, flow control, backoff, handlers and give-up hooks of a [`Consumer`] or
/// [`Producer`] run exactly as against nsqd. The server end answers IDENTIFY through the same
/// code as [`TestNsqd`](crate::testing::TestNsqd) (nsqd v1.3.0's reply, with TLS, snappy and deflate
/// not offered), answers SUB, CLS and publishes as nsqd does, and otherwise does only what the
/// test tells it through a [`MockLink`].
///
/// # Determinism
///
/// Nothing here touches a socket, a thread or a real clock: the pipes, the server ends
/// (tokio tasks) and the actors all run on the test's one thread. Under
/// `tokio::time::pause()` (tokio's `test-util` feature) inside `#[actix_rt::test]` (a
/// current-thread runtime, which is what pausing needs), tokio jumps the clock straight to
/// the next timer whenever every task waits: backoff pauses, requeue delays, reconnect
/// delays and stop deadlines pass at once and in a fixed order.
///
/// Caveats. Two things measure `std::time::Instant`, which the paused clock does not move,
/// so they never trigger in a paused test: the connection's liveness check (no frame for two
/// heartbeat intervals drops the link) and the rotation of RDY between connections when they
/// outnumber `max_in_flight` (`low_rdy_idle_timeout`, `low_rdy_timeout`). Test those in real
/// time; the mock works the same there. And a test waiting for something that never comes
/// spins the paused clock forward instead of failing: bound waits with
/// `tokio::time::timeout`.
///
/// The pipes carry plain NSQ: the mock grants no TLS, snappy or deflate (a client that
/// requires TLS fails its handshake, as against an nsqd without `--tls-cert`), and it does
/// not require AUTH.
///
/// # Example
///
/// A consumer's handler fails once: the consumer backs off (RDY 0, REQ), tests the waters
/// with RDY 1 after the pause, and finishes the redelivery.
///
/// ```
/// use std::time::Duration;
/// use actix_nsq::{protocol::Command, testing::MockNsqd, Consumer, ConnectionConfig, Delivery};
///
/// actix_rt::System::new().block_on(async {
///     tokio::time::pause();
///     let nsqd = MockNsqd::new();
///     let consumer = Consumer::builder("events", "tests")
///         .nsqd(nsqd.addr())
///         .connection(nsqd.connection_config(ConnectionConfig::new()))
///         .max_in_flight(5)
///         .handler_fn(|d: Delivery| async move {
///             if d.attempts() == 1 { Err("not yet".into()) } else { Ok(()) }
///         })
///         .start()
///         .unwrap();
///
///     let mut link = nsqd.accept().await;
///     assert_eq!(link.next_line().await.unwrap(), "SUB events tests");
///     assert_eq!(link.next_command().await, Some(Command::Rdy(5)));
///
///     let id = link.send_message("hello");
///     assert_eq!(link.next_command().await, Some(Command::Rdy(0)));
///     assert!(matches!(link.next_command().await, Some(Command::Req { id: r, .. }) if r == id));
///     // The backoff pause passes on the paused clock.
///     assert_eq!(link.next_command().await, Some(Command::Rdy(1)));
///     link.send_message_with(id, 2, "hello");
///     assert_eq!(link.next_command().await, Some(Command::Rdy(5)));
///     assert_eq!(link.next_command().await, Some(Command::Fin(id)));
///
///     assert_eq!(consumer.stop().await, 0);
///     assert_eq!(link.next_command().await, Some(Command::Cls));
///     assert_eq!(link.next_command().await, None); // the client closed the connection
/// });
/// ```
///
/// [`Consumer`]: crate::Consumer
/// [`Producer`]: crate::Producer
pub struct MockNsqd {
    shared: Arc<Shared>,
}

impl fmt::Debug for MockNsqd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl Default for MockNsqd {
    fn default() -> Self {
        Self::new()
    }
}

impl MockNsqd {
    /// A mock with nsqd's default settings (max RDY 2500, 60 s message timeout, 5 MiB
    /// bodies) under a host name of its own (`mock-nsqd-<n>:4150`).
    pub fn new() -> Self {
        Self::with(Options::mock_defaults())
    }

    /// A mock with the settings of a [`TestNsqdBuilder`] that shape what clients see: the
    /// IDENTIFY reply (`max_rdy_count`, `msg_timeout`, `max_msg_timeout`, the heartbeat and
    /// output-buffer bounds) and `max_body_size`. Addresses, queues and lookupds do not
    /// apply; snappy and deflate are never offered.
    ///
    /// ```
    /// use actix_nsq::testing::{MockNsqd, TestNsqdBuilder};
    ///
    /// let nsqd = MockNsqd::with_options(TestNsqdBuilder::new().max_rdy_count(100)).unwrap();
    /// # drop(nsqd);
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an option nsqd would refuse to start with, and for TLS or AUTH,
    /// which the mock does not offer.
    pub fn with_options(options: TestNsqdBuilder) -> Result<Self, Error> {
        Ok(Self::with(options.into_mock_options()?))
    }

    fn with(opts: Options) -> Self {
        let (accept_tx, accept_rx) = mpsc::unbounded_channel();
        let addr = format!("mock-nsqd-{}:4150", NEXT_MOCK.fetch_add(1, Relaxed));
        let shared = Arc::new(Shared {
            addr: addr.clone(),
            opts,
            accept_tx,
            accept_rx: tokio::sync::Mutex::new(accept_rx),
            refuse: AtomicU32::new(0),
            dials: AtomicU32::new(0),
            links: AtomicU64::new(0),
            messages: AtomicU64::new(0),
        });
        let mut mocks = registry().lock().unwrap_or_else(PoisonError::into_inner);
        mocks.retain(|_, mock| mock.strong_count() > 0);
        mocks.insert(addr, Arc::downgrade(&shared));
        Self { shared }
    }

    /// The address to give the consumer or producer builder's `nsqd(...)`.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// `config` with its TCP dial replaced by in-memory pipes to mocks. The same
    /// configuration reaches every live `MockNsqd` (by address); an address with no mock
    /// behind it is refused.
    pub fn connection_config(&self, mut config: ConnectionConfig) -> ConnectionConfig {
        config.dialer = Some(Dialer::new(|addr| {
            let opened = dial(addr);
            async move { opened }.boxed()
        }));
        config
    }

    /// The next connection a client opened, once its IDENTIFY is answered, waiting for it.
    pub async fn accept(&self) -> MockLink {
        let mut links = self.shared.accept_rx.lock().await;
        match links.recv().await {
            Some(link) => link,
            // The sender lives in `shared`, which this handle holds: never closed.
            None => std::future::pending().await,
        }
    }

    /// The next connection if one is waiting, without waiting.
    pub fn try_accept(&self) -> Option<MockLink> {
        self.shared.accept_rx.try_lock().ok()?.try_recv().ok()
    }

    /// Refuses the next `n` connection attempts (`ConnectionRefused`), as a down nsqd would.
    pub fn refuse_connections(&self, n: u32) {
        self.shared.refuse.store(n, Relaxed);
    }

    /// How many times clients dialled this mock, refused attempts included.
    pub fn dials(&self) -> u32 {
        self.shared.dials.load(Relaxed)
    }
}

impl Drop for MockNsqd {
    fn drop(&mut self) {
        registry()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.shared.addr);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
