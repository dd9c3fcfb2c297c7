//! The server thread: its own tokio runtime, the listener, the connection tasks, the queue
//! scanner, and the control requests the test handle sends (stop, kill, restart, ...).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc as std_mpsc, Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
};

use super::{
    broker::{Broker, BrokerLimits},
    conn,
    http::NsqdApi,
    options::{Options, NSQD_VERSION},
    record::{ClientId, RecordedCommand},
};
use crate::{
    error::Error,
    testing::{
        http::{serve, ServerConfig},
        lookupd::{PeerSpec, Registrar},
    },
};

/// Switches every connection watches. Connections are numbered by [`ClientId`], so "every
/// connection that exists now" is "every id below the next one".
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Signals {
    closed_below: u64,
    frozen_below: Option<u64>,
}

impl Signals {
    pub(crate) fn closed(&self, id: ClientId) -> bool {
        id.0 < self.closed_below
    }

    pub(crate) fn frozen(&self, id: ClientId) -> bool {
        self.frozen_below.is_some_and(|below| id.0 < below)
    }
}

/// What the server thread and the test handle share.
pub(crate) struct Shared {
    pub(crate) opts: Options,
    broker: Mutex<Broker>,
    recorder: Mutex<Vec<RecordedCommand>>,
    pub(crate) signals: watch::Sender<Signals>,
    next_client: AtomicU64,
    pub(crate) refuse: AtomicBool,
    pub(crate) listening: AtomicBool,
    pub(crate) frame_delay_micros: AtomicU64,
}

/// A poisoned lock only means a test thread panicked while holding it; the state is still
/// the best there is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn new(opts: Options) -> Self {
        let limits = BrokerLimits {
            max_msg_timeout: opts.max_msg_timeout,
            max_channel_consumers: opts.max_channel_consumers,
        };
        let lookupds = Registrar::new(opts.lookupds.clone());
        Self {
            opts,
            broker: Mutex::new(Broker::new(limits, lookupds)),
            recorder: Mutex::new(Vec::new()),
            signals: watch::Sender::new(Signals::default()),
            next_client: AtomicU64::new(1),
            refuse: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            frame_delay_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn broker(&self) -> MutexGuard<'_, Broker> {
        lock(&self.broker)
    }

    pub(crate) fn recorder(&self) -> MutexGuard<'_, Vec<RecordedCommand>> {
        lock(&self.recorder)
    }

    pub(crate) fn record(&self, command: RecordedCommand) {
        tracing::trace!(client = %command.client, line = %command.line, "command");
        if self.opts.record_commands {
            self.recorder().push(command);
        }
    }

    /// Freezes (or thaws) every connection that exists now.
    pub(crate) fn set_half_open(&self, on: bool) {
        let below = self.next_client.load(Ordering::SeqCst);
        self.signals
            .send_modify(|s| s.frozen_below = on.then_some(below));
    }

    fn close_existing(&self) {
        let below = self.next_client.load(Ordering::SeqCst);
        self.signals.send_modify(|s| s.closed_below = below);
    }
}

/// A request from the handle, answered once done.
pub(crate) enum Control {
    CloseAll(std_mpsc::SyncSender<Result<(), Error>>),
    Stop(std_mpsc::SyncSender<Result<(), Error>>),
    Kill(std_mpsc::SyncSender<Result<(), Error>>),
    Restart(std_mpsc::SyncSender<Result<(), Error>>),
}

/// How long connections get to go away when closed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// nsqd's lookup loop pings every nsqlookupd this often (`nsqd/lookup.go`).
const LOOKUPD_PING_INTERVAL: Duration = Duration::from_secs(15);

/// The bound TCP and HTTP addresses.
pub(crate) type Bound = (SocketAddr, SocketAddr);

async fn bind(
    tcp: SocketAddr,
    http: SocketAddr,
) -> Result<(TcpListener, TcpListener, Bound), Error> {
    let listener = TcpListener::bind(tcp).await?;
    let http_listener = TcpListener::bind(http).await?;
    let bound = (listener.local_addr()?, http_listener.local_addr()?);
    Ok((listener, http_listener, bound))
}

