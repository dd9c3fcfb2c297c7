//! A mock connection for unit-testing handlers: hand one [`Delivery`] to a handler actor (or
//! closure) with no server, and see how it was answered.
//!
//! The same dispatch and answer rules as a real consumer apply: the handler's result answers
//! a delivery it consumed, a delivery it kept is answered by whoever holds it, a panic
//! requeues with backoff, and an actor that had stopped before it took the message releases it
//! without counting a failure.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix::Recipient;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::{
    delivery::{Action, Delivery, DeliveryId, HandlerResult, Meta, Respond, Watch},
    error::Error,
    handler::{settle, Handled, HandlerSink},
};

/// A message to hand to a handler in a test, with no server: the handler's answer is recorded
/// by the rules a real consumer applies.
///
/// ```
/// use actix::prelude::*;
/// use actix_nsq::{testing::MockDelivery, Delivery, HandlerResult};
///
/// struct Indexer;
/// impl Actor for Indexer {
///     type Context = Context<Self>;
/// }
/// impl Handler<Delivery> for Indexer {
///     type Result = HandlerResult;
///     fn handle(&mut self, d: Delivery, _: &mut Context<Self>) -> HandlerResult {
///         if d.body().is_empty() { Err("empty".into()) } else { Ok(()) }
///     }
/// }
///
/// # actix_rt::System::new().block_on(async {
/// let indexer = Indexer.start().recipient();
/// let answer = MockDelivery::new("hello").send_to(&indexer).await;
/// assert!(answer.is_finished());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct MockDelivery {
    id: String,
    body: Bytes,
    attempts: u32,
    source: String,
    timestamp: SystemTime,
    lost: bool,
}

#[derive(Default)]
struct Recorder {
    actions: Mutex<Vec<Action>>,
    changed: Notify,
    lost: bool,
}

impl Respond for Recorder {
    fn respond(&self, _: &Meta, action: Action) -> Result<(), Error> {
        if self.lost {
            return Err(Error::ConnectionLost {
                addr: "mock".into(),
            });
        }
        if let Ok(mut actions) = self.actions.lock() {
            actions.push(action);
        }
        self.changed.notify_waiters();
        Ok(())
    }
}

impl MockDelivery {
    /// A first delivery of `body`, with id `0123456789abcdef`, from `mock:4150`.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            id: "0123456789abcdef".to_owned(),
            body: body.into(),
            attempts: 1,
            source: "mock:4150".to_owned(),
            timestamp: SystemTime::now(),
            lost: false,
        }
    }

    /// Sets the id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the delivery count (to test retry logic).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Sets the source address.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Sets when the message was published.
    pub fn timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Makes every answer fail with [`Error::ConnectionLost`], as after a disconnect.
    pub fn connection_lost(mut self) -> Self {
        self.lost = true;
        self
    }

    /// The delivery itself and a probe of how it gets answered, for tests that drive the
    /// delivery by hand (batches, tasks, other actors). It behaves as a delivery a handler
    /// kept: whoever holds it answers, and dropping it unanswered requeues it at once.
    pub fn into_parts(self) -> (Delivery, Answer) {
        let (delivery, watch, recorder) = self.build();
        // The handler "returned" while the delivery lives on: its holder answers.
        let _ = watch.apply(Action::Finish);
        (
            delivery,
            Answer {
                recorder,
                outcome: None,
            },
        )
    }

    fn build(self) -> (Delivery, Watch, Arc<Recorder>) {
        let recorder = Arc::new(Recorder {
            lost: self.lost,
            ..Recorder::default()
        });
        let nanos = self
            .timestamp
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let meta = Meta {
            id: DeliveryId::Text(Arc::from(self.id.as_str())),
            body: self.body,
            attempts: self.attempts,
            timestamp_nanos: i64::try_from(nanos).unwrap_or(i64::MAX),
            source: Arc::from(self.source.as_str()),
        };
        let (delivery, watch) = Delivery::new(meta, recorder.clone());
        (delivery, watch, recorder)
    }

    /// Sends the delivery to a handler actor, waits for its result and applies it.
    pub async fn send_to(self, handler: &Recipient<Delivery>) -> Answer {
        self.dispatch(HandlerSink::actors(vec![handler.clone()]))
            .await
    }

    /// Runs a handler closure on the delivery and applies its result.
    pub async fn run<F, Fut>(self, handler: F) -> Answer
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.dispatch(HandlerSink::closure(handler)).await
    }

    async fn dispatch(self, sink: HandlerSink) -> Answer {
        let (delivery, watch, recorder) = self.build();
        let handled = sink.dispatch(delivery).await;
        let outcome = Some(match &handled {
            Handled::Returned(Ok(())) => HandlerOutcome::Ok,
            Handled::Returned(Err(e)) => HandlerOutcome::Err(e.to_string()),
            Handled::Panicked(message) => HandlerOutcome::Panicked(message.clone()),
            Handled::Gone => HandlerOutcome::Gone,
        });
        settle(&watch, &handled, false);
        Answer { recorder, outcome }
    }
}

