//! Builder settings for the ready-made handlers: batch handlers, the stream adapter and
//! give-up handlers. Kept apart from the core settings in `builder.rs`.

use std::{future::Future, time::Duration};

use actix::Recipient;

use super::ConsumerBuilder;
use crate::{
    delivery::HandlerResult,
    error::Error,
    handler::{BatchSpec, Batcher, DeliveryBatch, GiveUpHandler, GiveUpHook},
    stream::ConsumerStream,
};

impl ConsumerBuilder {
    /// Handles deliveries in batches (gnsq `BatchHandler`): up to `size` messages, or fewer
    /// once `max_wait` has passed since the first of them, go to one call of `f`. Its result
    /// answers the whole batch: `Ok` finishes every message, `Err` requeues every message (with
    /// the error's delay and backoff). For one answer per message use
    /// [`handler_batch_each`](Self::handler_batch_each).
    ///
    /// No message waits longer than `max_wait` for its batch; each batch is handled in a task of
    /// its own, so a slow call does not hold up the next batch. `size` must not exceed
    /// `max_in_flight` (nsqd never sends more, so such a batch would always wait the full
    /// `max_wait`): [`validate`](Self::validate) rejects it, naming both settings (it cannot be
    /// checked here, `max_in_flight` may be set after this). Keep `max_wait` well under the
    /// message timeout. Replaces any other closure handler; a panic in `f` requeues the batch
    /// with backoff.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), actix_nsq::Error> {
    /// use std::time::Duration;
    /// use actix_nsq::{Consumer, DeliveryBatch};
    ///
    /// let consumer = Consumer::builder("events", "bulk-indexer")
    ///     .nsqd("127.0.0.1:4150")
    ///     .max_in_flight(200)
    ///     .handler_batch(100, Duration::from_millis(250), |batch: DeliveryBatch| async move {
    ///         let bodies: Vec<_> = batch.iter().map(|d| d.body().clone()).collect();
    ///         println!("indexing {} documents in one request", bodies.len());
    ///         Ok(()) // finishes all 100; an Err would requeue all 100
    ///     })
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn handler_batch<F, Fut>(mut self, size: usize, max_wait: Duration, f: F) -> Self
    where
        F: Fn(DeliveryBatch) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let spec = BatchSpec { size, max_wait };
        self.handlers.set_batch(Batcher::closure(spec, f));
        self
    }

    /// As [`handler_batch`](Self::handler_batch), with one result per message, in batch order:
    /// each `Ok` finishes its message, each `Err` requeues it; a message without a result (a
    /// short `Vec`) is requeued with backoff.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), actix_nsq::Error> {
    /// use std::time::Duration;
    /// use actix_nsq::{Consumer, DeliveryBatch, HandlerResult};
    ///
    /// let consumer = Consumer::builder("events", "validator")
    ///     .nsqd("127.0.0.1:4150")
    ///     .max_in_flight(50)
    ///     .handler_batch_each(50, Duration::from_millis(100), |batch: DeliveryBatch| async move {
    ///         batch
    ///             .iter()
    ///             .map(|d| -> HandlerResult {
    ///                 std::str::from_utf8(d.body())?; // requeue what is not UTF-8
    ///                 Ok(())
    ///             })
    ///             .collect()
    ///     })
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn handler_batch_each<F, Fut>(mut self, size: usize, max_wait: Duration, f: F) -> Self
    where
        F: Fn(DeliveryBatch) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<HandlerResult>> + Send + 'static,
    {
        let spec = BatchSpec { size, max_wait };
        self.handlers.set_batch(Batcher::closure(spec, f));
        self
    }

    /// As [`handler_batch`](Self::handler_batch), with an actor handling [`DeliveryBatch`] and
    /// answering a [`BatchResult`](crate::BatchResult) (all, or one per message). A batch the
    /// actor never took (it stopped) is requeued at once without counting a failure.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), actix_nsq::Error> {
    /// use std::time::Duration;
    /// use actix::prelude::*;
    /// use actix_nsq::{BatchResult, Consumer, DeliveryBatch};
    ///
    /// struct Writer;
    /// impl Actor for Writer {
    ///     type Context = Context<Self>;
    /// }
    /// impl Handler<DeliveryBatch> for Writer {
    ///     type Result = BatchResult;
    ///     fn handle(&mut self, batch: DeliveryBatch, _: &mut Context<Self>) -> BatchResult {
    ///         BatchResult::All(Ok(())) // or BatchResult::Each(one result per delivery)
    ///     }
    /// }
    ///
    /// let consumer = Consumer::builder("events", "writer")
    ///     .nsqd("127.0.0.1:4150")
    ///     .max_in_flight(20)
    ///     .handler_batch_actor(10, Duration::from_millis(100), Writer.start().recipient())
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn handler_batch_actor(
        mut self,
        size: usize,
        max_wait: Duration,
        recipient: Recipient<DeliveryBatch>,
    ) -> Self {
        let spec = BatchSpec { size, max_wait };
        self.handlers.set_batch(Batcher::actor(spec, recipient));
        self
    }

    /// Where messages past `max_attempts` go: a ready-made [`GiveUpHandler`] (log, JSON lines,
    /// dead-letter topic). Replaces [`give_up`](Self::give_up) and
    /// [`give_up_fn`](Self::give_up_fn).
    pub fn give_up_handler(mut self, handler: GiveUpHandler) -> Self {
        self.give_up = GiveUpHook::closure(move |delivery| handler.handle(delivery));
        self
    }

    /// Starts the consumer as a [`Stream`](futures_util::Stream) of deliveries instead of
    /// handing them to a handler (gnsq `QueueHandler`). See [`ConsumerStream`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a handler is set (the stream is the handler), otherwise as
    /// [`start`](Self::start).
    pub fn into_stream(mut self) -> Result<ConsumerStream, Error> {
        if self.handlers.problem().is_none() {
            return Err(Error::config(
                "handler",
                "into_stream hands deliveries to the stream: set no handler",
            ));
        }
        let (entry, deliveries) = crate::stream::entry();
        self.handlers.set_closure(entry);
        let consumer = self.start()?;
        Ok(ConsumerStream::new(consumer, deliveries))
    }

    /// The checks of the settings above, run at the end of [`validate`](Self::validate).
    pub(super) fn validate_extras(&self) -> Result<(), Error> {
        if let Some(batch) = self.handlers.batch_spec() {
            batch.check(self.flow.max_in_flight)?;
        }
        Ok(())
    }
}
