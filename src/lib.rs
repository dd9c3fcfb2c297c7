//! # actix-nsq
//!
//! A production NSQ client built on actix actors: consumers whose handlers are actors,
//! connections that heal themselves, go-nsq's flow control and backoff, an in-process nsqd for
//! tests, and an RSMQ transport beside it.
//!
//! The crate has three layers, kept strictly apart:
//!
//! * [`protocol`]: the NSQ TCP protocol, pure bytes <-> types;
//! * `transport`: TLS, snappy and deflate as stream wrappers, and the handshake;
//! * actors: one connection actor per nsqd, discovery, the RDY coordinator, handlers.
//!
//! Beside them, [`http`] holds typed clients for the HTTP APIs of nsqd and nsqlookupd.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::print_stdout))]
#![deny(rustdoc::broken_intra_doc_links, rustdoc::invalid_codeblock_attributes)]

mod conn;
mod consumer;
mod delivery;
mod error;
mod handler;
pub mod http;
mod lookup;
mod producer;
pub mod protocol;
mod rdy;
mod retry;
#[cfg(feature = "rsmq")]
pub mod rsmq;
#[cfg(feature = "testing")]
pub mod testing;
mod transport;

pub use conn::{ConnId, ConnectionConfig, ConnectionEvent, ConnectionStats};
pub use consumer::{Consumer, ConsumerBuilder, ConsumerEvent, ConsumerStats};
pub use delivery::{Action, Delivery, HandlerError, HandlerResult};
pub use error::{BodyError, Error, NameKind, ProtocolError, Result};
pub use handler::{GiveUp, HandlerFuture};
pub use http::{LookupdHttpClient, NsqdHttpClient};
pub use lookup::{LookupResponse, NodeInfo, ProducerInfo};
pub use producer::{IntoTopic, Producer, ProducerBuilder, RetryPolicy};
pub use protocol::{Channel, Message, MessageId, Topic};
pub use rdy::{BackoffStrategy, FlowControl};
pub use retry::ReconnectPolicy;
pub use transport::{Compression, Negotiated, Secret, TlsConfig};
