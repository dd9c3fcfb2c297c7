//! Publish metrics, recorded by `Producer::send` around each attempt.

use std::{sync::Arc, time::Instant};

use ::metrics::{counter, histogram, Label, SharedString};
use actix::MailboxError;

use super::{PRODUCER_RECONNECTS, PUBLISH_ERRORS, PUBLISH_SECONDS};
use crate::{error::Error, protocol::Command};

fn topic_label(command: &Command) -> Label {
    let topic = match command {
        Command::Pub { topic, .. } | Command::Mpub { topic, .. } | Command::Dpub { topic, .. } => {
            topic.as_str()
        }
        _ => "",
    };
    Label::new("topic", topic.to_owned())
}

/// A small fixed set, so the label cannot explode a time series database.
fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Timeout(_) => "timeout",
        Error::Server(_) => "server",
        Error::OutcomeUnknown { .. } => "outcome_unknown",
        Error::NotConnected => "not_connected",
        Error::Connect { .. } | Error::GaveUp { .. } => "connect",
        Error::Stopped => "stopped",
        Error::InvalidBody(_) | Error::InvalidName { .. } => "rejected",
        _ => "other",
    }
}

fn count_error(command: &Command, nsqd: SharedString, error: &'static str) {
    let labels = [
        topic_label(command),
        Label::new("nsqd", nsqd),
        Label::new("error", error),
    ];
    counter!(PUBLISH_ERRORS, labels.iter()).increment(1);
}

/// One attempt on `nsqd` came back (or timed out): its latency when nsqd answered, `OK` or
/// `E_*`; an error count when it failed.
pub(crate) fn publish_answered<T>(
    nsqd: &Arc<str>,
    command: &Command,
    started: Instant,
    answer: &Result<Result<Result<(), Error>, MailboxError>, T>,
) {
    let nsqd = SharedString::from(nsqd.clone());
    let error = match answer {
        Ok(Ok(result)) => {
            if matches!(result, Ok(()) | Err(Error::Server(_))) {
                let labels = [topic_label(command), Label::new("nsqd", nsqd.clone())];
                histogram!(PUBLISH_SECONDS, labels.iter()).record(started.elapsed().as_secs_f64());
            }
            match result {
                Ok(()) => return,
                Err(error) => error_kind(error),
            }
        }
        // The connection actor is gone (restarting): nothing was written.
        Ok(Err(_)) => "not_connected",
        Err(_) => "timeout",
    };
    count_error(command, nsqd, error);
}

/// A link was lost (and is being re-established). A consumer's are sampled from its
/// counters with its topic and channel; a producer's are counted here, by nsqd alone.
pub(crate) fn link_lost(subscription: Option<&crate::conn::Subscription>, nsqd: &Arc<str>) {
    if subscription.is_none() {
        counter!(PRODUCER_RECONNECTS, "nsqd" => SharedString::from(nsqd.clone())).increment(1);
    }
}

/// No nsqd could be given the publish (none up in time, all refuse it as too big, stopped).
pub(crate) fn publish_unrouted<T>(command: &Command, slot: &Result<T, Error>) {
    if let Err(error) = slot {
        count_error(command, SharedString::const_str("none"), error_kind(error));
    }
}
