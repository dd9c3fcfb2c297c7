//! The crate's one public error type.
//!
//! Every fallible call in `actix-nsq` returns [`Error`]. Callers match on the variant when they
//! need to, or ask the predicates ([`Error::is_fatal`], [`Error::is_disconnect`],
//! [`Error::is_timeout`], [`Error::outcome_unknown`]) the questions a retry policy asks.

use std::{fmt, io, sync::Arc};

use crate::{http::SkippedProducer, protocol::ServerError};

/// What [`Error::Timeout`] says when a publish timed out before it was handed to a
/// connection: nothing was written.
pub(crate) const PUBLISH_NOT_SENT: &str = "waiting for a publish slot (nothing was written)";

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of NSQ name failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameKind {
    /// A topic name.
    Topic,
    /// A channel name.
    Channel,
    /// An RSMQ queue name.
    Queue,
    /// An RSMQ message id.
    MessageId,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Topic => "topic",
            NameKind::Channel => "channel",
            NameKind::Queue => "queue",
            NameKind::MessageId => "message id",
        })
    }
}

/// Which of Node rsmq's named errors an [`Error::Rsmq`] is (rsmq `index.ts` `ERRORS`; the
/// other names there have their own variants, see the error table of the `rsmq` module,
/// feature `rsmq`). Ask with [`Error::rsmq_kind`] or the predicates ([`Error::is_queue_not_found`],
/// ...), which look through the whole source chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RsmqErrorKind {
    /// `queueNotFound`: no queue of that name (Node's `_getQueue` found `vt`, `delay` or
    /// `maxsize` missing, or `deleteQueue` deleted nothing).
    QueueNotFound,
    /// `queueExists`: `createQueue` for a name that already has a queue.
    QueueExists,
    /// `noAttributeSupplied`: `setQueueAttributes` with nothing to change.
    NoAttributeSupplied,
    /// `invalidValue`, for a value read from Redis: a queue's stored `vt` or `delay` that is
    /// not a number of seconds (values the caller passes are checked as [`Error::Config`]).
    InvalidValue,
}

impl RsmqErrorKind {
    /// Node rsmq's name for it, e.g. `queueNotFound` (its `Error.name`).
    pub fn name(self) -> &'static str {
        match self {
            RsmqErrorKind::QueueNotFound => "queueNotFound",
            RsmqErrorKind::QueueExists => "queueExists",
            RsmqErrorKind::NoAttributeSupplied => "noAttributeSupplied",
            RsmqErrorKind::InvalidValue => "invalidValue",
        }
    }
}

impl fmt::Display for RsmqErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a frame from the wire (or a line a client sent to the test server) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The size prefix was smaller than the 4-byte frame type it must contain.
    #[error("frame size {0} is smaller than the frame type field")]
    FrameTooSmall(i64),
    /// The size prefix exceeds the configured maximum; nothing was allocated for it.
    #[error("frame size {size} exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The size the peer announced.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// The peer answered with HTTP: the address is nsqd's HTTP port, not its TCP port.
    #[error("the peer spoke HTTP: is this nsqd's HTTP port instead of its TCP port?")]
    LooksLikeHttp,
    /// The address answered in HTTP (`HTTP/1.1 400 Bad Request`, as Go's net/http answers
    /// nsq's `"  V2"` magic): it is nsqd's HTTP port (4151 by default), not its TCP port.
    #[error("{addr} answered in HTTP: that is an HTTP port (nsqd's is 4151 by default), not nsqd's TCP port (4150 by default)")]
    HttpPort {
        /// The address dialled.
        addr: String,
    },
    /// nsqd's IDENTIFY reply was JSON but not an object (`[]`, `1`, `"x"`): not an nsqd.
    #[error("IDENTIFY reply is not a JSON object: {0}")]
    IdentifyNotObject(String),
    /// A frame type other than response (0), error (1) or message (2).
    #[error("unknown frame type {0}")]
    UnknownFrameType(i32),
    /// A message frame too short to hold timestamp, attempts and id.
    #[error("message frame of {0} bytes is shorter than its 26-byte header")]
    ShortMessage(usize),
    /// A message id with bytes that could not be echoed back safely in FIN/REQ/TOUCH.
    #[error("message id contains non-printable bytes")]
    BadMessageId,
    /// A response arrived that no command was waiting for.
    #[error("unexpected response {0:?}")]
    UnexpectedResponse(String),
    /// A response that does not fit the step of the handshake it arrived in.
    #[error("unexpected handshake reply: {0}")]
    Handshake(String),
    /// The peer closed the stream in the middle of a frame.
    #[error("stream ended in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// A command line (server side) that was too long or otherwise malformed.
    #[error("malformed command: {0}")]
    BadCommand(String),
}

