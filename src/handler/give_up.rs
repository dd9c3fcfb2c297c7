//! Ready-made give-up handlers (gnsq `LogGiveupHandler`, `JSONLogGiveupHandler`,
//! `NsqdGiveupHandler`): what to do with a message delivered more than `max_attempts` times.
//!
//! Each is a [`GiveUpHandler`] value usable three ways: with
//! [`ConsumerBuilder::give_up_handler`](crate::ConsumerBuilder::give_up_handler), inside your own
//! `give_up_fn` closure through [`GiveUpHandler::handle`], or as an actor answering
//! [`GiveUp`] for [`ConsumerBuilder::give_up`](crate::ConsumerBuilder::give_up). The rule they
//! share: a message is finished only once it is safely recorded; when recording fails (a write
//! error, a dead-letter publish that fails) it is requeued, so nothing is lost.

use std::{
    fmt,
    fs::OpenOptions,
    future::Future,
    io::{self, Write},
    path::Path,
    sync::{Arc, Mutex},
    time::UNIX_EPOCH,
};

use actix::{Actor, Context, Handler, ResponseFuture};
use serde_json::json;

use super::GiveUp;
use crate::{
    delivery::{Delivery, HandlerError, HandlerResult},
    error::Error,
    producer::{IntoTopic, Producer},
    protocol::Topic,
};

/// How many body bytes the log handler shows.
const PREVIEW_LEN: usize = 64;

type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

#[derive(Clone)]
enum Kind {
    Log,
    JsonLines(SharedWriter),
    DeadLetter { producer: Producer, topic: Topic },
}

/// A ready-made give-up handler: log, append JSON lines, or move to a dead-letter topic.
///
/// ```no_run
/// # async fn demo() -> Result<(), actix_nsq::Error> {
/// use actix_nsq::{Consumer, GiveUpHandler, Producer};
///
/// let dlq = Producer::builder().nsqd("127.0.0.1:4150").start()?;
/// let consumer = Consumer::builder("events", "indexer")
///     .nsqd("127.0.0.1:4150")
///     .max_attempts(5)
///     // the 6th delivery is published to `events.dead` and then finished; if that publish
///     // fails the message is requeued and comes back to the hook later
///     .give_up_handler(GiveUpHandler::dead_letter(dlq, "events.dead")?)
///     .handler_fn(|_delivery| async { Err("still failing".into()) })
///     .start()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GiveUpHandler(Kind);

impl GiveUpHandler {
    /// Logs the message at `warn` (id, attempts, source, body length and the first 64 body
    /// bytes, escaped), then finishes it. Like the default hook, with the body preview.
    pub fn log() -> Self {
        Self(Kind::Log)
    }

    /// Writes one JSON object per message to `writer`, then finishes it:
    /// `{"id","attempts","timestamp","source","body","body_encoding"}` where `timestamp` is
    /// nanoseconds since the Unix epoch and `body` is the body as UTF-8 text when it is valid
    /// UTF-8 (`"body_encoding":"utf-8"`), standard base64 otherwise (`"base64"`). Each line is
    /// flushed; a write error requeues the message. The write happens on the consumer's thread:
    /// give it a file or a buffer, not a socket that can stall.
    pub fn json_lines(writer: impl Write + Send + 'static) -> Self {
        Self(Kind::JsonLines(Arc::new(Mutex::new(Box::new(writer)))))
    }

    /// As [`json_lines`](Self::json_lines), appending to the file at `path` (created if
    /// missing).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be opened.
    pub fn json_lines_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::json_lines(file))
    }

    /// Publishes the body to `topic` through `producer`, then finishes the message (gnsq
    /// `NsqdGiveupHandler`). When the publish fails the message is requeued (with the default
    /// delay and backoff), never finished: it comes back to the hook until the dead-letter
    /// topic takes it. Bound the wait with the producer's `request_timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a topic name nsqd would reject.
    pub fn dead_letter(producer: Producer, topic: impl IntoTopic) -> Result<Self, Error> {
        Ok(Self(Kind::DeadLetter {
            producer,
            topic: topic.into_topic()?,
        }))
    }

    /// Handles one given-up message: `Ok` once it is recorded (the message is then finished),
    /// `Err` when recording failed (it is requeued). For use in your own `give_up_fn`.
    pub fn handle(
        &self,
        delivery: Delivery,
    ) -> impl Future<Output = HandlerResult> + Send + 'static {
        let kind = self.0.clone();
        async move {
            match kind {
                Kind::Log => {
                    log(&delivery);
                    Ok(())
                }
                Kind::JsonLines(writer) => write_line(&writer, &delivery).map_err(|error| {
                    tracing::warn!(id = delivery.id(), %error, "could not write given-up message; requeueing");
                    HandlerError::new(error)
                }),
                Kind::DeadLetter { producer, topic } => {
                    match producer.publish(&topic, delivery.body().clone()).await {
                        Ok(()) => {
                            tracing::info!(id = delivery.id(), attempts = delivery.attempts(),
                                source = delivery.source(), dead_letter_topic = %topic,
                                "gave up on message; moved it to the dead-letter topic");
                            Ok(())
                        }
                        Err(error) => {
                            tracing::warn!(id = delivery.id(), dead_letter_topic = %topic, %error,
                                "dead-letter publish failed; requeueing the message");
                            Err(HandlerError::new(error))
                        }
                    }
                }
            }
        }
    }
}

