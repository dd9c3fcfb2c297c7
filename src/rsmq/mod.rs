//! An async RSMQ (Redis Simple Message Queue) client, wire-compatible with Node
//! [rsmq](https://github.com/smrchy/rsmq) 0.12.4 and PyRSMQ 0.6.1: queues made or filled by any
//! of them can be used by the others.
//!
//! ```no_run
//! # async fn demo() -> actix_nsq::Result<()> {
//! use std::time::Duration;
//! use actix_nsq::rsmq::{DeleteOutcome, QueueOptions, Rsmq};
//!
//! let rsmq = Rsmq::connect("redis://127.0.0.1:6379/0").await?;
//! rsmq.create_queue("jobs", QueueOptions::new()).await?;
//! rsmq.send_message("jobs", r#"{"task":1}"#, None).await?;
//! if let Some(msg) = rsmq.receive_message("jobs", Some(Duration::from_secs(60))).await? {
//!     // ... work ...
//!     match rsmq.delete_message_checked("jobs", &msg.id, msg.rc).await? {
//!         DeleteOutcome::Deleted => {}
//!         DeleteOutcome::NotOwned => { /* too late: someone else has it now */ }
//!         DeleteOutcome::NotFound | _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Data layout (Node rsmq's)
//!
//! | key | type | contents |
//! |---|---|---|
//! | `{ns}:QUEUES` | set | queue names |
//! | `{ns}:{qname}:Q` | hash | `vt`, `delay` (integer **seconds**), `maxsize` (-1 = unlimited), `created`, `modified` (Redis `TIME` seconds), `totalsent`, `totalrecv`, and per message `{id}` (body), `{id}:rc` (receive count), `{id}:fr` (first receive, epoch ms) |
//! | `{ns}:{qname}` | sorted set | message ids, scored by the epoch **milliseconds** at which they become visible |
//! | `{ns}:rt:{qname}` | pub/sub channel | the queue's message count after each send, in realtime mode |
//!
//! Ids are the lowercase base36 of the Redis `TIME` in microseconds (10 characters) followed
//! by 22 random `[A-Za-z0-9]`. Every time comes from Redis `TIME`, never the local clock.
//! Durations are `std::time::Duration` in the API but must be whole seconds in
//! 0..=9 999 999: anything else is refused, never rounded. Bodies are UTF-8 text (`&str`),
//! because Node rsmq and PyRSMQ cannot carry binary data; `maxsize` counts their bytes.
//!
//! Reading is lenient: a queue exists when `vt`, `delay` and `maxsize` are all set; `vt` and
//! `delay` written as floats by PyRSMQ read like JavaScript's `parseInt`; PyRSMQ's `maxsize`
//! of 65565 reads as is; ids of other lengths (rsmq_async up to 15 wrote 30 characters) are
//! received, though, like Node, [`Rsmq::delete_message`] only takes 32-character ids; an id in
//! the sorted set without a body is dropped by the receive script, which then takes the next.
//!
//! rsmq_async 8 and later store `vt`/`delay` in milliseconds: a queue it created reads here as
//! having a 1000 times longer timeout. Do not share queues with it unless it always passes
//! explicit timeouts and never creates the queue.
//!
//! # Delivery guarantees
//!
//! * [`Rsmq::receive_message`]: at least once. The message is hidden for `vt` and comes back
//!   with `rc + 1` unless deleted in time.
//! * [`Rsmq::pop_message`]: at most once; received and deleted in one step.
//! * [`Rsmq::delete_message`] and [`Rsmq::change_message_visibility`] (Node's): act on the
//!   message whoever holds it. A worker that took longer than `vt` deletes or re-hides the
//!   message another worker is processing.
//! * [`Rsmq::delete_message_checked`] and [`Rsmq::change_message_visibility_checked`] (not
//!   in Node or PyRSMQ): the `rc` from the receive is the receipt. They act only if the stored
//!   receive count is still `rc` and the message is still hidden, in one Lua script, and
//!   otherwise report [`DeleteOutcome::NotOwned`] / [`VisibilityOutcome::NotOwned`]. So a late
//!   worker never touches a message redelivered to someone else. They write nothing Node or
//!   PyRSMQ would not.
//!
//! # Errors
//!
//! | situation | error |
//! |---|---|
//! | bad queue name (Node `missingParameter` / `invalidFormat`) | [`Error::InvalidName`](crate::Error::InvalidName) with [`NameKind::Queue`](crate::NameKind::Queue) |
//! | bad message id (same) | [`Error::InvalidName`](crate::Error::InvalidName) with [`NameKind::MessageId`](crate::NameKind::MessageId) |
//! | `vt`, `delay`, `maxsize` out of range or not whole seconds (Node `invalidValue`) | [`Error::Config`](crate::Error::Config), `field` = `"vt"`, `"delay"` or `"maxsize"` |
//! | body over `maxsize` (Node `messageTooLong`) | [`Error::InvalidBody`](crate::Error::InvalidBody) with [`BodyError::TooLarge`](crate::BodyError::TooLarge) |
//! | received body is not UTF-8 | [`Error::InvalidBody`](crate::Error::InvalidBody) with [`BodyError::NotUtf8`](crate::BodyError::NotUtf8) |
//! | `queueNotFound`, `queueExists`, `noAttributeSupplied`, and `invalidValue` for an unreadable stored `vt`/`delay` | [`Error::Rsmq`](crate::Error::Rsmq) with an [`RsmqErrorKind`](crate::RsmqErrorKind) (`Display` is Node's name); ask [`Error::is_queue_not_found`](crate::Error::is_queue_not_found), [`is_queue_exists`](crate::Error::is_queue_exists), ... |
//! | no reply within the response timeout | [`Error::Timeout`](crate::Error::Timeout) (a send may have been stored) |
//! | any other Redis or connection error | [`Error::Redis`](crate::Error::Redis) |
//!
//! # Consuming
//!
//! [`RsmqConsumer`] receives from a queue and feeds the crate's handler contract
//! ([`Delivery`](crate::Delivery); handler actors, supervised or not, closures or blocking
//! handlers, set as on the NSQ [`ConsumerBuilder`](crate::ConsumerBuilder)), with a
//! concurrency bound, checked answers, auto-extension, give-up hooks and dead-letter queues,
//! realtime wake-ups and a graceful stop. Like [`Consumer`](crate::Consumer) it is a cheap
//! handle: [`stop`](RsmqConsumer::stop) / [`stop_within`](RsmqConsumer::stop_within),
//! [`stats`](RsmqConsumer::stats), and [events](RsmqConsumerEvent) from the builder.
//!
//! Needs Redis 5 or later. The client is async on tokio and runs in an actix `System` too.

mod client;
mod consumer;
mod id;
mod messages;
mod realtime;
mod reply;
mod scripts;
mod types;
mod validate;

pub use client::{Rsmq, RsmqBuilder};
pub use consumer::{RsmqConsumer, RsmqConsumerBuilder, RsmqConsumerEvent, RsmqConsumerStats};
pub use realtime::{Notification, Notifications};
pub use types::{
    DeleteOutcome, MaxSize, QueueAttributes, QueueChanges, QueueOptions, RsmqMessage,
    VisibilityOutcome,
};

/// The `redis` crate this client is built on, to make a [`redis::Client`] for
/// [`RsmqBuilder::new`].
pub use redis;