/// Why a message body (or a batch of bodies) was rejected before anything was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// nsqd rejects empty message bodies with a fatal `E_BAD_MESSAGE`.
    #[error("message body is empty")]
    Empty,
    /// The body is larger than the server's `--max-msg-size`.
    #[error("message body of {size} bytes exceeds the maximum message size of {max} bytes")]
    TooLarge {
        /// Size of the offending body.
        size: usize,
        /// The limit it was checked against.
        max: usize,
    },
    /// A multi-publish with no messages.
    #[error("a multi-publish needs at least one message")]
    NoMessages,
    /// The whole MPUB body is larger than the server's `--max-body-size`.
    #[error("multi-publish body of {size} bytes exceeds the maximum body size of {max} bytes")]
    BatchTooLarge {
        /// Size of the encoded MPUB body.
        size: usize,
        /// The limit it was checked against.
        max: usize,
    },
    /// One message of a multi-publish was rejected.
    #[error("message {index} of the batch: {source}")]
    InBatch {
        /// Zero-based index of the message in the batch.
        index: usize,
        /// What was wrong with it.
        source: Box<BodyError>,
    },
    /// A deferred-publish delay outside what nsqd accepts (a fatal `E_INVALID` on the server).
    #[error("defer of {ms} ms is outside nsqd's range 0..={max_ms} ms")]
    DeferOutOfRange {
        /// The requested delay.
        ms: u128,
        /// The largest delay accepted.
        max_ms: u64,
    },
    /// An RSMQ body that Node rsmq and PyRSMQ could not read (they only handle UTF-8 text).
    #[error("message body is not valid UTF-8 text")]
    NotUtf8,
    /// A message for nsqd's newline-separated HTTP `/mpub` that contains a newline: nsqd would
    /// split it into several messages. Binary mode carries any bytes.
    #[error("message body contains a newline, which newline-separated /mpub cannot carry")]
    ContainsNewline,
}

