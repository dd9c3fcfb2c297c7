//! In-process registration: what nsqd's lookup loop (`nsqd/lookup.go`) sends nsqlookupd over
//! TCP, as direct calls on the registration DB. A [`Registrar`] belongs to one test nsqd and
//! speaks to every [`TestLookupd`](super::TestLookupd) it was built with.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use super::{db::PeerInfo, State};
use crate::http::ProducerInfo;

/// One test nsqlookupd, as a registration target.
#[derive(Clone)]
pub(crate) struct LookupdLink(Arc<State>);

impl LookupdLink {
    pub(super) fn new(state: Arc<State>) -> Self {
        Self(state)
    }
}

/// What an nsqd tells nsqlookupd about itself in IDENTIFY (`connectCallback`).
#[derive(Debug, Clone)]
pub(crate) struct PeerSpec {
    pub(crate) broadcast_address: String,
    pub(crate) hostname: String,
    pub(crate) tcp_port: u16,
    pub(crate) http_port: u16,
    pub(crate) version: String,
}

pub(crate) fn producer_info(p: PeerInfo) -> ProducerInfo {
    ProducerInfo {
        remote_address: p.remote_address,
        hostname: p.hostname,
        broadcast_address: p.broadcast_address,
        tcp_port: p.tcp_port,
        http_port: p.http_port,
        version: p.version,
        // nsqlookupd v1.3.0 has no topology fields.
        ..ProducerInfo::default()
    }
}

/// Every session gets its own peer id, as every nsqd connection to nsqlookupd has its own
/// remote address.
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// One nsqd's registrations with its nsqlookupds. Between [`connect`](Self::connect) and
/// [`disconnect`](Self::disconnect) changes are forwarded; otherwise they are dropped, and
/// the next `connect` registers what exists then (as nsqd does on reconnecting).
pub(crate) struct Registrar {
    links: Vec<LookupdLink>,
    id: Option<String>,
}

impl Registrar {
    pub(crate) fn new(links: Vec<LookupdLink>) -> Self {
        Self { links, id: None }
    }

    fn each(&self, f: impl Fn(&mut super::db::RegistrationDb, &str)) {
        if let Some(id) = &self.id {
            for link in &self.links {
                f(&mut link.0.db(), id);
            }
        }
    }

    /// IDENTIFY, then REGISTER for every topic (with its channels) that exists.
    pub(crate) fn connect<'a>(
        &mut self,
        peer: &PeerSpec,
        registrations: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) {
        if self.links.is_empty() {
            return;
        }
        self.disconnect();
        let remote = format!("{}:{}", peer.broadcast_address, peer.tcp_port);
        let id = format!("{remote}#{}", SESSIONS.fetch_add(1, Ordering::Relaxed));
        let info = PeerInfo {
            remote_address: remote,
            hostname: peer.hostname.clone(),
            broadcast_address: peer.broadcast_address.clone(),
            tcp_port: peer.tcp_port,
            http_port: peer.http_port,
            version: peer.version.clone(),
        };
        let now = Instant::now();
        for link in &self.links {
            link.0.db().identify(&id, info.clone(), now);
        }
        self.id = Some(id);
        for (topic, channel) in registrations {
            self.register(topic, channel);
        }
        tracing::debug!(nsqd = %peer.tcp_port, lookupds = self.links.len(), "registered");
    }

    /// The connection closed: nsqlookupd forgets this nsqd's registrations.
    pub(crate) fn disconnect(&mut self) {
        self.each(|db, id| db.disconnect(id));
        self.id = None;
    }

    /// REGISTER topic [channel].
    pub(crate) fn register(&self, topic: &str, channel: Option<&str>) {
        self.each(|db, id| db.register(id, topic, channel));
    }

    /// UNREGISTER topic [channel].
    pub(crate) fn unregister(&self, topic: &str, channel: Option<&str>) {
        self.each(|db, id| db.unregister(id, topic, channel));
    }

    /// PING.
    pub(crate) fn ping(&self) {
        let now = Instant::now();
        self.each(|db, id| db.ping(id, now));
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.disconnect();
    }
}