/// Runs the server on the current thread until `control` closes. `ready` gets the bound
/// addresses, or why binding failed.
pub(crate) fn run(
    shared: Arc<Shared>,
    mut control: mpsc::UnboundedReceiver<Control>,
    ready: std_mpsc::SyncSender<Result<Bound, Error>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    runtime.block_on(async move {
        let (listener, http_listener, (addr, http_addr)) =
            match bind(shared.opts.tcp_address, shared.opts.http_address).await {
                Ok(bound) => bound,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
        shared.listening.store(true, Ordering::SeqCst);
        let api = Arc::new(NsqdApi::new(shared.clone(), addr, http_addr));
        let mut server = Server {
            shared,
            addr,
            http_addr,
            api,
            listener: Some(listener),
            http: None,
            conns: JoinSet::new(),
        };
        // Registered with the nsqlookupds before the handle returns, so that a test sees
        // the registration as soon as it creates a topic.
        server.serve_http(http_listener);
        let _ = ready.send(Ok((addr, http_addr)));
        tracing::info!(%addr, %http_addr, "test nsqd listening");
        let scanner = tokio::spawn(scan(server.shared.clone()));
        let pinger = tokio::spawn(ping_lookupds(server.shared.clone()));
        loop {
            tokio::select! {
                request = control.recv() => match request {
                    Some(request) => server.handle(request).await,
                    None => break,
                },
                accepted = accept(server.listener.as_ref()) => server.accepted(accepted).await,
                Some(_) = server.conns.join_next(), if !server.conns.is_empty() => {}
            }
        }
        scanner.abort();
        pinger.abort();
        server.stop_listening();
        server.shared.broker().disconnect_lookupds();
        server.shared.close_existing();
        server.conns.abort_all();
        while server.conns.join_next().await.is_some() {}
        tracing::info!(%addr, "test nsqd shut down");
    });
}

struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    http_addr: SocketAddr,
    api: Arc<NsqdApi>,
    listener: Option<TcpListener>,
    /// The HTTP accept loop; aborting it drops its connections.
    http: Option<JoinHandle<()>>,
    conns: JoinSet<()>,
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

/// nsqd's lookup loop heartbeat.
async fn ping_lookupds(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(LOOKUPD_PING_INTERVAL);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        shared.broker().ping_lookupds();
    }
}

/// nsqd's `queueScanLoop`, without the sampling: every channel, every interval.
async fn scan(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.opts.queue_scan_interval);
    loop {
        ticker.tick().await;
        shared.broker().scan(Instant::now());
    }
}

impl Server {
    async fn accepted(&mut self, accepted: std::io::Result<TcpStream>) {
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                return;
            }
        };
        if self.shared.refuse.load(Ordering::SeqCst) {
            tracing::debug!("refusing connection");
            return;
        }
        // Go sets TCP_NODELAY on every connection.
        let _ = stream.set_nodelay(true);
        let id = ClientId(self.shared.next_client.fetch_add(1, Ordering::SeqCst));
        self.conns
            .spawn(conn::serve(self.shared.clone(), id, stream));
    }

    async fn handle(&mut self, request: Control) {
        match request {
            Control::CloseAll(reply) => {
                self.close_connections().await;
                let _ = reply.send(Ok(()));
            }
            Control::Stop(reply) => {
                self.stop().await;
                let _ = reply.send(Ok(()));
            }
            Control::Kill(reply) => {
                self.stop_listening();
                self.shared.close_existing();
                self.conns.abort_all();
                while self.conns.join_next().await.is_some() {}
                self.shared.broker().reset();
                let _ = reply.send(Ok(()));
            }
            Control::Restart(reply) => {
                if self.listener.is_some() {
                    self.stop().await;
                }
                let _ = reply.send(self.listen_again().await);
            }
        }
    }

    fn stop_listening(&mut self) {
        self.listener = None;
        if let Some(http) = self.http.take() {
            http.abort();
        }
        self.shared.listening.store(false, Ordering::SeqCst);
    }

    /// Serves the HTTP API and registers with the nsqlookupds, now that both ports are known.
    fn serve_http(&mut self, listener: TcpListener) {
        let config = ServerConfig::new(NsqdApi::max_body(&self.shared));
        self.http = Some(tokio::spawn(serve(listener, self.api.clone(), config)));
        let peer = PeerSpec {
            broadcast_address: self.addr.ip().to_string(),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            tcp_port: self.addr.port(),
            http_port: self.http_addr.port(),
            version: NSQD_VERSION.to_owned(),
        };
        self.shared.broker().connect_lookupds(&peer);
    }

    async fn close_connections(&mut self) {
        self.shared.close_existing();
        let drained = async { while self.conns.join_next().await.is_some() {} };
        if tokio::time::timeout(CLOSE_GRACE, drained).await.is_err() {
            self.conns.abort_all();
            while self.conns.join_next().await.is_some() {}
        }
    }

    /// A graceful nsqd exit: no more listening, connections closed, in-flight and deferred
    /// messages back in their queues.
    async fn stop(&mut self) {
        self.stop_listening();
        self.close_connections().await;
        self.shared.broker().exit_gracefully();
        tracing::info!(addr = %self.addr, "test nsqd stopped");
    }

    async fn listen_again(&mut self) -> Result<(), Error> {
        let listener = bind_again(self.addr).await?;
        let http_listener = bind_again(self.http_addr).await?;
        self.listener = Some(listener);
        self.shared.listening.store(true, Ordering::SeqCst);
        self.serve_http(http_listener);
        tracing::info!(addr = %self.addr, "test nsqd restarted");
        Ok(())
    }
}

/// Binds a port used before. The old sockets may linger briefly; tokio sets SO_REUSEADDR, so
/// retrying is enough.
async fn bind_again(addr: SocketAddr) -> Result<TcpListener, Error> {
    let mut attempts = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if attempts < 50 && e.kind() == std::io::ErrorKind::AddrInUse => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
