//! # actix-nsq
//!
//! A production [NSQ](https://nsq.io) client built on [actix](https://actix.rs): consumers whose
//! handlers are actix actors, connections that heal themselves, go-nsq's flow control and
//! backoff (with its users' top complaints fixed), producers that pipeline and fail over, typed
//! HTTP clients for nsqd and nsqlookupd, an in-process nsqd for tests, and an RSMQ (Redis
//! Simple Message Queue) transport behind the same handler contract.
//!
//! ## Consuming
//!
//! A handler is an actix actor handling [`Delivery`] (or a closure, with
//! [`ConsumerBuilder::handler_fn`]). Its result answers the message: `Ok` finishes it, `Err`
//! requeues it with the default delay and backoff. A handler may also keep the delivery and
//! answer later ([`Delivery::finish`], [`Delivery::requeue`], [`Delivery::touch`]) from any task
//! or actor.
//!
//! ```no_run
//! use actix::prelude::*;
//! use actix_nsq::{Consumer, Delivery, HandlerResult};
//!
//! struct Indexer;
//!
//! impl Actor for Indexer {
//!     type Context = Context<Self>;
//! }
//!
//! impl Handler<Delivery> for Indexer {
//!     type Result = HandlerResult;
//!
//!     fn handle(&mut self, delivery: Delivery, _: &mut Context<Self>) -> HandlerResult {
//!         println!("{} bytes, attempt {}", delivery.body().len(), delivery.attempts());
//!         Ok(()) // FIN; an Err would REQ with backoff
//!     }
//! }
//!
//! #[actix_rt::main]
//! async fn main() -> Result<(), actix_nsq::Error> {
//!     let consumer = Consumer::builder("events", "indexer")
//!         .lookupd("http://127.0.0.1:4161") // and/or .nsqd("127.0.0.1:4150")
//!         .max_in_flight(200)
//!         .handler(Indexer.start().recipient())
//!         .start()?;
//!     actix_rt::signal::ctrl_c().await?;
//!     consumer.stop().await; // CLS, drain in-flight messages, close
//!     Ok(())
//! }
//! ```
//!
//! ## Publishing
//!
//! ```no_run
//! # #[actix_rt::main]
//! # async fn main() -> Result<(), actix_nsq::Error> {
//! use std::time::Duration;
//! use actix_nsq::Producer;
//!
//! let producer = Producer::builder().nsqd("127.0.0.1:4150").nsqd("127.0.0.1:4250").start()?;
//! producer.publish("events", "hello").await?;                              // PUB
//! producer.multi_publish("events", ["a", "b", "c"]).await?;                // MPUB
//! producer.deferred_publish("events", Duration::from_secs(5), "later").await?; // DPUB
//! producer.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Ready-made pieces
//!
//! * Batches (gnsq `BatchHandler`): [`ConsumerBuilder::handler_batch`] (one answer for the
//!   batch), [`handler_batch_each`](ConsumerBuilder::handler_batch_each) (one per message),
//!   [`handler_batch_actor`](ConsumerBuilder::handler_batch_actor).
//! * A `Stream` of deliveries instead of a handler (gnsq `QueueHandler`):
//!   [`ConsumerBuilder::into_stream`].
//! * Give-up handlers (gnsq `LogGiveupHandler`, `JSONLogGiveupHandler`, `NsqdGiveupHandler`):
//!   [`GiveUpHandler`], set with [`ConsumerBuilder::give_up_handler`].
//! * One raw connection, handshake done, for building your own client (pynsq `AsyncConn`,
//!   gnsq `NsqdTCPClient`): [`NsqdLink`].
//!
//! ## Testing without a server
//!
//! With the `testing` feature, `testing::TestNsqd` is an in-process nsqd on `127.0.0.1:0` that
//! behaves like nsqd 1.3 (checked against the real one) and records every command;
//! `testing::MockNsqd` runs a whole consumer or producer against a scripted nsqd behind
//! in-memory pipes, with no sockets and deterministic under `tokio::time::pause()`, for
//! actor-level tests of handlers, backoff, give-up, reconnects and graceful stop; and
//! `testing::MockDelivery` hands one message to a handler with no server at all.
//!
//! ## Layout
//!
//! Three layers, kept strictly apart: [`protocol`] (the NSQ TCP protocol, pure bytes <-> types),
//! a transport layer (TLS, snappy and deflate as stream wrappers, and the handshake), and the
//! actors. [`http`] holds the HTTP clients.
//!
//! ## The actors, who supervises whom, and which thread runs what
//!
//! ```text
//!  Consumer (handle) ──messages──▶ coordinator actor  [Supervisor; restarts keep its state]
//!                                   ├─ flow core: RDY split + backoff (pure policy, src/rdy)
//!                                   ├─ lookupd discoverer actor   [Supervisor]
//!                                   └─ connection actor per nsqd  [Supervisor; reconnects in place]
//!  connection ──Delivery──▶ handlers:  supervised actor pool (restarted from factories)
//!                                      | closure | blocking threads
//!  handler ──answer (FIN/REQ/TOUCH)──▶ connection ──coalesced write──▶ nsqd
//!  connection ──synchronous call──▶ flow core ──SetRdy (Recipient)──▶ other connections
//! ```
//!
//! * The coordinator, the discoverer and every connection run on the arbiter the consumer was
//!   started on. A connection calls the flow core synchronously (same thread): the RDY it must
//!   lower goes out before the FIN/REQ that frees the slot (nsq#404), with no actor hop per
//!   message. The flow core reaches other connections through `Recipient<SetRdy>` only.
//! * A lost link does not stop its connection actor: it reconnects in place with backoff and
//!   jitter; the link's in-flight messages keep their slots until answered or nsqd's
//!   `msg_timeout` passes. The coordinator restarts (under actix's `Supervisor`) without losing
//!   its connections, flow state or backoff timer.
//! * Handlers: supervised actors started from a factory on the consumer's arbiter or one you
//!   pick, restarted after a panic within a budget; closures on the consumer's arbiter; blocking
//!   handlers on threads of their own. What runs on the consumer's arbiter must not block it
//!   (heartbeats, reads and FINs stop); see [`ConsumerBuilder::handler_blocking`].
//! * A message no handler saw never counts as an attempt. While no handler actor is alive the
//!   consumer sends RDY 0 and holds what it has ([`HandlerEvent::Unavailable`]).
//! * The producer is one connection actor per nsqd, the same actor without a subscription.
//!
//! ## Cargo features
//!
//! * `testing`: the `testing` module, the in-process nsqd and nsqlookupd and the handler mock.
//! * `rsmq`: the `rsmq` module, the RSMQ client and consumer (adds the `redis` crate).
//! * `metrics`: counters, gauges and histograms through the `metrics` facade, labelled by
//!   topic, channel and nsqd, for any exporter; see the `metrics` module.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::print_stdout))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(rustdoc::broken_intra_doc_links, rustdoc::invalid_codeblock_attributes)]

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod conn;
mod consumer;
mod delivery;
mod error;
mod events;
mod handler;
mod handler_setters;
pub mod http;
mod link;
mod lookup;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod producer;
pub mod protocol;
mod rdy;
mod retry;
#[cfg(feature = "rsmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rsmq")))]
pub mod rsmq;
mod runtime;
mod stream;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod transport;

