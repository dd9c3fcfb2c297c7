//! One channel's messages: the queue, the in-flight set ordered by deadline and the deferred
//! set ordered by due time, as `nsqd/channel.go` keeps them (its `inFlightPQ` and
//! `deferredPQ`). Pure: time comes in as `now`.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    fmt,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::record::{ChannelSnapshot, ClientId};
use crate::protocol::{Message, MessageId};

/// A message as the server stores it; `attempts` counts deliveries so far.
#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    pub(crate) id: MessageId,
    pub(crate) timestamp: i64,
    pub(crate) attempts: u16,
    pub(crate) body: Bytes,
}

impl StoredMessage {
    pub(crate) fn to_message(&self) -> Message {
        Message::new(self.id, self.timestamp, self.attempts, self.body.clone())
    }
}

#[derive(Debug)]
struct InFlight {
    msg: StoredMessage,
    client: ClientId,
    delivered_at: Instant,
    deadline: Instant,
}

/// Why FIN, REQ or TOUCH failed; the texts are nsqd's (`popInFlightMessage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotInFlight {
    Missing,
    NotOwner,
}

impl fmt::Display for NotInFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotInFlight::Missing => "ID not in flight",
            NotInFlight::NotOwner => "client does not own message",
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct ChannelState {
    queue: VecDeque<StoredMessage>,
    in_flight: HashMap<MessageId, InFlight>,
    deadlines: BTreeSet<(Instant, MessageId)>,
    deferred: HashMap<MessageId, (StoredMessage, Instant)>,
    due: BTreeSet<(Instant, MessageId)>,
    clients: Vec<ClientId>,
    cursor: usize,
    pub(crate) paused: bool,
    message_count: u64,
    finished_count: u64,
    requeued_count: u64,
    timed_out_count: u64,
}

impl ChannelState {
    /// A message from the topic (`Channel.PutMessage`).
    pub(crate) fn put(&mut self, msg: StoredMessage) {
        self.message_count += 1;
        self.queue.push_back(msg);
    }

    /// A deferred message from the topic (`PutMessageDeferred`).
    pub(crate) fn put_deferred(&mut self, msg: StoredMessage, due: Instant) {
        self.message_count += 1;
        self.defer(msg, due);
    }

    fn defer(&mut self, msg: StoredMessage, due: Instant) {
        self.due.insert((due, msg.id));
        self.deferred.insert(msg.id, (msg, due));
    }

    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    pub(crate) fn pop_queued(&mut self) -> Option<StoredMessage> {
        self.queue.pop_front()
    }

    /// Marks a message delivered (`StartInFlightTimeout`); the caller bumped its attempts.
    pub(crate) fn start_in_flight(
        &mut self,
        msg: StoredMessage,
        client: ClientId,
        now: Instant,
        timeout: Duration,
    ) {
        let deadline = now + timeout;
        self.deadlines.insert((deadline, msg.id));
        self.in_flight.insert(
            msg.id,
            InFlight {
                msg,
                client,
                delivered_at: now,
                deadline,
            },
        );
    }

    fn pop_in_flight(&mut self, client: ClientId, id: &MessageId) -> Result<InFlight, NotInFlight> {
        match self.in_flight.get(id) {
            None => return Err(NotInFlight::Missing),
            Some(entry) if entry.client != client => return Err(NotInFlight::NotOwner),
            Some(_) => {}
        }
        let entry = self.in_flight.remove(id).ok_or(NotInFlight::Missing)?;
        self.deadlines.remove(&(entry.deadline, entry.msg.id));
        Ok(entry)
    }

    /// FIN (`FinishMessage`).
    pub(crate) fn finish(&mut self, client: ClientId, id: &MessageId) -> Result<(), NotInFlight> {
        self.pop_in_flight(client, id)?;
        self.finished_count += 1;
        Ok(())
    }

    /// REQ (`RequeueMessage`): to the back of the queue, or deferred when `delay` > 0.
    pub(crate) fn requeue(
        &mut self,
        client: ClientId,
        id: &MessageId,
        delay: Duration,
        now: Instant,
    ) -> Result<(), NotInFlight> {
        let entry = self.pop_in_flight(client, id)?;
        self.requeued_count += 1;
        if delay.is_zero() {
            self.queue.push_back(entry.msg);
        } else {
            self.defer(entry.msg, now + delay);
        }
        Ok(())
    }

    /// TOUCH (`TouchMessage`): a fresh `msg_timeout`, but never past `max_msg_timeout` after
    /// the delivery.
    pub(crate) fn touch(
        &mut self,
        client: ClientId,
        id: &MessageId,
        now: Instant,
        msg_timeout: Duration,
        max_msg_timeout: Duration,
    ) -> Result<(), NotInFlight> {
        let mut entry = self.pop_in_flight(client, id)?;
        let cap = entry.delivered_at + max_msg_timeout;
        entry.deadline = (now + msg_timeout).min(cap);
        self.deadlines.insert((entry.deadline, entry.msg.id));
        self.in_flight.insert(entry.msg.id, entry);
        Ok(())
    }

