//! Test servers for exercising NSQ clients without a real nsqd (feature `testing`).
//!
//! [`MockDelivery`] hands one message to a handler with no server and records how it was
//! answered, for unit tests of handlers.
//!
//! [`MockNsqd`] is a scripted nsqd behind in-memory pipes, for actor-level tests of a whole
//! consumer or producer with no server and no sockets: push messages, heartbeats, errors and
//! disconnects, read back the typed commands the client sent; deterministic under
//! `tokio::time::pause()`.
//!
//! [`TestNsqd`] is an in-process nsqd: it speaks the TCP protocol exactly as nsqd v1.3 does
//! (frames, `E_*` errors and their texts, which errors close the connection, the client state
//! machine, RDY windows, timeouts, deferred messages), records every command clients send,
//! and injects faults on demand (closed and half-open connections, slow frames, refused
//! connections, graceful stop, kill, restart on the same port, lying frames). It negotiates
//! TLS (with the test certificates in [`certs`]), snappy and deflate as nsqd does, and serves
//! nsqd's HTTP API on [`TestNsqd::http_addr`].
//!
//! [`TestLookupd`] is an in-process nsqlookupd: its HTTP API over a registration database
//! that test nsqds register with, so consumers discover them through it, plus `/lookup`
//! faults (error status, garbage, slow, hang-up) and pre-1.0 answers on demand.

pub mod certs;
mod http;
mod lookupd;
mod mock;
mod mock_nsqd;
mod nsqd;

pub use lookupd::{LookupFault, TestLookupd, TestLookupdBuilder};
pub use mock::{Answer, HandlerOutcome, MockDelivery};
pub use mock_nsqd::{MockLink, MockNsqd};

pub use nsqd::{
    ChannelSnapshot, ClientId, ClientInfo, ClientState, RecordedCommand, TestNsqd, TestNsqdBuilder,
    TopicSnapshot, NSQD_VERSION,
};
