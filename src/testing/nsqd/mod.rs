//! [`TestNsqd`]: an in-process nsqd that speaks the TCP protocol as nsqd v1.3 does, records
//! what clients send, and breaks on demand.

mod broker;
mod channel;
mod conn;
mod exec;
mod http;
mod http_stats;
mod identify;
mod options;
mod record;
mod server;
mod upgrade;

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, mpsc as std_mpsc, Arc},
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::mpsc;

pub use options::{TestNsqdBuilder, NSQD_VERSION};
pub use record::{
    ChannelSnapshot, ClientId, ClientInfo, ClientState, RecordedCommand, TopicSnapshot,
};

pub(in crate::testing) use identify::identify_without_upgrades;
pub(in crate::testing) use options::Options;

use conn::Outbound;
use server::{Control, Shared};

use crate::{
    error::{BodyError, Error},
    protocol::{Channel, Frame, MessageId, Topic},
};

/// How long a control request (stop, restart, ...) may take before the handle gives up.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the `wait_*` helpers look again.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// An nsqd for tests, running on its own thread with its own tokio runtime.
///
/// Clients see a real nsqd v1.3 on [`addr`](Self::addr): the same frames, the same `E_*`
/// errors with the same texts, the same state rules (RDY as a window, one SUB per
/// connection, `msg_timeout` requeues, deferred messages, CLS). The handle's methods are
/// synchronous and can be called from any test, including one running inside an actix
/// `System`; dropping the handle shuts the server down.
///
/// ```no_run
/// # fn main() -> Result<(), actix_nsq::Error> {
/// use std::time::Duration;
/// use actix_nsq::testing::TestNsqd;
///
/// let nsqd = TestNsqd::builder().msg_timeout(Duration::from_millis(200)).start()?;
/// nsqd.publish("events", "hello")?;
/// // ... point a consumer at nsqd.addr() ...
/// assert!(nsqd.wait_for_commands(Duration::from_secs(5), |cmds| {
///     cmds.iter().any(|c| c.name() == "FIN")
/// }));
/// assert_eq!(nsqd.depth("events", "archive"), 0);
/// # Ok(())
/// # }
/// ```
pub struct TestNsqd {
    shared: Arc<Shared>,
    addr: SocketAddr,
    http_addr: SocketAddr,
    control: mpsc::UnboundedSender<Control>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TestNsqd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNsqd")
            .field("addr", &self.addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

fn topic(name: &str) -> Result<Topic, Error> {
    Topic::new(name)
}

impl TestNsqd {
    /// A builder with nsqd's defaults.
    pub fn builder() -> TestNsqdBuilder {
        TestNsqdBuilder::new()
    }

    /// Starts a server with nsqd's defaults on `127.0.0.1:0`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when no port can be bound.
    pub fn start() -> Result<Self, Error> {
        Self::builder().start()
    }

    fn spawn(opts: options::Options) -> Result<Self, Error> {
        let shared = Arc::new(Shared::new(opts));
        let (control, control_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let server_shared = shared.clone();
        let thread = thread::Builder::new()
            .name("test-nsqd".to_owned())
            .spawn(move || server::run(server_shared, control_rx, ready_tx))?;
        let (addr, http_addr) = match ready_rx.recv_timeout(CONTROL_TIMEOUT) {
            Ok(Ok(bound)) => bound,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Timeout("starting the test nsqd")),
        };
        Ok(Self {
            shared,
            addr,
            http_addr,
            control,
            thread: Some(thread),
        })
    }

    /// The TCP address clients connect to (the same port across [`restart`](Self::restart)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP API's address (nsqd's `--http-address`; the same port across restarts).
    /// It answers as nsqd v1.3 does: `/ping`, `/info`, `/stats`, `/pub`, `/mpub`,
    /// `/topic/*`, `/channel/*` and `/config/:opt`.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://127.0.0.1:<http port>`, for an [`NsqdHttpClient`](crate::NsqdHttpClient).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    fn request(
        &self,
        make: impl FnOnce(std_mpsc::SyncSender<Result<(), Error>>) -> Control,
    ) -> Result<(), Error> {
        let (reply, answer) = std_mpsc::sync_channel(1);
        self.control.send(make(reply)).map_err(|_| Error::Stopped)?;
        match answer.recv_timeout(CONTROL_TIMEOUT) {
            Ok(result) => result,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout("test nsqd control")),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(Error::Stopped),
        }
    }