    /// Requeues every message whose deadline passed (`processInFlightQueue`) and returns the
    /// clients that held them, so that their in-flight counts can drop.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<ClientId> {
        let mut owners = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(entry) = self.in_flight.remove(&id) {
                self.timed_out_count += 1;
                owners.push(entry.client);
                self.queue.push_back(entry.msg);
            }
        }
        owners
    }

    /// Moves due deferred messages to the queue (`processDeferredQueue`).
    pub(crate) fn release_due(&mut self, now: Instant) {
        while let Some(&(due, id)) = self.due.first() {
            if due > now {
                break;
            }
            self.due.pop_first();
            if let Some((msg, _)) = self.deferred.remove(&id) {
                self.queue.push_back(msg);
            }
        }
    }

    /// Drops every message (`Channel.Empty`).
    pub(crate) fn empty(&mut self) {
        self.queue.clear();
        self.in_flight.clear();
        self.deadlines.clear();
        self.deferred.clear();
        self.due.clear();
    }

    /// What a graceful nsqd exit does (`Channel.flush`): in-flight and deferred messages are
    /// written to the queue, so that they are delivered again after a restart.
    pub(crate) fn flush_for_exit(&mut self) {
        let mut in_flight: Vec<_> = self.in_flight.drain().map(|(_, e)| e).collect();
        in_flight.sort_by_key(|e| e.deadline);
        self.queue.extend(in_flight.into_iter().map(|e| e.msg));
        let mut deferred: Vec<_> = self.deferred.drain().map(|(_, d)| d).collect();
        deferred.sort_by_key(|(_, due)| *due);
        self.queue.extend(deferred.into_iter().map(|(msg, _)| msg));
        self.deadlines.clear();
        self.due.clear();
    }

    pub(crate) fn clients(&self) -> &[ClientId] {
        &self.clients
    }

    pub(crate) fn add_client(&mut self, client: ClientId) {
        if !self.clients.contains(&client) {
            self.clients.push(client);
        }
    }

    pub(crate) fn remove_client(&mut self, client: ClientId) {
        self.clients.retain(|c| *c != client);
    }

    /// The next client, round robin, for which `ready` holds: the clients of a channel
    /// compete for its messages.
    pub(crate) fn next_ready(&mut self, ready: impl Fn(ClientId) -> bool) -> Option<ClientId> {
        let n = self.clients.len();
        for step in 0..n {
            let i = (self.cursor + step) % n;
            if ready(self.clients[i]) {
                self.cursor = (i + 1) % n;
                return Some(self.clients[i]);
            }
        }
        None
    }

    pub(crate) fn stats(&self, name: &str) -> ChannelSnapshot {
        ChannelSnapshot {
            name: name.to_owned(),
            depth: self.queue.len(),
            in_flight: self.in_flight.len(),
            deferred: self.deferred.len(),
            message_count: self.message_count,
            finished_count: self.finished_count,
            requeued_count: self.requeued_count,
            timed_out_count: self.timed_out_count,
            clients: self.clients.clone(),
            paused: self.paused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> StoredMessage {
        let mut id = *b"000000000000000a";
        id[15] = b'a' + n;
        StoredMessage {
            id: MessageId::new(id).unwrap(),
            timestamp: 0,
            attempts: 0,
            body: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn only_the_owner_answers_and_only_while_in_flight() {
        let now = Instant::now();
        let mut ch = ChannelState::default();
        let m = msg(0);
        ch.start_in_flight(m.clone(), ClientId(1), now, Duration::from_secs(1));
        assert_eq!(ch.finish(ClientId(2), &m.id), Err(NotInFlight::NotOwner));
        assert_eq!(ch.finish(ClientId(1), &m.id), Ok(()));
        assert_eq!(ch.finish(ClientId(1), &m.id), Err(NotInFlight::Missing));
        assert_eq!(NotInFlight::Missing.to_string(), "ID not in flight");
    }

    #[test]
    fn timeouts_requeue_in_deadline_order_and_touch_is_capped() {
        let now = Instant::now();
        let mut ch = ChannelState::default();
        let (a, b) = (msg(0), msg(1));
        ch.start_in_flight(a.clone(), ClientId(1), now, Duration::from_secs(2));
        ch.start_in_flight(b.clone(), ClientId(1), now, Duration::from_secs(1));
        let max = Duration::from_secs(3);
        ch.touch(
            ClientId(1),
            &a.id,
            now + Duration::from_secs(1),
            Duration::from_secs(5),
            max,
        )
        .unwrap();
        assert_eq!(
            ch.expire(now + Duration::from_millis(2500)),
            vec![ClientId(1)]
        );
        assert_eq!(ch.pop_queued().unwrap().id, b.id);
        assert!(ch.expire(now + Duration::from_millis(2999)).is_empty());
        assert_eq!(ch.expire(now + max), vec![ClientId(1)]);
        assert_eq!(ch.stats("c").timed_out_count, 2);
    }

    #[test]
    fn deferred_requeue_waits_and_exit_flush_keeps_everything() {
        let now = Instant::now();
        let mut ch = ChannelState::default();
        let (a, b, c) = (msg(0), msg(1), msg(2));
        ch.start_in_flight(a.clone(), ClientId(1), now, Duration::from_secs(1));
        ch.requeue(ClientId(1), &a.id, Duration::from_secs(1), now)
            .unwrap();
        ch.release_due(now);
        assert!(!ch.has_queued());
        ch.release_due(now + Duration::from_secs(1));
        assert_eq!(ch.pop_queued().unwrap().id, a.id);
        ch.start_in_flight(b, ClientId(1), now, Duration::from_secs(1));
        ch.put_deferred(c, now + Duration::from_secs(9));
        ch.flush_for_exit();
        let stats = ch.stats("c");
        assert_eq!((stats.depth, stats.in_flight, stats.deferred), (2, 0, 0));
    }

    #[test]
    fn round_robin_skips_clients_that_are_not_ready() {
        let mut ch = ChannelState::default();
        for id in 1..=3 {
            ch.add_client(ClientId(id));
        }
        let picks: Vec<_> = (0..4)
            .filter_map(|_| ch.next_ready(|c| c != ClientId(2)))
            .map(|c| c.0)
            .collect();
        assert_eq!(picks, [1, 3, 1, 3]);
        assert_eq!(ch.next_ready(|_| false), None);
    }
}
