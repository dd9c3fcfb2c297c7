//! The server's state: topics, channels, clients, and the message pump that hands a channel's
//! messages to its ready clients. Connections, the queue scanner and the test handle all call
//! into it under one lock; it never blocks and takes the time as `now`.
//!
//! Semantics follow `nsqd/topic.go` (a topic copies each message to every channel and holds
//! messages while it has none), `nsqd/channel.go` (in-flight, deferred, timeouts) and
//! `nsqd/client_v2.go` (`IsReadyForMessages`: deliver while in-flight < RDY).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use super::{
    channel::{ChannelState, NotInFlight, StoredMessage},
    conn::Outbound,
    record::{ChannelSnapshot, ClientId, ClientInfo, ClientState, TopicSnapshot},
};
use crate::{
    protocol::{Channel, Frame, MessageId, Topic},
    testing::lookupd::{PeerSpec, Registrar},
};

pub(crate) struct ClientEntry {
    pub(crate) info: ClientInfo,
    pub(crate) out: UnboundedSender<Outbound>,
    pub(crate) sample_rate: i32,
    /// When it connected, in Unix seconds (`/stats` `connect_ts`).
    pub(crate) connected_at: i64,
}

impl ClientEntry {
    /// `IsReadyForMessages`, plus the state check that CLS's `RDY 0` implies.
    fn is_ready(&self) -> bool {
        self.info.state == ClientState::Subscribed
            && self.info.rdy > 0
            && self.info.in_flight < self.info.rdy
    }
}

#[derive(Default)]
struct TopicState {
    channels: BTreeMap<Channel, ChannelState>,
    /// Messages (with their DPUB delay) waiting for a channel or for the topic to unpause.
    held: VecDeque<(StoredMessage, Duration)>,
    paused: bool,
    message_count: u64,
    message_bytes: u64,
}

/// Limits the broker enforces itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BrokerLimits {
    pub(crate) max_msg_timeout: Duration,
    pub(crate) max_channel_consumers: usize,
}

pub(crate) struct Broker {
    limits: BrokerLimits,
    topics: BTreeMap<Topic, TopicState>,
    clients: HashMap<ClientId, ClientEntry>,
    next_message_id: u64,
    /// Tells the test nsqlookupds about topics and channels as they come and go, as nsqd's
    /// `Notify` does (`nsqd/lookup.go`).
    lookupds: Registrar,
}

fn unix_nanos() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

/// Hands queued messages to ready clients (the consumer side of nsqd's `messagePump`).
fn pump(channel: &mut ChannelState, clients: &mut HashMap<ClientId, ClientEntry>, now: Instant) {
    if channel.paused {
        return;
    }
    while channel.has_queued() {
        let Some(id) = channel.next_ready(|c| clients.get(&c).is_some_and(ClientEntry::is_ready))
        else {
            return;
        };
        let (Some(client), Some(mut msg)) = (clients.get_mut(&id), channel.pop_queued()) else {
            return;
        };
        // nsqd drops what sampling skips (`rand.Int31n(100) > sampleRate`).
        if client.sample_rate > 0 && rand::random_range(0..100) > client.sample_rate {
            continue;
        }
        msg.attempts = msg.attempts.saturating_add(1);
        client.info.in_flight += 1;
        client.info.message_count += 1;
        tracing::trace!(client = %id, msg_id = %msg.id, attempts = msg.attempts, "deliver");
        let _ = client
            .out
            .send(Outbound::Frame(Frame::Message(msg.to_message())));
        channel.start_in_flight(msg, id, now, client.info.msg_timeout);
    }
}

impl Broker {
    pub(crate) fn new(limits: BrokerLimits, lookupds: Registrar) -> Self {
        let seed = u64::try_from(unix_nanos()).unwrap_or(0) >> 20 << 20;
        Self {
            limits,
            topics: BTreeMap::new(),
            clients: HashMap::new(),
            next_message_id: seed,
            lookupds,
        }
    }

    /// Forgets every topic, channel, message and client (what `kill` leaves behind).
    pub(crate) fn reset(&mut self) {
        self.lookupds.disconnect();
        self.topics.clear();
        self.clients.clear();
    }

    // ---- nsqlookupd --------------------------------------------------------------------------

    /// Registers with the nsqlookupds: IDENTIFY, then every topic, each with its channels
    /// (`connectCallback`).
    pub(crate) fn connect_lookupds(&mut self, peer: &PeerSpec) {
        let registrations = self.topics.iter().flat_map(|(topic, t)| {
            let channels: Vec<Option<&str>> = if t.channels.is_empty() {
                vec![None]
            } else {
                t.channels.keys().map(|c| Some(c.as_str())).collect()
            };
            channels.into_iter().map(move |c| (topic.as_str(), c))
        });
        self.lookupds.connect(peer, registrations);
    }