    // ---- publishing and administration ----------------------------------------------------

    /// Publishes a message straight into a topic (as nsqd's HTTP `/pub` would).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name nsqd would reject, [`Error::InvalidBody`] for an
    /// empty body.
    pub fn publish(&self, topic: &str, body: impl Into<Bytes>) -> Result<MessageId, Error> {
        self.publish_deferred(topic, body, Duration::ZERO)
    }

    /// Publishes a message that becomes deliverable after `delay` (HTTP `/pub?defer=`).
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), plus [`BodyError::DeferOutOfRange`] past
    /// `max_req_timeout`.
    pub fn publish_deferred(
        &self,
        topic: &str,
        body: impl Into<Bytes>,
        delay: Duration,
    ) -> Result<MessageId, Error> {
        let topic = self::topic(topic)?;
        let body = body.into();
        if body.is_empty() {
            return Err(BodyError::Empty.into());
        }
        let max = self.shared.opts.max_req_timeout;
        if delay > max {
            let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
            return Err(BodyError::DeferOutOfRange {
                ms: delay.as_millis(),
                max_ms,
            }
            .into());
        }
        let ids = self
            .shared
            .broker()
            .publish(&topic, vec![body], delay, Instant::now());
        ids.into_iter().next().ok_or(Error::Stopped)
    }

    /// Creates a topic (HTTP `/topic/create`); nothing happens if it exists.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name nsqd would reject.
    pub fn create_topic(&self, topic: &str) -> Result<(), Error> {
        let topic = self::topic(topic)?;
        self.shared.broker().create_topic(&topic);
        Ok(())
    }

    /// Creates a channel, and its topic if needed (HTTP `/channel/create`). Messages the
    /// topic held for lack of a channel go to it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name nsqd would reject.
    pub fn create_channel(&self, topic: &str, channel: &str) -> Result<(), Error> {
        let (topic, channel) = (self::topic(topic)?, Channel::new(channel)?);
        self.shared
            .broker()
            .create_channel(&topic, &channel, Instant::now());
        Ok(())
    }

    /// Deletes a topic, its channels and messages, closing its consumers' connections.
    /// False if there was no such topic.
    pub fn delete_topic(&self, topic: &str) -> bool {
        self.shared.broker().delete_topic(topic)
    }

    /// Deletes a channel and its messages, closing its consumers' connections.
    pub fn delete_channel(&self, topic: &str, channel: &str) -> bool {
        self.shared.broker().delete_channel(topic, channel)
    }

    /// Drops the messages a topic holds (not its channels').
    pub fn empty_topic(&self, topic: &str) -> bool {
        self.shared.broker().empty_topic(topic)
    }

    /// Drops a channel's queued, in-flight and deferred messages.
    pub fn empty_channel(&self, topic: &str, channel: &str) -> bool {
        self.shared
            .broker()
            .empty_channel(topic, channel, Instant::now())
    }

    /// Pauses a topic: it holds new messages instead of passing them to its channels.
    pub fn pause_topic(&self, topic: &str) -> bool {
        self.shared
            .broker()
            .set_topic_paused(topic, true, Instant::now())
    }

    /// Unpauses a topic; held messages go to its channels.
    pub fn unpause_topic(&self, topic: &str) -> bool {
        self.shared
            .broker()
            .set_topic_paused(topic, false, Instant::now())
    }

    /// Pauses a channel: it delivers nothing until unpaused.
    pub fn pause_channel(&self, topic: &str, channel: &str) -> bool {
        self.shared
            .broker()
            .set_channel_paused(topic, channel, true, Instant::now())
    }

    /// Unpauses a channel.
    pub fn unpause_channel(&self, topic: &str, channel: &str) -> bool {
        self.shared
            .broker()
            .set_channel_paused(topic, channel, false, Instant::now())
    }

    // ---- inspection -------------------------------------------------------------------

    /// Every topic with its channels and counters, by name.
    pub fn stats(&self) -> Vec<TopicSnapshot> {
        self.shared.broker().stats()
    }

    /// The topic names.
    pub fn topics(&self) -> Vec<String> {
        self.stats().into_iter().map(|t| t.name).collect()
    }

    /// A topic's channel names (empty if there is no such topic).
    pub fn channels(&self, topic: &str) -> Vec<String> {
        let stats = self.shared.broker().topic_stats(topic);
        stats
            .map(|t| t.channels.into_iter().map(|c| c.name).collect())
            .unwrap_or_default()
    }

    /// One channel's counters.
    pub fn channel_stats(&self, topic: &str, channel: &str) -> Option<ChannelSnapshot> {
        self.shared.broker().channel_stats(topic, channel)
    }

    fn channel_stat<T: Default>(
        &self,
        topic: &str,
        channel: &str,
        f: fn(ChannelSnapshot) -> T,
    ) -> T {
        self.channel_stats(topic, channel)
            .map(f)
            .unwrap_or_default()
    }

    /// Messages a topic holds (it has no channel yet, or is paused); 0 if there is no topic.
    pub fn topic_depth(&self, topic: &str) -> usize {
        self.shared
            .broker()
            .topic_stats(topic)
            .map(|t| t.depth)
            .unwrap_or_default()
    }

    /// Messages queued on a channel; 0 if there is no such channel.
    pub fn depth(&self, topic: &str, channel: &str) -> usize {
        self.channel_stat(topic, channel, |c| c.depth)
    }

    /// Messages in flight on a channel.
    pub fn in_flight(&self, topic: &str, channel: &str) -> usize {
        self.channel_stat(topic, channel, |c| c.in_flight)
    }

    /// Deferred messages on a channel.
    pub fn deferred(&self, topic: &str, channel: &str) -> usize {
        self.channel_stat(topic, channel, |c| c.deferred)
    }

    /// Messages finished on a channel.
    pub fn finished_count(&self, topic: &str, channel: &str) -> u64 {
        self.channel_stat(topic, channel, |c| c.finished_count)
    }

    /// Messages requeued with REQ on a channel.
    pub fn requeued_count(&self, topic: &str, channel: &str) -> u64 {
        self.channel_stat(topic, channel, |c| c.requeued_count)
    }

    /// Messages whose `msg_timeout` expired on a channel.
    pub fn timed_out_count(&self, topic: &str, channel: &str) -> u64 {
        self.channel_stat(topic, channel, |c| c.timed_out_count)
    }

    /// The connected clients (past the magic), by id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.shared.broker().clients()
    }

    /// One connected client.
    pub fn client(&self, id: ClientId) -> Option<ClientInfo> {
        self.shared.broker().client(id).map(|c| c.info.clone())
    }

    // ---- recording ----------------------------------------------------------------------

    /// Every command every client sent, in the order the server executed them.
    pub fn commands(&self) -> Vec<RecordedCommand> {
        self.shared.recorder().clone()
    }

    /// The commands one client sent, in order.
    pub fn commands_for(&self, client: ClientId) -> Vec<RecordedCommand> {
        self.shared
            .recorder()
            .iter()
            .filter(|c| c.client == client)
            .cloned()
            .collect()
    }

    /// Forgets the recorded commands.
    pub fn clear_commands(&self) {
        self.shared.recorder().clear();
    }

    /// Blocks until `done` holds for the recorded commands, or `timeout` passes. True if it
    /// held. Do not call it on the thread that runs the client under test; use
    /// [`wait_for_commands_async`](Self::wait_for_commands_async) there.
    pub fn wait_for_commands(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[RecordedCommand]) -> bool,
    ) -> bool {
        self.wait_until(timeout, |nsqd| done(&nsqd.shared.recorder()))
    }

    /// As [`wait_for_commands`](Self::wait_for_commands), but yields to the async runtime
    /// (tokio or actix) between looks instead of blocking the thread.
    pub async fn wait_for_commands_async(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[RecordedCommand]) -> bool,
    ) -> bool {
        self.wait_until_async(timeout, |nsqd| done(&nsqd.shared.recorder()))
            .await
    }

    /// Blocks until `done` holds (it gets the handle, to look at stats or commands), or
    /// `timeout` passes. True if it held.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// As [`wait_until`](Self::wait_until), yielding to the async runtime between looks.
    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    // ---- faults -------------------------------------------------------------------------

    /// Closes every connection now; state is kept and in-flight messages stay in flight
    /// until they time out, as when nsqd loses a client.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] if the server thread is gone.
    pub fn close_all_connections(&self) -> Result<(), Error> {
        self.request(Control::CloseAll)
    }

    /// Makes every existing connection a silent peer (`true`): nothing is read or written,
    /// no heartbeats, no read timeouts, but the sockets stay open. `false` wakes them up;
    /// what was queued meanwhile is then written. New connections are not affected.
    pub fn set_half_open(&self, on: bool) {
        self.shared.set_half_open(on);
    }

    /// Delays every outgoing write by `delay` (zero to stop).
    pub fn delay_frames(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared
            .frame_delay_micros
            .store(micros, Ordering::Relaxed);
    }

    /// Accepts new connections and closes them at once (`true`), or serves them again.
    pub fn refuse_connections(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Stops like a gracefully exiting nsqd: the listener and every connection close, and
    /// in-flight and deferred messages go back to their queues (ephemeral topics and
    /// channels are gone). [`restart`](Self::restart) serves the same state on the same port.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] if the server thread is gone.
    pub fn stop(&self) -> Result<(), Error> {
        self.request(Control::Stop)
    }

    /// Dies like nsqd under SIGKILL: listener and connections drop and every topic, channel
    /// and message is lost. [`restart`](Self::restart) serves an empty server on the same port.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] if the server thread is gone.
    pub fn kill(&self) -> Result<(), Error> {
        self.request(Control::Kill)
    }

    /// Listens again on the same port (after a [`stop`](Self::stop) first if running).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the port cannot be bound again.
    pub fn restart(&self) -> Result<(), Error> {
        self.request(Control::Restart)
    }

    /// True while the server accepts connections (not stopped or killed).
    pub fn is_listening(&self) -> bool {
        self.shared.listening.load(Ordering::SeqCst)
    }

    /// Sends a frame to one client, out of turn (a server that lies). False if there is no
    /// such client.
    pub fn send_frame(&self, client: ClientId, frame: Frame) -> bool {
        self.send(client, Outbound::Frame(frame))
    }

    /// Sends raw bytes to one client (a server that breaks the framing).
    pub fn send_raw(&self, client: ClientId, bytes: impl Into<Bytes>) -> bool {
        self.send(client, Outbound::Raw(bytes.into()))
    }

    /// Closes one client's connection.
    pub fn close_client(&self, client: ClientId) -> bool {
        self.send(client, Outbound::Abort)
    }

    fn send(&self, client: ClientId, item: Outbound) -> bool {
        let broker = self.shared.broker();
        broker
            .client(client)
            .is_some_and(|c| c.out.send(item).is_ok())
    }
}

impl Drop for TestNsqd {
    fn drop(&mut self) {
        // Closing the control channel ends the server loop.
        let (control, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.control, control));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
