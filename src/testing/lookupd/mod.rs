//! [`TestLookupd`]: an in-process nsqlookupd with its HTTP API, a registration database the
//! test nsqds register with, and `/lookup` faults on demand.

mod api;
mod db;
mod registrar;

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc, Arc, Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant},
};

use tokio::{net::TcpListener, sync::oneshot};

pub(crate) use registrar::{LookupdLink, PeerSpec, Registrar};

use self::db::{Lifetimes, RegistrationDb};
use super::http::{serve, test_tls_acceptor, ServerConfig};
use crate::{error::Error, http::ProducerInfo};

/// How long starting the server thread may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A way for `/lookup` to misbehave (see [`TestLookupd::set_lookup_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupFault {
    /// Answer with this status and `{"message": "INTERNAL_ERROR"}`.
    Status(u16),
    /// Answer `200` with a body that is not JSON.
    Garbage,
    /// Answer correctly, after this delay.
    Slow(Duration),
    /// Close the connection without answering.
    HangUp,
}

/// What the server thread and the handle share.
pub(crate) struct State {
    lifetimes: Lifetimes,
    db: Mutex<RegistrationDb>,
    fault: Mutex<Option<LookupFault>>,
    /// A raw `/lookup` body served instead of the real answer.
    answer: Mutex<Option<String>>,
    legacy: AtomicBool,
    requests: Mutex<Vec<String>>,
}

/// A poisoned lock only means a test thread panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    pub(crate) fn db(&self) -> MutexGuard<'_, RegistrationDb> {
        lock(&self.db)
    }

    fn lookup_fault(&self) -> Option<LookupFault> {
        *lock(&self.fault)
    }

    fn lookup_answer(&self) -> Option<String> {
        lock(&self.answer).clone()
    }

    fn record(&self, line: String) {
        lock(&self.requests).push(line);
    }
}

/// Configures and starts a [`TestLookupd`]; the lifetimes default to nsqlookupd's.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct TestLookupdBuilder {
    http_address: SocketAddr,
    lifetimes: Lifetimes,
    tls: bool,
}

impl TestLookupdBuilder {
    /// `--inactive-producer-timeout`.
    pub const DEFAULT_INACTIVE_PRODUCER_TIMEOUT: Duration = Duration::from_secs(300);
    /// `--tombstone-lifetime`.
    pub const DEFAULT_TOMBSTONE_LIFETIME: Duration = Duration::from_secs(45);

    /// nsqlookupd's defaults, listening on `127.0.0.1:0`.
    pub fn new() -> Self {
        Self {
            http_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            lifetimes: Lifetimes {
                inactive_producer_timeout: Self::DEFAULT_INACTIVE_PRODUCER_TIMEOUT,
                tombstone_lifetime: Self::DEFAULT_TOMBSTONE_LIFETIME,
            },
            tls: false,
        }
    }

    /// `--http-address`: where to listen (port 0 picks a free port).
    pub fn http_address(mut self, addr: SocketAddr) -> Self {
        self.http_address = addr;
        self
    }

    /// `--inactive-producer-timeout`: an nsqd not heard from for longer (nsqd pings every
    /// 15 s) is left out of `/lookup` and `/nodes`.
    pub fn inactive_producer_timeout(mut self, timeout: Duration) -> Self {
        self.lifetimes.inactive_producer_timeout = timeout;
        self
    }

    /// `--tombstone-lifetime`: how long `/topic/tombstone` hides a producer from `/lookup`.
    pub fn tombstone_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetimes.tombstone_lifetime = lifetime;
        self
    }

    /// Serve HTTPS with the test certificate (`src/testing/certs/server.pem`, signed by
    /// `ca.pem`, valid for `localhost` and `127.0.0.1`). nsqlookupd itself has no HTTPS; this
    /// stands in for one behind a TLS-terminating proxy.
    pub fn tls(mut self, enabled: bool) -> Self {
        self.tls = enabled;
        self
    }

    /// Starts the server on its own thread.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the address cannot be bound; [`Error::Tls`] if the test certificate
    /// cannot be loaded.
    pub fn start(self) -> Result<TestLookupd, Error> {
        TestLookupd::spawn(self)
    }
}

