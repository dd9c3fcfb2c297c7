//! Batch handlers (gnsq `contrib.batch.BatchHandler`): deliveries are collected until `size`
//! are waiting or `max_wait` has passed since the first, then handed to one handler call; each
//! message is answered from that call's result.
//!
//! Built on kept deliveries: the consumer's dispatcher hands each delivery to a closure that
//! passes it to the collector and returns at once; the delivery stays alive in the collector, so
//! the dispatcher leaves the answer to it (see [`Delivery`]). Nothing else in the consumer
//! knows about batches: flow control sees messages in flight, as for any slow handler.

use std::{
    fmt,
    future::Future,
    ops::Deref,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::{dev::MessageResponse, Actor, Message, Recipient};
use futures_util::FutureExt;
use tokio::sync::mpsc;

use super::panic_message;
use crate::{
    delivery::{action_for, Action, Delivery, HandlerError, HandlerResult},
    error::Error,
};

/// The deliveries of one batch, handed to a batch handler. Derefs to `[Delivery]`; cloning is
/// cheap (a reference count).
///
/// The batch handler's result answers every message, so the handler does not need to; a message
/// it answers itself (say [`Delivery::finish`] on one of them) keeps that answer, since answering
/// twice is a no-op.
#[derive(Clone)]
pub struct DeliveryBatch(Arc<[Delivery]>);

impl Deref for DeliveryBatch {
    type Target = [Delivery];

    fn deref(&self) -> &[Delivery] {
        &self.0
    }
}

impl fmt::Debug for DeliveryBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl Message for DeliveryBatch {
    type Result = BatchResult;
}

/// What a batch handler made of a [`DeliveryBatch`].
#[derive(Debug)]
pub enum BatchResult {
    /// One answer for the whole batch: `Ok` finishes every message, `Err` requeues every
    /// message (with the error's delay and backoff, see [`HandlerError`]).
    All(HandlerResult),
    /// One answer per message, in batch order. Messages without a result (a short `Vec`) are
    /// requeued with the default delay and backoff; extra results are ignored.
    Each(Vec<HandlerResult>),
}

impl From<HandlerResult> for BatchResult {
    fn from(result: HandlerResult) -> Self {
        BatchResult::All(result)
    }
}

impl From<Vec<HandlerResult>> for BatchResult {
    fn from(results: Vec<HandlerResult>) -> Self {
        BatchResult::Each(results)
    }
}

impl<A: Actor, M: Message<Result = BatchResult>> MessageResponse<A, M> for BatchResult {
    fn handle(self, _: &mut A::Context, tx: Option<actix::dev::OneshotSender<BatchResult>>) {
        if let Some(tx) = tx {
            let _ = tx.send(self);
        }
    }
}

type BatchFuture = Pin<Box<dyn Future<Output = BatchResult> + Send + 'static>>;
type BatchFn = Arc<dyn Fn(DeliveryBatch) -> BatchFuture + Send + Sync>;

/// How batches are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchSpec {
    pub(crate) size: usize,
    pub(crate) max_wait: Duration,
}

impl BatchSpec {
    /// A batch of `size` must be able to fill: nsqd never has more than `max_in_flight`
    /// messages out to this consumer (`0`, a consumer started paused, is not judged).
    pub(crate) fn check(&self, max_in_flight: u32) -> Result<(), Error> {
        if self.size == 0 {
            return Err(Error::config(
                "handler_batch",
                "the batch size must be at least 1",
            ));
        }
        if self.max_wait.is_zero() {
            return Err(Error::config(
                "handler_batch",
                "max_wait must be greater than zero",
            ));
        }
        let max = usize::try_from(max_in_flight).unwrap_or(usize::MAX);
        if max_in_flight != 0 && self.size > max {
            return Err(Error::config(
                "max_in_flight",
                format!(
                    "handler_batch size {} is larger than max_in_flight {max_in_flight}: a batch \
                     could never fill; raise max_in_flight or lower the batch size",
                    self.size
                ),
            ));
        }
        Ok(())
    }
}

/// The collector: deliveries go in through the channel; a task on the consumer's runtime,
/// started with the first delivery, cuts them into batches.
pub(crate) struct Batcher {
    spec: BatchSpec,
    f: BatchFn,
    tx: mpsc::UnboundedSender<Delivery>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Delivery>>>,
}