pub use conn::{ConnId, ConnectionConfig, ConnectionEvent, ConnectionStats};
pub use consumer::{Consumer, ConsumerBuilder, ConsumerEvent, ConsumerStats};
pub use delivery::{Action, Delivery, HandlerError, HandlerResult};
pub use error::{BodyError, Error, NameKind, ProtocolError, Result, RsmqErrorKind};
pub use events::{ListenerId, MessageEvent};
pub use handler::{
    BatchResult, BlockingHandler, DeliveryBatch, GiveUp, GiveUpHandler, HandlerEvent,
};
pub use http::{
    LookupResponse, LookupdHttpClient, NodeInfo, NsqdHttpClient, ProducerInfo, SkippedProducer,
};
pub use link::NsqdLink;
pub use producer::{IntoTopic, Producer, ProducerBuilder, RetryPolicy};
// `protocol::Message` (the wire frame) stays in `protocol`: a top-level `Message` would clash
// with `actix::Message` under `use actix::prelude::*; use actix_nsq::*;`.
pub use protocol::{Channel, MessageId, Topic};
pub use rdy::{BackoffStrategy, FlowControl};
pub use retry::ReconnectPolicy;
pub use stream::ConsumerStream;
pub use transport::{Compression, Negotiated, Secret, TlsConfig};