impl Default for TestLookupdBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// An nsqlookupd for tests, on its own thread with its own tokio runtime.
///
/// Clients see nsqlookupd v1.3's HTTP API on [`http_addr`](Self::http_addr): `/ping`,
/// `/info`, `/lookup`, `/topics`, `/channels`, `/nodes`, `/topic/create|delete|tombstone`,
/// `/channel/create|delete`, with nsqlookupd's status codes and messages. A
/// [`TestNsqd`](super::TestNsqd) built with
/// [`lookupd(&lookupd)`](super::TestNsqdBuilder::lookupd) registers with it the way nsqd does
/// over TCP (identify, its topics and channels as they come and go, a ping every 15 s, gone
/// when it stops), so a consumer pointed at [`url`](Self::url) discovers it for real.
///
/// Like nsqlookupd, a topic stays listed in `/topics` after its last producer left; `/lookup`
/// then shows it with no producers.
///
/// ```no_run
/// # fn main() -> Result<(), actix_nsq::Error> {
/// use actix_nsq::testing::{TestLookupd, TestNsqd};
///
/// let lookupd = TestLookupd::start()?;
/// let nsqd = TestNsqd::builder().lookupd(&lookupd).start()?;
/// nsqd.create_topic("events")?;
/// assert_eq!(lookupd.producers("events").len(), 1);
/// // ... Consumer::builder("events", "c").lookupd(lookupd.url()) ...
/// # Ok(())
/// # }
/// ```
pub struct TestLookupd {
    state: Arc<State>,
    http_addr: SocketAddr,
    tls: bool,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl fmt::Debug for TestLookupd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestLookupd")
            .field("http_addr", &self.http_addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl TestLookupd {
    /// A builder with nsqlookupd's defaults.
    pub fn builder() -> TestLookupdBuilder {
        TestLookupdBuilder::new()
    }

    /// Starts a server with nsqlookupd's defaults on `127.0.0.1:0`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when no port can be bound.
    pub fn start() -> Result<Self, Error> {
        Self::builder().start()
    }

    fn spawn(builder: TestLookupdBuilder) -> Result<Self, Error> {
        let tls = builder.tls.then(test_tls_acceptor).transpose()?;
        let state = Arc::new(State {
            lifetimes: builder.lifetimes,
            db: Mutex::default(),
            fault: Mutex::default(),
            answer: Mutex::default(),
            legacy: AtomicBool::new(false),
            requests: Mutex::default(),
        });
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let (shutdown, shutdown_rx) = oneshot::channel();
        let service = Arc::new(api::LookupdApi(state.clone()));
        let mut config = ServerConfig::new(64 * 1024);
        config.tls = tls;
        let address = builder.http_address;
        let thread = thread::Builder::new()
            .name("test-nsqlookupd".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::from(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let bound = TcpListener::bind(address)
                        .await
                        .and_then(|l| Ok((l.local_addr()?, l)));
                    let listener = match bound {
                        Ok((addr, listener)) => {
                            let _ = ready_tx.send(Ok(addr));
                            tracing::info!(%addr, "test nsqlookupd listening");
                            listener
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    tokio::select! {
                        () = serve(listener, service, config) => {}
                        _ = shutdown_rx => {}
                    }
                });
            })?;
        let http_addr = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Timeout("starting the test nsqlookupd")),
        };
        Ok(Self {
            state,
            http_addr,
            tls: builder.tls,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://127.0.0.1:<port>` (`https://` when built with [`tls`](TestLookupdBuilder::tls)),
    /// for a consumer's `lookupd(..)` or an HTTP client.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    pub(crate) fn link(&self) -> LookupdLink {
        LookupdLink::new(self.state.clone())
    }

    // ---- faults -------------------------------------------------------------------------

    /// Makes every `/lookup` misbehave as `fault` says until set back to `None`.
    pub fn set_lookup_fault(&self, fault: Option<LookupFault>) {
        *lock(&self.state.fault) = fault;
    }

    /// Answers every `/lookup` with `200` and this body as it is (with nsqlookupd 1.x's
    /// headers), whatever is registered, until set back to `None`: the way to test a client
    /// against answers a real nsqlookupd would not give, such as a `tcp_port` of `70000`.
    pub fn set_lookup_answer(&self, body: Option<String>) {
        *lock(&self.state.answer) = body;
    }

    /// Answers like nsqlookupd before 1.0 (`true`): every JSON answer wrapped in
    /// `{"status_code", "status_txt", "data"}`, errors too, and no `X-NSQ-Content-Type`
    /// header, whatever the client asks for.
    pub fn set_legacy_answers(&self, legacy: bool) {
        self.state.legacy.store(legacy, Ordering::SeqCst);
    }

    // ---- inspection ----------------------------------------------------------------------

    /// Every request served, as `"GET /lookup?topic=events"`, in order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state.requests).clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    /// The topics `/topics` lists.
    pub fn topics(&self) -> Vec<String> {
        self.state.db().topics()
    }

    /// The channels `/channels?topic=` lists.
    pub fn channels(&self, topic: &str) -> Vec<String> {
        self.state.db().channels(topic)
    }

    /// The producers `/lookup?topic=` lists now (active and not tombstoned).
    pub fn producers(&self, topic: &str) -> Vec<ProducerInfo> {
        let db = self.state.db();
        let found = db.lookup(topic, self.state.lifetimes, Instant::now());
        let peers = found.map(|(_, peers)| peers).unwrap_or_default();
        peers.into_iter().map(registrar::producer_info).collect()
    }

    /// Blocks until `done` holds or `timeout` passes; true if it held.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// As [`wait_until`](Self::wait_until), yielding to the async runtime (tokio or actix)
    /// between looks instead of blocking the thread.
    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for TestLookupd {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
