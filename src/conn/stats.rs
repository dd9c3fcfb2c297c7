//! Per-connection counters, written by the connection actor and read by anyone.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Live counters of one connection (cheap relaxed atomics).
#[derive(Debug, Default)]
pub(crate) struct ConnCounters {
    pub(crate) connected: AtomicBool,
    pub(crate) rdy: AtomicU32,
    pub(crate) max_rdy: AtomicU32,
    pub(crate) in_flight: AtomicU32,
    pub(crate) received: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) touched: AtomicU64,
    pub(crate) reconnects: AtomicU64,
}

/// A snapshot of one connection's state and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// The nsqd address.
    pub addr: String,
    /// Whether the link is up.
    pub connected: bool,
    /// The RDY last sent.
    pub rdy: u32,
    /// nsqd's `max_rdy_count`.
    pub max_rdy: u32,
    /// Messages delivered and not yet answered.
    pub in_flight: u32,
    /// Messages received since the connection actor started.
    pub received: u64,
    /// Messages finished.
    pub finished: u64,
    /// Messages requeued.
    pub requeued: u64,
    /// TOUCHes sent.
    pub touched: u64,
    /// Links lost and re-established.
    pub reconnects: u64,
}

impl ConnCounters {
    pub(crate) fn snapshot(&self, addr: &str) -> ConnectionStats {
        ConnectionStats {
            addr: addr.to_owned(),
            connected: self.connected.load(Relaxed),
            rdy: self.rdy.load(Relaxed),
            max_rdy: self.max_rdy.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            received: self.received.load(Relaxed),
            finished: self.finished.load(Relaxed),
            requeued: self.requeued.load(Relaxed),
            touched: self.touched.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
        }
    }
}
