//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (the `metrics` cargo
//! feature): install any `metrics` recorder or exporter (`metrics-exporter-prometheus`,
//! StatsD, OpenTelemetry, ...) and the consumers and producers of this crate report to it.
//! Without the feature none of this is compiled and nothing is measured.
//!
//! Every consumer metric carries the labels `topic`, `channel` and `nsqd` (the nsqd's
//! `host:port`), except the backoff level, which belongs to the whole consumer (`topic`,
//! `channel`). Publish metrics carry `topic` and `nsqd`; a producer's reconnects `nsqd` alone.
//!
//! | name | kind | what |
//! | --- | --- | --- |
//! | [`nsq_messages_received_total`](MESSAGES_RECEIVED) | counter | messages delivered by nsqd |
//! | [`nsq_messages_finished_total`](MESSAGES_FINISHED) | counter | messages answered with FIN |
//! | [`nsq_messages_requeued_total`](MESSAGES_REQUEUED) | counter | messages answered with REQ |
//! | [`nsq_messages_given_up_total`](MESSAGES_GIVEN_UP) | counter | messages past `max_attempts`, handed to the give-up hook |
//! | [`nsq_handler_seconds`](HANDLER_SECONDS) | histogram | from handing a message to the handler to its result |
//! | [`nsq_rdy`](RDY) | gauge | the RDY count last sent on the connection |
//! | [`nsq_in_flight`](IN_FLIGHT) | gauge | messages delivered and not yet answered |
//! | [`nsq_backoff_level`](BACKOFF_LEVEL) | gauge | the consumer's backoff level (0: not backing off) |
//! | [`nsq_reconnects_total`](RECONNECTS) | counter | a consumer's links lost and re-established |
//! | [`nsq_producer_reconnects_total`](PRODUCER_RECONNECTS) | counter | a producer's links lost and re-established (`nsqd` only) |
//! | [`nsq_publish_seconds`](PUBLISH_SECONDS) | histogram | from writing a PUB/MPUB/DPUB to nsqd's answer |
//! | [`nsq_publish_errors_total`](PUBLISH_ERRORS) | counter | failed publish attempts, with an `error` label |
//!
//! How it stays cheap: message, RDY, in-flight, reconnect and backoff figures are the atomics
//! the crate keeps anyway for [`Consumer::stats`](crate::Consumer::stats); the consumer's
//! coordinator turns them into counter increments and gauge values once per
//! [`SAMPLE_INTERVAL`], and once more when the consumer stops, so nothing is left out (its
//! gauges then go to zero). Only
//! the handler time is measured per message, and the publish figures per publish. Metric
//! handles are registered once per connection, with the recorder that is current on the
//! thread that starts the consumer (the global one, or one set with
//! `metrics::with_local_recorder`).
//!
//! ```no_run
//! # async fn run() -> Result<(), actix_nsq::Error> {
//! // With metrics-exporter-prometheus (default-features = false):
//! // let prometheus = PrometheusBuilder::new().install_recorder()?;
//! actix_nsq::metrics::describe(); // help texts and units, for exporters that show them
//! // ... start consumers and producers; serve prometheus.render() on /metrics.
//! # Ok(()) }
//! ```

mod consumer;
mod producer;

use std::time::Duration;

use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub(crate) use consumer::{ConsumerMetrics, HandlerMetrics, HandlerTimer};
pub(crate) use producer::{link_lost, publish_answered, publish_unrouted};

/// Counter: messages nsqd delivered (`topic`, `channel`, `nsqd`).
pub const MESSAGES_RECEIVED: &str = "nsq_messages_received_total";
/// Counter: messages answered with FIN (`topic`, `channel`, `nsqd`).
pub const MESSAGES_FINISHED: &str = "nsq_messages_finished_total";
/// Counter: messages answered with REQ (`topic`, `channel`, `nsqd`).
pub const MESSAGES_REQUEUED: &str = "nsq_messages_requeued_total";
/// Counter: messages past `max_attempts` handed to the give-up hook, counted when the hook
/// is done (`topic`, `channel`, `nsqd`).
pub const MESSAGES_GIVEN_UP: &str = "nsq_messages_given_up_total";
/// Histogram, seconds: from handing a message to the handler until its result, for both
/// handler kinds (`topic`, `channel`, `nsqd`). A handler that keeps the delivery and answers
/// later is measured until it returns, not until the answer.
pub const HANDLER_SECONDS: &str = "nsq_handler_seconds";
/// Gauge: the RDY count last sent on a connection (`topic`, `channel`, `nsqd`).
pub const RDY: &str = "nsq_rdy";
/// Gauge: messages delivered on a connection and not yet answered (`topic`, `channel`,
/// `nsqd`).
pub const IN_FLIGHT: &str = "nsq_in_flight";
/// Gauge: the consumer's backoff level, 0 when not backing off (`topic`, `channel`).
pub const BACKOFF_LEVEL: &str = "nsq_backoff_level";
/// Counter: a consumer connection's links lost and re-established (`topic`, `channel`,
/// `nsqd`).
pub const RECONNECTS: &str = "nsq_reconnects_total";
/// Counter: a producer's links lost and re-established (`nsqd`; a producer has no topic or
/// channel of its own).
pub const PRODUCER_RECONNECTS: &str = "nsq_producer_reconnects_total";
/// Histogram, seconds: from handing a PUB, MPUB or DPUB to a connection until nsqd's answer
/// (`OK` or an `E_*` error), per attempt (`topic`, `nsqd`).
pub const PUBLISH_SECONDS: &str = "nsq_publish_seconds";
/// Counter: publish attempts that failed (`topic`, `nsqd`, `error`). One that failed over to
/// another nsqd counts on the nsqd that failed it; one that found no nsqd to take it counts
/// with `nsqd="none"`. `error` is one of `timeout`, `server`, `outcome_unknown`,
/// `not_connected`, `connect`, `stopped`, `rejected` (refused before writing: too big for
/// every nsqd), `other`.
pub const PUBLISH_ERRORS: &str = "nsq_publish_errors_total";

/// How often a consumer's coordinator turns its connections' counters into metrics.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Describes every metric above (help text and unit) to the current recorder. Optional:
/// exporters that show descriptions (Prometheus `# HELP`) use them; call it once after
/// installing the recorder.
pub fn describe() {
    let counters = [
        (MESSAGES_RECEIVED, "Messages nsqd delivered"),
        (MESSAGES_FINISHED, "Messages answered with FIN"),
        (MESSAGES_REQUEUED, "Messages answered with REQ"),
        (
            MESSAGES_GIVEN_UP,
            "Messages past max_attempts handed to the give-up hook",
        ),
        (RECONNECTS, "Consumer links lost and re-established"),
        (
            PRODUCER_RECONNECTS,
            "Producer links lost and re-established",
        ),
        (PUBLISH_ERRORS, "Publish attempts that failed"),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    describe_gauge!(RDY, Unit::Count, "The RDY count last sent on a connection");
    describe_gauge!(
        IN_FLIGHT,
        Unit::Count,
        "Messages delivered and not yet answered"
    );
    describe_gauge!(
        BACKOFF_LEVEL,
        Unit::Count,
        "The consumer's backoff level (0: not backing off)"
    );
    describe_histogram!(
        HANDLER_SECONDS,
        Unit::Seconds,
        "Time from handing a message to the handler until its result"
    );
    describe_histogram!(
        PUBLISH_SECONDS,
        Unit::Seconds,
        "Time from handing a publish to a connection until nsqd's answer"
    );
}
