//! What users test with `MockNsqd`: their handler actor (or closure) inside a real consumer,
//! the exact commands the consumer sends through backoff, give-up, a lost connection and a
//! graceful stop, and a producer's publishes and error answers. No sockets and tokio's paused
//! clock (backoff pauses and reconnect delays pass at once, in a fixed order), except in the
//! one test that compares the mock's IDENTIFY reply with TestNsqd's.

mod consumer;
mod server;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::prelude::*;
use actix_nsq::{
    protocol::{Command, MessageId},
    testing::{MockLink, MockNsqd},
    ConnectionConfig, ConnectionEvent, Consumer, ConsumerBuilder, ConsumerEvent,
};

/// Longer than any pause these tests set up; on the paused clock it costs nothing, and a
/// command that never comes fails the test instead of spinning the clock forever.
pub(crate) const WAIT: Duration = Duration::from_secs(3600);

/// The next command, or a failure naming what the link saw so far.
pub(crate) async fn next(link: &mut MockLink) -> Command {
    match tokio::time::timeout(WAIT, link.next_command()).await {
        Ok(Some(command)) => command,
        Ok(None) => panic!("link closed; it saw {:?}", link.lines()),
        Err(_) => panic!("no command; the link saw {:?}", link.lines()),
    }
}

/// The next connection the client opens, within [`WAIT`].
pub(crate) async fn accept(nsqd: &MockNsqd) -> MockLink {
    tokio::time::timeout(WAIT, nsqd.accept())
        .await
        .expect("the client connects")
}

/// The client closed the link after everything it sent was read.
pub(crate) async fn closed(link: &mut MockLink) {
    match tokio::time::timeout(WAIT, link.next_command()).await {
        Ok(None) => {}
        Ok(Some(command)) => panic!("expected the link to close, got {command:?}"),
        Err(_) => panic!("the link stayed open; it saw {:?}", link.lines()),
    }
}

/// A pause on the paused clock, to the millisecond: tokio's timer wheel rounds a deadline up
/// to the next millisecond, nothing else moves the clock.
pub(crate) fn assert_pause(elapsed: Duration, expected: Duration) {
    assert!(
        expected <= elapsed && elapsed <= expected + Duration::from_millis(1),
        "paused {elapsed:?}, expected {expected:?}"
    );
}

/// REQ of `id` after `delay`.
pub(crate) fn req(id: MessageId, delay: Duration) -> Command {
    Command::Req { id, delay }
}

/// A consumer of `events/tests` wired to the mock.
pub(crate) fn builder(nsqd: &MockNsqd) -> ConsumerBuilder {
    Consumer::builder("events", "tests")
        .nsqd(nsqd.addr())
        .connection(nsqd.connection_config(ConnectionConfig::new()))
}

/// Collects whatever events an actor is sent.
pub(crate) struct Collect<E>(Arc<Mutex<Vec<E>>>);

impl<E: Unpin + 'static> Actor for Collect<E> {
    type Context = Context<Self>;
}

impl<E: Message<Result = ()> + Unpin + Send + 'static> Handler<E> for Collect<E> {
    type Result = ();

    fn handle(&mut self, event: E, _: &mut Context<Self>) {
        self.0.lock().unwrap().push(event);
    }
}

/// A recipient that keeps every event, and what it kept.
pub(crate) fn collect<E: Message<Result = ()> + Unpin + Send + 'static>(
) -> (Recipient<E>, Arc<Mutex<Vec<E>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    (Collect(seen.clone()).start().recipient(), seen)
}

/// The connection events among a consumer's events.
pub(crate) fn connection_events(events: &Mutex<Vec<ConsumerEvent>>) -> Vec<ConnectionEvent> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ConsumerEvent::Connection(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}