    /// The connections to the nsqlookupds close (nsqd exits or dies).
    pub(crate) fn disconnect_lookupds(&mut self) {
        self.lookupds.disconnect();
    }

    /// The lookup loop's 15-second heartbeat.
    pub(crate) fn ping_lookupds(&self) {
        self.lookupds.ping();
    }

    /// The topic's state, created (and announced) if new (`GetTopic`).
    fn topic_entry(&mut self, topic: &Topic) -> &mut TopicState {
        if !self.topics.contains_key(topic.as_str()) {
            self.lookupds.register(topic, None);
        }
        self.topics.entry(topic.clone()).or_default()
    }

    /// A message with a fresh id: 16 lowercase hex digits, like nsqd's `guid.Hex()`.
    fn new_message(&mut self, body: Bytes) -> Option<StoredMessage> {
        self.next_message_id = self.next_message_id.wrapping_add(1);
        let id = MessageId::from_slice(format!("{:016x}", self.next_message_id).as_bytes()).ok()?;
        Some(StoredMessage {
            id,
            timestamp: unix_nanos(),
            attempts: 0,
            body,
        })
    }

    // ---- clients -------------------------------------------------------------------------

    pub(crate) fn add_client(&mut self, entry: ClientEntry) {
        self.clients.insert(entry.info.id, entry);
    }

    pub(crate) fn client(&self, id: ClientId) -> Option<&ClientEntry> {
        self.clients.get(&id)
    }

    pub(crate) fn client_mut(&mut self, id: ClientId) -> Option<&mut ClientEntry> {
        self.clients.get_mut(&id)
    }

    pub(crate) fn clients(&self) -> Vec<ClientInfo> {
        let mut all: Vec<_> = self.clients.values().map(|c| c.info.clone()).collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// The connection is gone (`IOLoop` exit, `RemoveClient`). Its in-flight messages stay in
    /// flight until they time out, as in nsqd; an ephemeral channel left without clients is
    /// deleted, and an ephemeral topic left without channels with it.
    pub(crate) fn remove_client(&mut self, id: ClientId) {
        let Some(entry) = self.clients.remove(&id) else {
            return;
        };
        let Some((topic, channel)) = entry.info.subscription else {
            return;
        };
        let Some(t) = self.topics.get_mut(topic.as_str()) else {
            return;
        };
        let Some(ch) = t.channels.get_mut(channel.as_str()) else {
            return;
        };
        ch.remove_client(id);
        if ch.clients().is_empty() && channel.ends_with(crate::protocol::EPHEMERAL_SUFFIX) {
            self.delete_channel(&topic, &channel);
        }
    }

    /// SUB: creates the topic and channel as needed (`GetTopic`, `GetChannel`, `AddClient`).
    pub(crate) fn subscribe(
        &mut self,
        id: ClientId,
        topic: &Topic,
        channel: &Channel,
        now: Instant,
    ) -> Result<(), String> {
        self.create_channel(topic, channel, now);
        let max = self.limits.max_channel_consumers;
        let t = self.topics.entry(topic.clone()).or_default();
        let ch = t.channels.entry(channel.clone()).or_default();
        if max != 0 && ch.clients().len() >= max {
            return Err(format!(
                "consumers for {topic}:{channel} exceeds limit of {max}"
            ));
        }
        ch.add_client(id);
        if let Some(client) = self.clients.get_mut(&id) {
            client.info.state = ClientState::Subscribed;
            client.info.subscription = Some((topic.to_string(), channel.to_string()));
        }
        Ok(())
    }

    fn with_channel_of<R>(
        &mut self,
        id: ClientId,
        f: impl FnOnce(&mut ChannelState, &mut HashMap<ClientId, ClientEntry>) -> R,
    ) -> Option<R> {
        let (topic, channel) = self.clients.get(&id)?.info.subscription.clone()?;
        let ch = self
            .topics
            .get_mut(topic.as_str())?
            .channels
            .get_mut(channel.as_str())?;
        Some(f(ch, &mut self.clients))
    }

    pub(crate) fn set_rdy(&mut self, id: ClientId, count: i64, now: Instant) {
        if let Some(client) = self.clients.get_mut(&id) {
            client.info.rdy = count;
        }
        self.with_channel_of(id, |ch, clients| pump(ch, clients, now));
    }

    /// CLS (`StartClose`): RDY 0, then state closing.
    pub(crate) fn start_close(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(&id) {
            client.info.rdy = 0;
            client.info.state = ClientState::Closing;
        }
    }

    /// FIN, REQ and TOUCH share this: the message must be in flight and owned by `id`.
    pub(crate) fn answer(
        &mut self,
        id: ClientId,
        msg_id: &MessageId,
        answer: Answer,
        now: Instant,
    ) -> Result<(), NotInFlight> {
        let max_msg_timeout = self.limits.max_msg_timeout;
        let result = self.with_channel_of(id, |ch, clients| {
            let msg_timeout = clients
                .get(&id)
                .map(|c| c.info.msg_timeout)
                .unwrap_or_default();
            let result = match answer {
                Answer::Finish => ch.finish(id, msg_id),
                Answer::Requeue(delay) => ch.requeue(id, msg_id, delay, now),
                Answer::Touch => ch.touch(id, msg_id, now, msg_timeout, max_msg_timeout),
            };
            if result.is_ok() && answer != Answer::Touch {
                if let Some(c) = clients.get_mut(&id) {
                    c.info.in_flight -= 1;
                    match answer {
                        Answer::Finish => c.info.finish_count += 1,
                        _ => c.info.requeue_count += 1,
                    }
                }
                pump(ch, clients, now);
            }
            result
        });
        result.unwrap_or(Err(NotInFlight::Missing))
    }

    // ---- topics and channels ---------------------------------------------------------------

    /// PUB, MPUB and DPUB (`Topic.PutMessages`): returns the new ids.
    pub(crate) fn publish(
        &mut self,
        topic: &Topic,
        bodies: Vec<Bytes>,
        delay: Duration,
        now: Instant,
    ) -> Vec<MessageId> {
        let messages: Vec<_> = bodies
            .into_iter()
            .filter_map(|b| self.new_message(b))
            .collect();
        let ids = messages.iter().map(|m| m.id).collect();
        let t = self.topic_entry(topic);
        t.message_count += messages.len() as u64;
        t.message_bytes += messages.iter().map(|m| m.body.len() as u64).sum::<u64>();
        t.held.extend(messages.into_iter().map(|m| (m, delay)));
        self.pump_topic(topic.as_str(), now);
        ids
    }

    /// Passes held messages to every channel (the topic's `messagePump`), then pumps them.
    fn pump_topic(&mut self, topic: &str, now: Instant) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        if t.paused || t.channels.is_empty() {
            return;
        }
        while let Some((msg, delay)) = t.held.pop_front() {
            for ch in t.channels.values_mut() {
                if delay.is_zero() {
                    ch.put(msg.clone());
                } else {
                    ch.put_deferred(msg.clone(), now + delay);
                }
            }
        }
        for ch in t.channels.values_mut() {
            pump(ch, &mut self.clients, now);
        }
    }