fn log(delivery: &Delivery) {
    let body = delivery.body();
    let preview = &body[..body.len().min(PREVIEW_LEN)];
    tracing::warn!(
        id = delivery.id(),
        attempts = delivery.attempts(),
        source = delivery.source(),
        body_len = body.len(),
        body = %preview.escape_ascii(),
        "giving up on message after too many attempts; finishing it"
    );
}

fn json_line(delivery: &Delivery) -> serde_json::Value {
    let timestamp = delivery
        .timestamp()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let (body, encoding) = match std::str::from_utf8(delivery.body()) {
        Ok(text) => (text.to_owned(), "utf-8"),
        Err(_) => (base64(delivery.body()), "base64"),
    };
    json!({
        "id": delivery.id(),
        "attempts": delivery.attempts(),
        "timestamp": u64::try_from(timestamp).unwrap_or(u64::MAX),
        "source": delivery.source(),
        "body": body,
        "body_encoding": encoding,
    })
}

fn write_line(writer: &SharedWriter, delivery: &Delivery) -> io::Result<()> {
    let mut line = serde_json::to_vec(&json_line(delivery))?;
    line.push(b'\n');
    // A poisoned lock only means another write panicked mid-line; the writer is still usable.
    let mut writer = writer.lock().unwrap_or_else(|poison| poison.into_inner());
    writer.write_all(&line)?;
    writer.flush()
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl fmt::Debug for GiveUpHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Log => f.write_str("GiveUpHandler::Log"),
            Kind::JsonLines(_) => f.write_str("GiveUpHandler::JsonLines"),
            Kind::DeadLetter { topic, .. } => f
                .debug_struct("GiveUpHandler::DeadLetter")
                .field("topic", topic)
                .finish_non_exhaustive(),
        }
    }
}

/// As an actor, for [`ConsumerBuilder::give_up`](crate::ConsumerBuilder::give_up):
/// `.give_up(GiveUpHandler::log().start().recipient())`.
impl Actor for GiveUpHandler {
    type Context = Context<Self>;
}

impl Handler<GiveUp> for GiveUpHandler {
    type Result = ResponseFuture<HandlerResult>;

    fn handle(&mut self, GiveUp(delivery): GiveUp, _: &mut Context<Self>) -> Self::Result {
        Box::pin(GiveUpHandler::handle(self, delivery))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::delivery::{Action, DeliveryId, Meta, Respond};

    struct Ignore;
    impl Respond for Ignore {
        fn respond(&self, _: &Meta, _: Action) -> Result<(), Error> {
            Ok(())
        }
    }

    fn delivery(body: &[u8]) -> Delivery {
        let meta = Meta {
            id: DeliveryId::Text("0123456789abcdef".into()),
            body: bytes::Bytes::copy_from_slice(body),
            attempts: 6,
            timestamp_nanos: 1_700_000_000_123_456_789,
            source: "127.0.0.1:4150".into(),
        };
        let (delivery, watch) = Delivery::new(meta, Arc::new(Ignore));
        drop(watch);
        delivery
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output, "{input}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn json_line_has_every_field_and_text_or_base64_bodies() {
        let text = json_line(&delivery(b"hello"));
        assert_eq!(
            text,
            json!({"id": "0123456789abcdef", "attempts": 6,
                "timestamp": 1_700_000_000_123_456_789_u64, "source": "127.0.0.1:4150",
                "body": "hello", "body_encoding": "utf-8"})
        );
        let binary = json_line(&delivery(b"\xff\xfe\x00"));
        assert_eq!(binary["body"], "//4A");
        assert_eq!(binary["body_encoding"], "base64");
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>, bool);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.1 {
                return Err(io::Error::other("disk full"));
            }
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[actix_rt::test]
    async fn json_lines_writes_one_line_each_and_a_write_error_requeues() {
        let sink = Sink::default();
        let handler = GiveUpHandler::json_lines(sink.clone());
        handler.handle(delivery(b"a")).await.unwrap();
        handler.handle(delivery(b"b")).await.unwrap();
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = written
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0]["body"].as_str(), lines[1]["body"].as_str()),
            (Some("a"), Some("b"))
        );

        let failing = GiveUpHandler::json_lines(Sink(Arc::default(), true));
        let result = failing.handle(delivery(b"a")).await;
        assert_eq!(result.unwrap_err().to_string(), "disk full");
    }

    #[actix_rt::test]
    async fn json_lines_file_appends() {
        let path =
            std::env::temp_dir().join(format!("actix-nsq-giveup-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // Two handlers in turn: the second appends after the first's line.
        for body in [&b"one"[..], b"two"] {
            let handler = GiveUpHandler::json_lines_file(&path).unwrap();
            handler.handle(delivery(body)).await.unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().nth(1).unwrap().contains("\"body\":\"two\""));
    }

    #[actix_rt::test]
    async fn log_finishes_and_the_actor_form_answers_the_same() {
        assert!(GiveUpHandler::log().handle(delivery(b"x")).await.is_ok());
        let actor = GiveUpHandler::log().start();
        assert!(actor.send(GiveUp(delivery(b"x"))).await.unwrap().is_ok());
        let sink = Sink(Arc::default(), true);
        let failing = GiveUpHandler::json_lines(sink).start();
        assert!(failing.send(GiveUp(delivery(b"x"))).await.unwrap().is_err());
    }
}