impl Batcher {
    fn new(spec: BatchSpec, f: BatchFn) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            spec,
            f,
            tx,
            rx: Mutex::new(Some(rx)),
        })
    }

    pub(crate) fn spec(&self) -> BatchSpec {
        self.spec
    }

    /// Another collector with the same settings and handler, for another consumer.
    pub(crate) fn fresh(&self) -> Arc<Self> {
        Self::new(self.spec, self.f.clone())
    }

    /// A batcher calling an async closure.
    pub(crate) fn closure<F, Fut, R>(spec: BatchSpec, f: F) -> Arc<Self>
    where
        F: Fn(DeliveryBatch) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Into<BatchResult> + 'static,
    {
        Self::new(
            spec,
            Arc::new(move |batch| Box::pin(f(batch).map(Into::into))),
        )
    }

    /// A batcher sending each batch to an actor. A batch the actor never took (its mailbox
    /// closed) is requeued at once without counting a failure: no handler saw it.
    pub(crate) fn actor(spec: BatchSpec, recipient: Recipient<DeliveryBatch>) -> Arc<Self> {
        Self::new(
            spec,
            Arc::new(move |batch| {
                let request = recipient.send(batch);
                Box::pin(async move {
                    request.await.unwrap_or_else(|error| {
                        BatchResult::All(Err(HandlerError::new(error)
                            .requeue_after(Duration::ZERO)
                            .without_backoff()))
                    })
                })
            }),
        )
    }

    /// Takes a delivery into the current batch. Starts the collector on the first call, on the
    /// runtime of the caller (the consumer's arbiter).
    ///
    /// # Errors
    ///
    /// Gives the delivery back when no collector can run (no runtime here, or it is gone); the
    /// caller then fails the delivery so it is requeued.
    pub(crate) fn push(&self, delivery: Delivery) -> Result<(), Delivery> {
        let receiver = self
            .rx
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(rx) = receiver {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(collect(rx, self.spec, self.f.clone()));
                }
                Err(_) => {
                    *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
                    return Err(delivery);
                }
            }
        }
        self.tx.send(delivery).map_err(|returned| returned.0)
    }
}

/// Cuts batches: the first delivery starts the clock; the batch goes to the handler when it is
/// full or `max_wait` after that first one, whichever comes first. Each batch is handled in a
/// task of its own, so a slow handler never holds the next batch past its `max_wait`.
async fn collect(mut rx: mpsc::UnboundedReceiver<Delivery>, spec: BatchSpec, f: BatchFn) {
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + spec.max_wait;
        let mut batch = Vec::with_capacity(spec.size);
        batch.push(first);
        while batch.len() < spec.size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(delivery)) => batch.push(delivery),
                Ok(None) | Err(_) => break,
            }
        }
        tokio::spawn(handle_batch(f.clone(), DeliveryBatch(batch.into())));
    }
}