    pub(crate) fn create_topic(&mut self, topic: &Topic) {
        self.topic_entry(topic);
    }

    pub(crate) fn create_channel(&mut self, topic: &Topic, channel: &Channel, now: Instant) {
        let t = self.topic_entry(topic);
        if !t.channels.contains_key(channel.as_str()) {
            t.channels.insert(channel.clone(), ChannelState::default());
            self.lookupds.register(topic, Some(channel.as_str()));
            self.pump_topic(topic.as_str(), now);
        }
    }

    /// Deletes a topic and its channels, closing their clients' connections.
    pub(crate) fn delete_topic(&mut self, topic: &str) -> bool {
        let Some(t) = self.topics.remove(topic) else {
            return false;
        };
        // Topic.exit(deleted): UNREGISTER the topic, then each deleted channel.
        self.lookupds.unregister(topic, None);
        for (name, ch) in &t.channels {
            self.lookupds.unregister(topic, Some(name.as_str()));
            self.close_clients(ch.clients());
        }
        true
    }

    /// Deletes a channel, closing its clients' connections (`Channel.Delete`). An ephemeral
    /// topic goes with its last channel.
    pub(crate) fn delete_channel(&mut self, topic: &str, channel: &str) -> bool {
        let Some(t) = self.topics.get_mut(topic) else {
            return false;
        };
        let Some(ch) = t.channels.remove(channel) else {
            return false;
        };
        let now_empty = t.channels.is_empty();
        self.lookupds.unregister(topic, Some(channel));
        self.close_clients(ch.clients());
        if now_empty && topic.ends_with(crate::protocol::EPHEMERAL_SUFFIX) {
            self.topics.remove(topic);
            self.lookupds.unregister(topic, None);
        }
        true
    }

    fn close_clients(&mut self, ids: &[ClientId]) {
        for id in ids {
            if let Some(client) = self.clients.get_mut(id) {
                client.info.subscription = None;
                let _ = client.out.send(Outbound::Abort);
            }
        }
    }

