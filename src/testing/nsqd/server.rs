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
    task::JoinSet,
};

use super::{
    broker::{Broker, BrokerLimits},
    conn,
    options::Options,
    record::{ClientId, RecordedCommand},
};
use crate::error::Error;

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
        Self {
            opts,
            broker: Mutex::new(Broker::new(limits)),
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

/// Runs the server on the current thread until `control` closes. `ready` gets the bound
/// address, or why binding failed.
pub(crate) fn run(
    shared: Arc<Shared>,
    mut control: mpsc::UnboundedReceiver<Control>,
    ready: std_mpsc::SyncSender<Result<SocketAddr, Error>>,
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
        let listener = match TcpListener::bind(shared.opts.tcp_address).await {
            Ok(listener) => listener,
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return;
            }
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return;
            }
        };
        shared.listening.store(true, Ordering::SeqCst);
        let _ = ready.send(Ok(addr));
        tracing::info!(%addr, "test nsqd listening");
        let mut server = Server {
            shared,
            addr,
            listener: Some(listener),
            conns: JoinSet::new(),
        };
        let scanner = tokio::spawn(scan(server.shared.clone()));
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
        server.listener = None;
        server.shared.close_existing();
        server.conns.abort_all();
        while server.conns.join_next().await.is_some() {}
        tracing::info!(%addr, "test nsqd shut down");
    });
}

struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: Option<TcpListener>,
    conns: JoinSet<()>,
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
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
        self.shared.listening.store(false, Ordering::SeqCst);
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
        // The old sockets may linger briefly; tokio sets SO_REUSEADDR, so retrying is enough.
        let mut attempts = 0;
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.listener = Some(listener);
                    self.shared.listening.store(true, Ordering::SeqCst);
                    tracing::info!(addr = %self.addr, "test nsqd restarted");
                    return Ok(());
                }
                Err(e) if attempts < 50 && e.kind() == std::io::ErrorKind::AddrInUse => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
