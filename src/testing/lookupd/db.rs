//! nsqlookupd's registration database (`nsqlookupd/registration_db.go`) and what its TCP
//! commands do to it (`lookup_protocol_v1.go`: IDENTIFY, REGISTER, UNREGISTER, PING, and the
//! clean-up when a connection closes). Pure: time comes in as `now`, and everything is kept
//! sorted so answers do not depend on hash order.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use crate::protocol::EPHEMERAL_SUFFIX;

/// A registration's category, as nsqlookupd names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Category {
    Client,
    Topic,
    Channel,
}

/// `Registration{Category, Key, SubKey}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Registration {
    pub(crate) category: Category,
    pub(crate) key: String,
    pub(crate) sub_key: String,
}

impl Registration {
    pub(crate) fn new(category: Category, key: &str, sub_key: &str) -> Self {
        Self {
            category,
            key: key.to_owned(),
            sub_key: sub_key.to_owned(),
        }
    }

    fn client() -> Self {
        Self::new(Category::Client, "", "")
    }

    /// `IsMatch`: `*` matches any key or sub-key.
    fn is_match(&self, category: Category, key: &str, sub_key: &str) -> bool {
        self.category == category
            && (key == "*" || self.key == key)
            && (sub_key == "*" || self.sub_key == sub_key)
    }
}

/// What an nsqd says about itself in IDENTIFY (`PeerInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerInfo {
    pub(crate) remote_address: String,
    pub(crate) hostname: String,
    pub(crate) broadcast_address: String,
    pub(crate) tcp_port: u16,
    pub(crate) http_port: u16,
    pub(crate) version: String,
}

struct Peer {
    info: PeerInfo,
    last_update: Instant,
}

/// A producer of one registration: tombstones are per registration (`Producer.tombstoned`).
type Producers = BTreeMap<String, Option<Instant>>;

/// How long producers stay visible.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    /// `--inactive-producer-timeout`: a producer not heard from for longer is left out.
    pub(crate) inactive_producer_timeout: Duration,
    /// `--tombstone-lifetime`: how long a tombstone hides a producer.
    pub(crate) tombstone_lifetime: Duration,
}

#[derive(Default)]
pub(crate) struct RegistrationDb {
    registrations: BTreeMap<Registration, Producers>,
    peers: HashMap<String, Peer>,
}

fn tombstoned(at: Option<Instant>, lifetime: Duration, now: Instant) -> bool {
    at.is_some_and(|at| now.saturating_duration_since(at) < lifetime)
}

impl RegistrationDb {
    // ---- registration_db.go ----------------------------------------------------------------

    pub(crate) fn add_registration(&mut self, k: Registration) {
        self.registrations.entry(k).or_default();
    }

    fn add_producer(&mut self, k: Registration, id: &str) -> bool {
        let producers = self.registrations.entry(k).or_default();
        if producers.contains_key(id) {
            return false;
        }
        producers.insert(id.to_owned(), None);
        true
    }

    /// Removes a producer; keys stay in the DB even with no producers left, as in nsqlookupd.
    fn remove_producer(&mut self, k: &Registration, id: &str) -> (bool, usize) {
        match self.registrations.get_mut(k) {
            Some(producers) => (producers.remove(id).is_some(), producers.len()),
            None => (false, 0),
        }
    }

    pub(crate) fn remove_registration(&mut self, k: &Registration) {
        self.registrations.remove(k);
    }

    pub(crate) fn find_registrations(
        &self,
        category: Category,
        key: &str,
        sub_key: &str,
    ) -> Vec<Registration> {
        self.registrations
            .keys()
            .filter(|k| k.is_match(category, key, sub_key))
            .cloned()
            .collect()
    }

    /// Producers of every matching registration, each peer once, with its tombstone there.
    fn find_producers(&self, category: Category, key: &str, sub_key: &str) -> Producers {
        let mut found = Producers::new();
        for (k, producers) in &self.registrations {
            if k.is_match(category, key, sub_key) {
                for (id, at) in producers {
                    found.entry(id.clone()).or_insert(*at);
                }
            }
        }
        found
    }