    pub(crate) fn empty_topic(&mut self, topic: &str) -> bool {
        self.topics.get_mut(topic).map(|t| t.held.clear()).is_some()
    }

    /// Drops a channel's messages; its clients' in-flight counts go to zero (`client.Empty`).
    pub(crate) fn empty_channel(&mut self, topic: &str, channel: &str, now: Instant) -> bool {
        let Some(ch) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.channels.get_mut(channel))
        else {
            return false;
        };
        ch.empty();
        for id in ch.clients() {
            if let Some(client) = self.clients.get_mut(id) {
                client.info.in_flight = 0;
            }
        }
        pump(ch, &mut self.clients, now);
        true
    }

    pub(crate) fn set_topic_paused(&mut self, topic: &str, paused: bool, now: Instant) -> bool {
        let Some(t) = self.topics.get_mut(topic) else {
            return false;
        };
        t.paused = paused;
        self.pump_topic(topic, now);
        true
    }

    pub(crate) fn set_channel_paused(
        &mut self,
        topic: &str,
        channel: &str,
        paused: bool,
        now: Instant,
    ) -> bool {
        let Some(ch) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.channels.get_mut(channel))
        else {
            return false;
        };
        ch.paused = paused;
        pump(ch, &mut self.clients, now);
        true
    }

    // ---- time ----------------------------------------------------------------------------

    /// The queue scan (`queueScanLoop`): expired in-flight messages are requeued, due
    /// deferred ones released, and everything pumped.
    pub(crate) fn scan(&mut self, now: Instant) {
        for t in self.topics.values_mut() {
            for ch in t.channels.values_mut() {
                for owner in ch.expire(now) {
                    if let Some(client) = self.clients.get_mut(&owner) {
                        client.info.in_flight -= 1;
                    }
                }
                ch.release_due(now);
                pump(ch, &mut self.clients, now);
            }
        }
    }

    /// A graceful exit (`NSQD.Exit`): clients are gone, in-flight and deferred messages go
    /// back to their queues, and ephemeral topics and channels (which nsqd never persists)
    /// disappear.
    pub(crate) fn exit_gracefully(&mut self) {
        self.lookupds.disconnect();
        self.clients.clear();
        self.topics.retain(|name, _| !name.is_ephemeral());
        for t in self.topics.values_mut() {
            t.channels.retain(|name, _| !name.is_ephemeral());
            for ch in t.channels.values_mut() {
                ch.flush_for_exit();
                let ids = ch.clients().to_vec();
                for id in ids {
                    ch.remove_client(id);
                }
            }
        }
    }

    // ---- inspection ----------------------------------------------------------------------

    pub(crate) fn stats(&self) -> Vec<TopicSnapshot> {
        self.topics
            .iter()
            .map(|(name, t)| topic_stats(name, t))
            .collect()
    }

    pub(crate) fn topic_stats(&self, topic: &str) -> Option<TopicSnapshot> {
        self.topics
            .get_key_value(topic)
            .map(|(name, t)| topic_stats(name, t))
    }

    pub(crate) fn channel_stats(&self, topic: &str, channel: &str) -> Option<ChannelSnapshot> {
        let t = self.topics.get(topic)?;
        t.channels
            .get_key_value(channel)
            .map(|(name, ch)| ch.stats(name))
    }
}

fn topic_stats(name: &Topic, t: &TopicState) -> TopicSnapshot {
    TopicSnapshot {
        name: name.to_string(),
        depth: t.held.len(),
        message_count: t.message_count,
        message_bytes: t.message_bytes,
        paused: t.paused,
        channels: t.channels.iter().map(|(n, ch)| ch.stats(n)).collect(),
    }
}

/// How a client answers a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Finish,
    Requeue(Duration),
    Touch,
}

/// What a new connection registers with.
pub(crate) fn new_client_entry(
    id: ClientId,
    remote_addr: SocketAddr,
    out: UnboundedSender<Outbound>,
    msg_timeout: Duration,
) -> ClientEntry {
    let ip = remote_addr.ip().to_string();
    ClientEntry {
        info: ClientInfo {
            id,
            remote_addr,
            client_id: ip.clone(),
            hostname: ip,
            user_agent: String::new(),
            state: ClientState::Init,
            subscription: None,
            rdy: 0,
            in_flight: 0,
            message_count: 0,
            finish_count: 0,
            requeue_count: 0,
            msg_timeout,
            auth_identity: None,
            tls: false,
            snappy: false,
            deflate: false,
            deflate_level: 0,
        },
        out,
        sample_rate: 0,
        connected_at: i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
        .unwrap_or(i64::MAX),
    }
}