/// What the handler itself returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerOutcome {
    /// `Ok(())`.
    Ok,
    /// `Err`, with the error's text.
    Err(String),
    /// The handler panicked while handling the message (a closure, or an actor that died with
    /// it), with the panic message for closures.
    Panicked(String),
    /// The handler actor had stopped before it took the message: released at once, without
    /// counting a failure.
    Gone,
}

/// How a [`MockDelivery`] was answered.
pub struct Answer {
    recorder: Arc<Recorder>,
    outcome: Option<HandlerOutcome>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("actions", &self.actions())
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl Answer {
    /// Every answer sent, in order (touches included).
    pub fn actions(&self) -> Vec<Action> {
        self.recorder
            .actions
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// The final answer (finish or requeue), if any.
    pub fn final_action(&self) -> Option<Action> {
        self.actions().into_iter().find(|a| *a != Action::Touch)
    }

    /// True if the message was finished.
    pub fn is_finished(&self) -> bool {
        self.final_action() == Some(Action::Finish)
    }

    /// `Some((delay, backoff))` if the message was requeued; a `None` delay means the
    /// consumer's default (`default_requeue_delay × attempts`, capped).
    pub fn requeued(&self) -> Option<(Option<Duration>, bool)> {
        match self.final_action() {
            Some(Action::Requeue { delay, backoff }) => Some((delay, backoff)),
            _ => None,
        }
    }

    /// How many times the message was touched.
    pub fn touches(&self) -> usize {
        self.actions()
            .iter()
            .filter(|a| **a == Action::Touch)
            .count()
    }

    /// What the handler returned (`None` for [`MockDelivery::into_parts`]).
    pub fn handler_outcome(&self) -> Option<&HandlerOutcome> {
        self.outcome.as_ref()
    }

    /// Waits until the message has a final answer, or `timeout` passes; returns it.
    pub async fn answered_within(&self, timeout: Duration) -> Option<Action> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.recorder.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(action) = self.final_action() {
                return Some(action);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.final_action();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn closure_results_map_to_answers() {
        let ok = MockDelivery::new("x").run(|_d| async { Ok(()) }).await;
        assert!(ok.is_finished());
        assert_eq!(ok.handler_outcome(), Some(&HandlerOutcome::Ok));

        let failed = MockDelivery::new("x")
            .attempts(3)
            .run(|_d| async { Err("db down".into()) })
            .await;
        assert_eq!(failed.requeued(), Some((None, true)));

        let panicked = MockDelivery::new("x")
            .run(|_d| async { panic!("poison") })
            .await;
        assert_eq!(panicked.requeued(), Some((None, true)));
        assert_eq!(
            panicked.handler_outcome(),
            Some(&HandlerOutcome::Panicked("poison".into()))
        );
    }

    #[actix_rt::test]
    async fn explicit_answers_and_touches_are_recorded() {
        let answer = MockDelivery::new("x")
            .run(|d| async move {
                d.touch()?;
                d.requeue_without_backoff(Some(Duration::from_secs(7)))?;
                Ok(())
            })
            .await;
        assert_eq!(answer.touches(), 1);
        assert_eq!(
            answer.requeued(),
            Some((Some(Duration::from_secs(7)), false))
        );
    }

    #[actix_rt::test]
    async fn kept_deliveries_are_answered_by_their_holder() {
        let (delivery, answer) = MockDelivery::new("x").into_parts();
        let task = actix_rt::spawn(async move {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
            delivery.finish()
        });
        assert_eq!(
            answer.answered_within(Duration::from_secs(5)).await,
            Some(Action::Finish)
        );
        task.await.unwrap().unwrap();
    }

    #[actix_rt::test]
    async fn kept_deliveries_dropped_unanswered_are_requeued() {
        let (delivery, answer) = MockDelivery::new("x").into_parts();
        drop(delivery);
        assert_eq!(answer.requeued(), Some((Some(Duration::ZERO), true)));
    }

    #[actix_rt::test]
    async fn lost_connection_surfaces() {
        let answer = MockDelivery::new("x")
            .connection_lost()
            .run(|d| async move {
                assert!(matches!(d.finish(), Err(Error::ConnectionLost { .. })));
                Ok(())
            })
            .await;
        assert_eq!(answer.final_action(), None);
    }
}