/// The error type of every fallible operation in this crate.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic, channel, queue name or id that the server would reject.
    #[error("invalid {kind} {name:?}: {reason}")]
    InvalidName {
        /// What was being named.
        kind: NameKind,
        /// The rejected input (lossily converted to text).
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A message body the server would reject; nothing was sent.
    #[error("invalid message body: {0}")]
    InvalidBody(#[from] BodyError),
    /// A configuration value out of range; `field` names the setting.
    #[error("invalid configuration `{field}`: {reason}")]
    Config {
        /// The name of the setting, as in the builder.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The peer broke the NSQ protocol; the connection is dropped and re-established.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// nsqd answered with an `E_*` error frame.
    #[error("nsqd error: {0}")]
    Server(#[from] ServerError),
    /// An I/O error on the socket.
    #[error("i/o error: {0}")]
    Io(Arc<io::Error>),
    /// TLS setup or handshake failed, or the server did not offer TLS when it was required.
    #[error("tls: {message}")]
    Tls {
        /// What failed, with the cause's text (as [`Display`](fmt::Display) shows it).
        message: String,
        /// The cause (rustls, a PEM parser, an I/O error), when there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The server requires AUTH and no secret was configured, or AUTH was refused.
    #[error("authentication: {0}")]
    Auth(String),
    /// An operation did not complete in time; `what` says which.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A publish was written but its connection died before nsqd answered: the message may or
    /// may not have been enqueued. Retrying can duplicate it.
    #[error("publish outcome unknown: the connection to {addr} was lost before nsqd answered")]
    OutcomeUnknown {
        /// The nsqd the publish was written to.
        addr: String,
    },
    /// A response to a delivered message after the connection that delivered it died. nsqd
    /// will redeliver the message once its `msg_timeout` expires.
    #[error("connection to {addr} lost; the message will be redelivered after its timeout")]
    ConnectionLost {
        /// The nsqd that delivered the message.
        addr: String,
    },
    /// No connection to `addr` could be made: `source` says why (connection refused, a
    /// timeout, an HTTP port, a handshake nsqd refused, ...). Nothing was written.
    #[error("cannot connect to nsqd {addr}: {source}")]
    Connect {
        /// The nsqd address.
        addr: String,
        /// Why the last attempt failed.
        #[source]
        source: Box<Error>,
    },
    /// No connection is up to take the request.
    #[error("not connected to any nsqd")]
    NotConnected,
    /// `start()` was called outside a running actix `System`, where no actor can run (actix
    /// would abort the process). Start it inside `#[actix_rt::main]`,
    /// `actix_rt::System::new().block_on(..)`, an actix-web handler or an actor.
    #[error("{0} must be started inside a running actix System (e.g. #[actix_rt::main])")]
    NoActixSystem(&'static str),
    /// The consumer, producer or connection has been stopped.
    #[error("stopped")]
    Stopped,
    /// A connection gave up reconnecting after the configured number of attempts.
    #[error("gave up connecting to {addr} after {attempts} attempts")]
    GaveUp {
        /// The nsqd address.
        addr: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// nsqlookupd listed nsqd that cannot be connected to (a `tcp_port` that is not a port, a
    /// `broadcast_address` that is not a string, ...). Only those entries were skipped: the
    /// others are used. A consumer reports it as
    /// [`ConsumerEvent::DiscoveryFailed`](crate::ConsumerEvent::DiscoveryFailed).
    #[error("skipped {count} unusable nsqlookupd entries: {}", list_skipped(.skipped, *.count))]
    SkippedProducers {
        /// Entries left out, with the reason (the first
        /// [`SkippedProducer::MAX_LISTED`](crate::SkippedProducer::MAX_LISTED)).
        skipped: Vec<SkippedProducer>,
        /// How many were left out in all.
        count: usize,
    },
    /// An HTTP request to nsqd or nsqlookupd failed, or was answered with an error status.
    #[error("http {status}: {message}")]
    Http {
        /// The HTTP status code, or 0 when no response arrived.
        status: u16,
        /// nsq's message (`{"message": "TOPIC_NOT_FOUND"}`), or what went wrong.
        message: String,
    },
    /// A message handler failed, panicked or went away.
    #[error("handler: {0}")]
    Handler(String),
    /// A Redis error from the RSMQ transport, or a reply Redis should not have given.
    #[error("redis: {message}")]
    Redis {
        /// What went wrong (with the Redis error's own text, when there is one).
        message: String,
        /// The Redis client's error, when there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// One of Node rsmq's named errors (`queueNotFound`, `queueExists`, ...); see
    /// [`RsmqErrorKind`] and the predicates [`is_queue_not_found`](Self::is_queue_not_found),
    /// [`is_queue_exists`](Self::is_queue_exists), ...
    #[error("rsmq {kind}: {message}")]
    Rsmq {
        /// Which one; its `Display` is Node's name, e.g. `queueNotFound`.
        kind: RsmqErrorKind,
        /// The human-readable message.
        message: String,
    },
}

impl Error {
    /// True when the error ends the connection it happened on (nsqd closes the connection
    /// after every `E_*` except `E_FIN_FAILED`, `E_REQ_FAILED` and `E_TOUCH_FAILED`).
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Server(e) => e.code.is_fatal(),
            Error::Protocol(_) | Error::Io(_) | Error::Tls { .. } => true,
            Error::Auth(_) => true,
            _ => false,
        }
    }

    /// True when the error means a connection went away (the request may be retried elsewhere).
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            Error::NotConnected
                | Error::Connect { .. }
                | Error::ConnectionLost { .. }
                | Error::OutcomeUnknown { .. }
                | Error::Io(_)
        )
    }

    /// True when the error is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// True when a publish may have been enqueued even though it failed: retrying it can
    /// produce a duplicate. A timeout counts, except one that struck before the publish was
    /// handed to a connection (waiting for a publish slot): nothing was written then.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::OutcomeUnknown { .. } => true,
            Error::Timeout(what) => *what != PUBLISH_NOT_SENT,
            _ => false,
        }
    }

    /// True when the input, not the network, was at fault: retrying the same call fails again.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidName { .. } | Error::InvalidBody(_) | Error::Config { .. }
        )
    }

    /// A Redis error with no underlying cause (an unexpected reply).
    pub(crate) fn redis(message: impl Into<String>) -> Self {
        Error::Redis {
            message: message.into(),
            source: None,
        }
    }

    /// A TLS error with no underlying cause.
    pub(crate) fn tls(message: impl Into<String>) -> Self {
        Error::Tls {
            message: message.into(),
            source: None,
        }
    }

    /// A TLS error caused by `source`: `context` and the cause's text make the message, and
    /// the cause stays reachable through [`std::error::Error::source`].
    pub(crate) fn tls_caused(
        context: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Tls {
            message: format!("{context}: {source}"),
            source: Some(Arc::new(source)),
        }
    }

    /// The [`RsmqErrorKind`] of this error or of any error in its source chain, if it is an
    /// RSMQ named error.
    pub fn rsmq_kind(&self) -> Option<RsmqErrorKind> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = current {
            // A boxed source (`Error::Connect`) is seen as the box, not the error in it.
            let ours = error
                .downcast_ref::<Error>()
                .or_else(|| error.downcast_ref::<Box<Error>>().map(|b| &**b));
            if let Some(Error::Rsmq { kind, .. }) = ours {
                return Some(*kind);
            }
            current = error.source();
        }
        None
    }

    /// True for RSMQ `queueNotFound`: the queue does not exist.
    pub fn is_queue_not_found(&self) -> bool {
        self.rsmq_kind() == Some(RsmqErrorKind::QueueNotFound)
    }

    /// True for RSMQ `queueExists`: `create_queue` for a queue that exists.
    pub fn is_queue_exists(&self) -> bool {
        self.rsmq_kind() == Some(RsmqErrorKind::QueueExists)
    }

    /// True for RSMQ `noAttributeSupplied`: `set_queue_attributes` with nothing to change.
    pub fn is_no_attribute_supplied(&self) -> bool {
        self.rsmq_kind() == Some(RsmqErrorKind::NoAttributeSupplied)
    }

    /// True for RSMQ `invalidValue`: a queue's stored `vt` or `delay` is unreadable.
    pub fn is_invalid_stored_value(&self) -> bool {
        self.rsmq_kind() == Some(RsmqErrorKind::InvalidValue)
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }
}