    fn lookup_registrations(&self, id: &str) -> Vec<Registration> {
        self.registrations
            .iter()
            .filter(|(_, producers)| producers.contains_key(id))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// `FilterByActive` followed by `PeerInfo`.
    fn active(&self, producers: &Producers, life: Lifetimes, now: Instant) -> Vec<&PeerInfo> {
        producers
            .iter()
            .filter(|(_, at)| !tombstoned(**at, life.tombstone_lifetime, now))
            .filter_map(|(id, _)| self.peers.get(id))
            .filter(|p| {
                now.saturating_duration_since(p.last_update) <= life.inactive_producer_timeout
            })
            .map(|p| &p.info)
            .collect()
    }

    // ---- lookup_protocol_v1.go ---------------------------------------------------------------

    /// IDENTIFY: the peer becomes a `client` producer.
    pub(crate) fn identify(&mut self, id: &str, info: PeerInfo, now: Instant) {
        self.peers.insert(
            id.to_owned(),
            Peer {
                info,
                last_update: now,
            },
        );
        self.add_producer(Registration::client(), id);
    }

    /// PING: the peer is alive.
    pub(crate) fn ping(&mut self, id: &str, now: Instant) {
        if let Some(peer) = self.peers.get_mut(id) {
            peer.last_update = now;
        }
    }

    /// REGISTER topic [channel].
    pub(crate) fn register(&mut self, id: &str, topic: &str, channel: Option<&str>) {
        if let Some(channel) = channel {
            self.add_producer(Registration::new(Category::Channel, topic, channel), id);
        }
        self.add_producer(Registration::new(Category::Topic, topic, ""), id);
    }

    /// UNREGISTER topic [channel]. An ephemeral channel or topic left without producers is
    /// removed; a topic unregistration also drops the peer from the topic's channels.
    pub(crate) fn unregister(&mut self, id: &str, topic: &str, channel: Option<&str>) {
        if let Some(channel) = channel {
            let k = Registration::new(Category::Channel, topic, channel);
            let (_, left) = self.remove_producer(&k, id);
            if left == 0 && channel.ends_with(EPHEMERAL_SUFFIX) {
                self.remove_registration(&k);
            }
            return;
        }
        for k in self.find_registrations(Category::Channel, topic, "*") {
            self.remove_producer(&k, id);
        }
        let k = Registration::new(Category::Topic, topic, "");
        let (_, left) = self.remove_producer(&k, id);
        if left == 0 && topic.ends_with(EPHEMERAL_SUFFIX) {
            self.remove_registration(&k);
        }
    }

    /// The connection closed: the peer leaves every registration (`IOLoop` exit).
    pub(crate) fn disconnect(&mut self, id: &str) {
        for k in self.lookup_registrations(id) {
            self.remove_producer(&k, id);
        }
        self.peers.remove(id);
    }

    // ---- http.go -----------------------------------------------------------------------------

    /// `/lookup`: `None` for an unknown topic (404 `TOPIC_NOT_FOUND`).
    pub(crate) fn lookup(
        &self,
        topic: &str,
        life: Lifetimes,
        now: Instant,
    ) -> Option<(Vec<String>, Vec<PeerInfo>)> {
        if self
            .find_registrations(Category::Topic, topic, "")
            .is_empty()
        {
            return None;
        }
        let producers = self.find_producers(Category::Topic, topic, "");
        let active = self.active(&producers, life, now);
        Some((self.channels(topic), active.into_iter().cloned().collect()))
    }

    pub(crate) fn topics(&self) -> Vec<String> {
        let keys = self.find_registrations(Category::Topic, "*", "");
        keys.into_iter().map(|k| k.key).collect()
    }

    pub(crate) fn channels(&self, topic: &str) -> Vec<String> {
        let keys = self.find_registrations(Category::Channel, topic, "*");
        keys.into_iter().map(|k| k.sub_key).collect()
    }

    /// `/nodes`: active peers (tombstones do not hide them here) with their topics and
    /// whether each is tombstoned.
    pub(crate) fn nodes(
        &self,
        life: Lifetimes,
        now: Instant,
    ) -> Vec<(PeerInfo, Vec<(String, bool)>)> {
        let clients = self.find_producers(Category::Client, "", "");
        let mut nodes = Vec::new();
        for (id, _) in clients {
            let Some(peer) = self.peers.get(&id) else {
                continue;
            };
            if now.saturating_duration_since(peer.last_update) > life.inactive_producer_timeout {
                continue;
            }
            let topics: BTreeSet<String> = self
                .lookup_registrations(&id)
                .into_iter()
                .filter(|k| k.category == Category::Topic)
                .map(|k| k.key)
                .collect();
            let topics = topics
                .into_iter()
                .map(|topic| {
                    let k = Registration::new(Category::Topic, &topic, "");
                    let at = self.registrations.get(&k).and_then(|p| p.get(&id)).copied();
                    let dead = tombstoned(at.flatten(), life.tombstone_lifetime, now);
                    (topic, dead)
                })
                .collect();
            nodes.push((peer.info.clone(), topics));
        }
        nodes
    }

    /// `/topic/delete`: the topic and its channels go, producers and all.
    pub(crate) fn delete_topic(&mut self, topic: &str) {
        for k in self.find_registrations(Category::Channel, topic, "*") {
            self.remove_registration(&k);
        }
        self.remove_registration(&Registration::new(Category::Topic, topic, ""));
    }

    /// `/topic/tombstone`: tombstones the producers whose `broadcast_address:http_port` is
    /// `node`.
    pub(crate) fn tombstone(&mut self, topic: &str, node: &str, now: Instant) {
        let k = Registration::new(Category::Topic, topic, "");
        let Some(producers) = self.registrations.get_mut(&k) else {
            return;
        };
        for (id, at) in producers.iter_mut() {
            let matches = self.peers.get(id).is_some_and(|p| {
                format!("{}:{}", p.info.broadcast_address, p.info.http_port) == node
            });
            if matches {
                *at = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: Lifetimes = Lifetimes {
        inactive_producer_timeout: Duration::from_secs(300),
        tombstone_lifetime: Duration::from_secs(45),
    };

    fn peer(port: u16) -> PeerInfo {
        PeerInfo {
            remote_address: format!("127.0.0.1:{port}"),
            hostname: "h".into(),
            broadcast_address: "127.0.0.1".into(),
            tcp_port: port,
            http_port: port + 1,
            version: "1.3.0".into(),
        }
    }

    fn ports(found: Option<(Vec<String>, Vec<PeerInfo>)>) -> Vec<u16> {
        found.unwrap().1.iter().map(|p| p.tcp_port).collect()
    }

    #[test]
    fn register_lookup_and_disconnect() {
        let now = Instant::now();
        let mut db = RegistrationDb::default();
        assert_eq!(db.lookup("t", LIFE, now), None);
        db.identify("a", peer(4150), now);
        db.identify("b", peer(4250), now);
        db.register("a", "t", Some("c"));
        db.register("b", "t", None);
        assert_eq!(db.topics(), ["t"]);
        assert_eq!(db.channels("t"), ["c"]);
        assert_eq!(ports(db.lookup("t", LIFE, now)), [4150, 4250]);
        db.disconnect("a");
        assert_eq!(ports(db.lookup("t", LIFE, now)), [4250]);
        // Keys stay behind with no producers, as in nsqlookupd.
        db.unregister("b", "t", None);
        let (channels, producers) = db.lookup("t", LIFE, now).unwrap();
        assert_eq!((channels, producers), (vec!["c".to_owned()], vec![]));
        assert_eq!(db.nodes(LIFE, now).len(), 1);
    }

    #[test]
    fn ephemeral_registrations_go_with_their_last_producer() {
        let now = Instant::now();
        let mut db = RegistrationDb::default();
        db.identify("a", peer(4150), now);
        db.register("a", "t", Some("c#ephemeral"));
        db.register("a", "e#ephemeral", None);
        db.unregister("a", "t", Some("c#ephemeral"));
        db.unregister("a", "e#ephemeral", None);
        assert_eq!(db.topics(), ["t"]);
        assert!(db.channels("t").is_empty());
    }

    #[test]
    fn inactive_producers_are_left_out_until_they_ping() {
        let t0 = Instant::now();
        let mut db = RegistrationDb::default();
        db.identify("a", peer(4150), t0);
        db.register("a", "t", None);
        let later = t0 + LIFE.inactive_producer_timeout + Duration::from_millis(1);
        assert!(ports(db.lookup("t", LIFE, later)).is_empty());
        assert!(db.nodes(LIFE, later).is_empty());
        db.ping("a", later);
        assert_eq!(ports(db.lookup("t", LIFE, later)), [4150]);
    }

    #[test]
    fn tombstones_hide_a_producer_for_their_lifetime() {
        let t0 = Instant::now();
        let mut db = RegistrationDb::default();
        db.identify("a", peer(4150), t0);
        db.identify("b", peer(4250), t0);
        db.register("a", "t", None);
        db.register("a", "u", None);
        db.register("b", "t", None);
        db.tombstone("t", "127.0.0.1:4151", t0);
        assert_eq!(ports(db.lookup("t", LIFE, t0)), [4250]);
        assert_eq!(ports(db.lookup("u", LIFE, t0)), [4150]);
        let nodes = db.nodes(LIFE, t0);
        assert_eq!(
            nodes[0].1,
            [("t".to_owned(), true), ("u".to_owned(), false)]
        );
        let expired = t0 + LIFE.tombstone_lifetime;
        db.ping("a", expired);
        db.ping("b", expired);
        assert_eq!(ports(db.lookup("t", LIFE, expired)), [4150, 4250]);
    }

    #[test]
    fn topic_deletion_takes_channels() {
        let now = Instant::now();
        let mut db = RegistrationDb::default();
        db.identify("a", peer(4150), now);
        db.register("a", "t", Some("c"));
        db.add_registration(Registration::new(Category::Topic, "x", ""));
        db.delete_topic("t");
        assert_eq!(db.topics(), ["x"]);
        assert!(db.channels("t").is_empty());
        assert_eq!(db.lookup("t", LIFE, now), None);
    }
}