async fn handle_batch(f: BatchFn, batch: DeliveryBatch) {
    let call = std::panic::catch_unwind(AssertUnwindSafe(|| f(batch.clone())));
    let result = match call {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    let result = result.unwrap_or_else(|panic| {
        tracing::error!(size = batch.len(), panic = %panic_message(&*panic),
            "batch handler panicked; requeueing the batch");
        BatchResult::All(Err(HandlerError::new("batch handler panicked")))
    });
    answer(&batch, result);
}

/// Answers every message of `batch` from `result`.
fn answer(batch: &[Delivery], result: BatchResult) {
    match result {
        BatchResult::All(result) => {
            if let Err(error) = &result {
                tracing::debug!(size = batch.len(), %error, "batch handler failed; requeueing the batch");
            }
            let action = action_for(&result);
            for delivery in batch {
                send(delivery, action);
            }
        }
        BatchResult::Each(results) => {
            if results.len() != batch.len() {
                tracing::warn!(size = batch.len(), results = results.len(),
                    "batch handler returned a result count unlike the batch size; requeueing those without one");
            }
            let mut results = results.iter();
            for delivery in batch {
                let action = results.next().map_or(
                    Action::Requeue {
                        delay: None,
                        backoff: true,
                    },
                    action_for,
                );
                send(delivery, action);
            }
        }
    }
}

fn send(delivery: &Delivery, action: Action) {
    let sent = match action {
        Action::Finish => delivery.finish(),
        Action::Requeue {
            delay,
            backoff: true,
        } => delivery.requeue(delay),
        Action::Requeue {
            delay,
            backoff: false,
        } => delivery.requeue_without_backoff(delay),
        Action::Touch => delivery.touch(),
    };
    if let Err(error) = sent {
        tracing::debug!(id = delivery.id(), source = delivery.source(), %error, "could not answer batched message");
    }
}

/// The handler closure a batch handler registers with the consumer: it passes the delivery to
/// the batcher and returns; the batcher answers. A delivery the batcher cannot take is failed
/// without backoff, so it is requeued at once rather than finished.
pub(crate) fn entry(
    batcher: Arc<Batcher>,
) -> impl Fn(Delivery) -> std::future::Ready<HandlerResult> + Send + Sync + 'static {
    move |delivery| {
        std::future::ready(match batcher.push(delivery) {
            Ok(()) => Ok(()),
            Err(delivery) => {
                drop(delivery);
                Err(HandlerError::new("the batch collector is not running")
                    .requeue_after(Duration::ZERO)
                    .without_backoff())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use super::*;
    use crate::delivery::{DeliveryId, Meta, Respond, Watch};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, Action)>>);
    impl Respond for Recorder {
        fn respond(&self, meta: &Meta, action: Action) -> Result<(), Error> {
            self.0
                .lock()
                .unwrap()
                .push((meta.id.as_str().to_owned(), action));
            Ok(())
        }
    }

    fn delivery(rec: &Arc<Recorder>, id: usize) -> (Delivery, Watch) {
        let meta = Meta {
            id: DeliveryId::Text(format!("m{id}").into()),
            body: bytes::Bytes::from(format!("body{id}")),
            attempts: 1,
            timestamp_nanos: 0,
            source: "test".into(),
        };
        Delivery::new(meta, rec.clone())
    }

    const REQ: Action = Action::Requeue {
        delay: None,
        backoff: true,
    };

    /// Feeds `n` deliveries through the entry closure as the dispatcher would, applying the
    /// closure's result through the watch.
    async fn feed(
        entry: &impl Fn(Delivery) -> std::future::Ready<HandlerResult>,
        rec: &Arc<Recorder>,
        ids: std::ops::Range<usize>,
    ) {
        for id in ids {
            let (d, watch) = delivery(rec, id);
            let result = entry(d).await;
            watch.apply(action_for(&result)).unwrap();
        }
    }

    fn spec(size: usize, ms: u64) -> BatchSpec {
        BatchSpec {
            size,
            max_wait: Duration::from_millis(ms),
        }
    }

    #[actix_rt::test]
    async fn full_batches_go_at_once_and_the_rest_on_the_timer() {
        tokio::time::pause();
        let rec = Arc::new(Recorder::default());
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let sizes2 = sizes.clone();
        let batcher = Batcher::closure(spec(3, 1000), move |batch: DeliveryBatch| {
            sizes2.lock().unwrap().push(batch.len());
            async { Ok::<(), HandlerError>(()) }
        });
        let entry = entry(batcher);
        feed(&entry, &rec, 0..7).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Two full batches went without waiting; the seventh waits for the timer.
        assert_eq!(*sizes.lock().unwrap(), [3, 3]);
        assert_eq!(rec.0.lock().unwrap().len(), 6);
        tokio::time::sleep(Duration::from_millis(990)).await;
        assert_eq!(*sizes.lock().unwrap(), [3, 3], "flushed before max_wait");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(*sizes.lock().unwrap(), [3, 3, 1], "not flushed at max_wait");
        let answers = rec.0.lock().unwrap().clone();
        assert_eq!(answers.len(), 7);
        assert!(answers.iter().all(|(_, a)| *a == Action::Finish));
    }

    #[actix_rt::test]
    async fn per_message_results_answer_each_and_missing_ones_requeue() {
        let rec = Arc::new(Recorder::default());
        let batcher = Batcher::closure(spec(4, 50), |batch: DeliveryBatch| {
            // Finish the even bodies, fail the odd ones, and forget the last.
            let results: Vec<HandlerResult> = batch[..batch.len() - 1]
                .iter()
                .map(|d| match d.body().last() {
                    Some(b) if (b - b'0').is_multiple_of(2) => Ok(()),
                    _ => Err(HandlerError::new("odd").requeue_after(Duration::from_secs(2))),
                })
                .collect();
            async move { results }
        });
        feed(&entry(batcher), &rec, 0..4).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut answers = rec.0.lock().unwrap().clone();
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        let later = Action::Requeue {
            delay: Some(Duration::from_secs(2)),
            backoff: true,
        };
        assert_eq!(
            answers,
            [
                ("m0".to_owned(), Action::Finish),
                ("m1".to_owned(), later),
                ("m2".to_owned(), Action::Finish),
                ("m3".to_owned(), REQ),
            ]
        );
    }

    #[actix_rt::test]
    async fn an_error_or_a_panic_requeues_the_whole_batch() {
        let rec = Arc::new(Recorder::default());
        let failing = Batcher::closure(spec(2, 50), |_b: DeliveryBatch| async {
            Err::<(), HandlerError>("down".into())
        });
        feed(&entry(failing), &rec, 0..2).await;
        let panicking = Batcher::closure(spec(2, 50), |_b: DeliveryBatch| async {
            panic!("poison");
            #[allow(unreachable_code)]
            Ok::<(), HandlerError>(())
        });
        feed(&entry(panicking), &rec, 2..4).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let answers = rec.0.lock().unwrap().clone();
        assert_eq!(answers.len(), 4);
        assert!(answers.iter().all(|(_, a)| *a == REQ), "{answers:?}");
    }

    struct Collect(Arc<Mutex<Vec<usize>>>);
    impl Actor for Collect {
        type Context = actix::Context<Self>;
    }
    impl actix::Handler<DeliveryBatch> for Collect {
        type Result = BatchResult;
        fn handle(&mut self, batch: DeliveryBatch, _: &mut Self::Context) -> BatchResult {
            self.0.lock().unwrap().push(batch.len());
            BatchResult::Each(vec![Ok(()), Err("no".into())])
        }
    }

    #[actix_rt::test]
    async fn actor_batches_answer_per_message_and_a_dead_actor_releases_the_batch() {
        let rec = Arc::new(Recorder::default());
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let actor = Collect(sizes.clone()).start();
        feed(
            &entry(Batcher::actor(spec(2, 50), actor.recipient())),
            &rec,
            0..2,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(*sizes.lock().unwrap(), [2]);
        let mut answers = rec.0.lock().unwrap().clone();
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(answers, [("m0".into(), Action::Finish), ("m1".into(), REQ)]);

        // A stopped actor never saw the batch: requeued at once, no backoff.
        let rec = Arc::new(Recorder::default());
        let stopped = {
            struct Stopped;
            impl Actor for Stopped {
                type Context = actix::Context<Self>;
                fn started(&mut self, ctx: &mut Self::Context) {
                    use actix::ActorContext;
                    ctx.stop();
                }
            }
            impl actix::Handler<DeliveryBatch> for Stopped {
                type Result = BatchResult;
                fn handle(&mut self, _: DeliveryBatch, _: &mut Self::Context) -> BatchResult {
                    BatchResult::All(Ok(()))
                }
            }
            Stopped.start().recipient()
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        feed(&entry(Batcher::actor(spec(1, 50), stopped)), &rec, 0..1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let released = Action::Requeue {
            delay: Some(Duration::ZERO),
            backoff: false,
        };
        assert_eq!(*rec.0.lock().unwrap(), [("m0".into(), released)]);
    }

    #[actix_rt::test]
    async fn a_cloned_builders_batches_do_not_mix_with_the_originals() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let sizes2 = sizes.clone();
        let mut original = crate::handler::Handlers::default();
        original.set_batch(Batcher::closure(
            spec(2, 1000),
            move |batch: DeliveryBatch| {
                sizes2.lock().unwrap().push(batch.len());
                async { Ok::<(), HandlerError>(()) }
            },
        ));
        let clone = original.clone();
        assert_eq!(clone.batch_spec(), Some(spec(2, 1000)));
        let rec = Arc::new(Recorder::default());
        // One delivery into each: with a shared collector they would make one full batch.
        for (handlers, id) in [(&original, 0), (&clone, 1)] {
            let sink = handlers.sink().unwrap();
            let (d, watch) = delivery(&rec, id);
            let handled = sink.dispatch(d).await;
            crate::handler::settle(&watch, &handled, false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(sizes.lock().unwrap().is_empty(), "{sizes:?}");
        assert!(rec.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_batch_larger_than_max_in_flight_names_both_settings() {
        let error = spec(10, 100).check(5).unwrap_err().to_string();
        assert!(
            error.contains("max_in_flight") && error.contains("handler_batch"),
            "{error}"
        );
        assert!(spec(5, 100).check(5).is_ok());
        assert!(
            spec(10, 100).check(0).is_ok(),
            "a paused consumer is not judged"
        );
        assert!(spec(0, 100).check(5).is_err());
        assert!(spec(1, 0).check(5).is_err());
    }
}