/// The first few skipped entries, for a message that stays one line.
fn list_skipped(skipped: &[SkippedProducer], count: usize) -> String {
    const SHOWN: usize = 3;
    let shown = skipped.len().min(SHOWN);
    let mut text = skipped[..shown]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if count > shown {
        text.push_str(&format!("; and {} more", count - shown));
    }
    text
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn server_errors_are_fatal_except_fin_req_touch() {
        let fin = Error::Server(ServerError::parse(b"E_FIN_FAILED FIN 0123 failed"));
        assert!(!fin.is_fatal());
        let invalid = Error::Server(ServerError::parse(b"E_INVALID invalid command"));
        assert!(invalid.is_fatal());
        assert!(matches!(
            invalid,
            Error::Server(ServerError {
                code: ErrorCode::Invalid,
                ..
            })
        ));
    }

    #[test]
    fn tls_errors_keep_their_cause() {
        use std::error::Error as _;
        let io = io::Error::new(io::ErrorKind::InvalidData, "bad record");
        let err = Error::tls_caused("handshake with nsqd at h failed", io);
        assert_eq!(
            err.to_string(),
            "tls: handshake with nsqd at h failed: bad record"
        );
        let cause = err.source().expect("the cause is kept");
        assert_eq!(cause.to_string(), "bad record");
        assert!(Error::tls("no TLS offered").source().is_none());
        assert!(err.is_fatal());
    }

    #[test]
    fn rsmq_kinds_are_typed_and_found_through_the_source_chain() {
        let not_found = Error::Rsmq {
            kind: RsmqErrorKind::QueueNotFound,
            message: "Queue not found: q".into(),
        };
        assert_eq!(
            not_found.to_string(),
            "rsmq queueNotFound: Queue not found: q"
        );
        assert!(not_found.is_queue_not_found());
        assert!(!not_found.is_queue_exists());
        let wrapped = Error::Connect {
            addr: "redis".into(),
            source: Box::new(not_found),
        };
        assert_eq!(wrapped.rsmq_kind(), Some(RsmqErrorKind::QueueNotFound));
        assert!(wrapped.is_queue_not_found());
        let kinds = [
            (RsmqErrorKind::QueueExists, "queueExists"),
            (RsmqErrorKind::NoAttributeSupplied, "noAttributeSupplied"),
            (RsmqErrorKind::InvalidValue, "invalidValue"),
        ];
        for (kind, name) in kinds {
            let error = Error::Rsmq {
                kind,
                message: String::new(),
            };
            assert_eq!(kind.to_string(), name);
            assert_eq!(
                [
                    error.is_queue_exists(),
                    error.is_no_attribute_supplied(),
                    error.is_invalid_stored_value()
                ]
                .iter()
                .filter(|&&b| b)
                .count(),
                1,
                "{name}: exactly one predicate"
            );
        }
        assert_eq!(Error::redis("x").rsmq_kind(), None);
        assert!(!Error::Stopped.is_queue_not_found());
    }

    #[test]
    fn predicates_classify() {
        assert!(Error::NotConnected.is_disconnect());
        assert!(Error::OutcomeUnknown { addr: "x".into() }.outcome_unknown());
        assert!(Error::Timeout("publish").is_timeout());
        assert!(Error::Timeout("publish").outcome_unknown());
        assert!(!Error::Timeout(PUBLISH_NOT_SENT).outcome_unknown());
        assert!(!Error::NotConnected.outcome_unknown());
        assert!(Error::config("max_in_flight", "too big").is_invalid_input());
        assert_eq!(
            Error::config("max_in_flight", "must be at most 65535").to_string(),
            "invalid configuration `max_in_flight`: must be at most 65535"
        );
    }
}
