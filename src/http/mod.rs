//! Typed clients for the HTTP APIs of nsqd ([`NsqdHttpClient`]) and nsqlookupd
//! ([`LookupdHttpClient`]).
//!
//! Both ask for nsq's v1 answers (`Accept: application/vnd.nsq; version=1.0`) and also
//! understand the pre-1.0 wrapper `{"status_code", "status_txt", "data"}`. Failures map onto
//! [`Error`](crate::Error):
//!
//! * nsq refused the request: [`Error::Http`](crate::Error::Http) with the status and nsq's
//!   message, e.g. `404 TOPIC_NOT_FOUND`, `400 MISSING_ARG_TOPIC`;
//! * no answer within the timeout: [`Error::Timeout`](crate::Error::Timeout);
//! * no connection (refused, reset, DNS, TLS): [`Error::Http`](crate::Error::Http) with
//!   status 0 and what went wrong;
//! * bad input, caught before sending: [`Error::InvalidName`](crate::Error::InvalidName),
//!   [`Error::InvalidBody`](crate::Error::InvalidBody), [`Error::Config`](crate::Error::Config).
//!
//! Answers are read up to a size bound (default 16 MiB).
//!
//! The clients are built on awc, whose clients belong to the thread that made them: they are
//! `!Send`, and their futures must run on an actix `System` (`#[actix_rt::main]`,
//! `#[actix_rt::test]`, inside an actor) or a tokio `LocalSet`.

mod endpoint;
mod lookup_response;
mod lookupd;
mod mpub;
mod nsqd;
mod stats;

pub use lookupd::{LookupdHttpClient, LookupdHttpClientBuilder, LookupdInfo};
pub use mpub::MpubMode;
pub use nsqd::{NsqdHttpClient, NsqdHttpClientBuilder, StatsQuery};
pub use stats::{
    ChannelStats, ClientStats, LatencyStats, MemStats, NsqdInfo, NsqdStats, PubCount, TopicStats,
};

pub use lookup_response::{LookupResponse, NodeInfo, ProducerInfo, SkippedProducer};

pub(crate) use endpoint::{base_url as endpoint_base_url, redact_credentials, HttpSettings};
pub(crate) use lookupd::lookup_url;
