//! [`ConsumerStream`]: a consumer as a `Stream` of deliveries (gnsq `contrib.queue.QueueHandler`),
//! for code that is not written as actors.
//!
//! The stream is the consumer's handler: a closure that passes each delivery on and keeps it
//! alive, so the holder of the item answers (see [`Delivery`]). Back-pressure is nsqd's own:
//! an unanswered delivery stays in flight, and nsqd never has more than `max_in_flight`
//! messages in flight to the consumer, so at most that many deliveries are ever queued for or
//! held by the stream's reader.

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use futures_util::Stream;
use tokio::sync::mpsc;

use crate::{
    consumer::Consumer,
    delivery::{Delivery, HandlerError, HandlerResult},
};

/// A running consumer whose deliveries are read as a [`Stream`].
///
/// Made by [`ConsumerBuilder::into_stream`](crate::ConsumerBuilder::into_stream). Each item
/// is a [`Delivery`] to answer ([`finish`](Delivery::finish),
/// [`requeue`](Delivery::requeue), ...); one dropped unanswered is requeued at once. At most
/// `max_in_flight` deliveries are outstanding (queued in the stream or held by you); nsqd sends
/// the next one as you answer.
///
/// Dropping the stream stops the consumer gracefully: deliveries still queued in it are
/// requeued at once (without counting a failure), the consumer sends CLS and waits, within its
/// `stop_timeout`, for the deliveries you still hold to be answered. Use
/// [`stop`](Self::stop) to wait for that. Stopped any other way (through a clone of
/// [`consumer`](Self::consumer)), the stream ends within 100 ms.
///
/// ```no_run
/// # async fn demo() -> Result<(), actix_nsq::Error> {
/// use futures_util::StreamExt;
/// use actix_nsq::Consumer;
///
/// let mut deliveries = Consumer::builder("events", "reader")
///     .nsqd("127.0.0.1:4150")
///     .max_in_flight(16) // at most 16 outstanding
///     .into_stream()?;
/// while let Some(delivery) = deliveries.next().await {
///     println!("{} bytes", delivery.body().len());
///     delivery.finish()?;
///     if deliveries.consumer().stats().finished >= 1000 {
///         break;
///     }
/// }
/// deliveries.stop().await; // or just drop it
/// # Ok(()) }
/// ```
pub struct ConsumerStream {
    consumer: Consumer,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    /// While nothing is queued: when to look again whether the consumer has stopped.
    alive_check: Pin<Box<tokio::time::Sleep>>,
    stopped: bool,
}

/// How soon the stream ends after its consumer was stopped some other way than through the
/// stream (a clone of [`ConsumerStream::consumer`]): nothing signals that, so a pending stream
/// looks this often.
const ALIVE_CHECK: Duration = Duration::from_millis(100);

/// The handler closure feeding a stream, and the stream's end of the channel. A delivery the
/// stream can no longer take (it was dropped) fails without backoff, so it is requeued at once
/// rather than finished.
pub(crate) fn entry() -> (
    impl Fn(Delivery) -> std::future::Ready<HandlerResult> + Send + Sync + 'static,
    mpsc::UnboundedReceiver<Delivery>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let entry = move |delivery| {
        std::future::ready(match tx.send(delivery) {
            Ok(()) => Ok(()),
            Err(returned) => {
                drop(returned.0);
                Err(HandlerError::new("the consumer's stream was dropped")
                    .requeue_after(Duration::ZERO)
                    .without_backoff())
            }
        })
    };
    (entry, rx)
}

impl ConsumerStream {
    pub(crate) fn new(consumer: Consumer, deliveries: mpsc::UnboundedReceiver<Delivery>) -> Self {
        Self {
            consumer,
            deliveries,
            alive_check: Box::pin(tokio::time::sleep(ALIVE_CHECK)),
            stopped: false,
        }
    }

    /// The consumer: for [`stats`](Consumer::stats),
    /// [`set_max_in_flight`](Consumer::set_max_in_flight), ...
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Stops the consumer gracefully and waits: the deliveries queued in the stream are
    /// requeued at once, then as [`Consumer::stop`] (CLS, wait for the deliveries you hold to
    /// be answered, close). Resolves with the number abandoned at the deadline.
    pub async fn stop(mut self) -> u32 {
        self.stopped = true;
        self.release();
        self.consumer.stop().await
    }

    /// Takes no more deliveries and requeues those queued.
    fn release(&mut self) {
        self.deliveries.close();
        let mut released = 0_usize;
        while let Ok(delivery) = self.deliveries.try_recv() {
            released += 1;
            if let Err(error) = delivery.requeue_without_backoff(Some(Duration::ZERO)) {
                tracing::debug!(id = delivery.id(), %error, "could not requeue a queued delivery");
            }
        }
        tracing::debug!(topic = %self.consumer.topic(), channel = %self.consumer.channel(),
            released, "consumer stream closed");
    }
}

impl Stream for ConsumerStream {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        loop {
            if let Poll::Ready(next) = self.deliveries.poll_recv(cx) {
                return Poll::Ready(next);
            }
            if !self.consumer.is_running() {
                return Poll::Ready(None);
            }
            ready!(self.alive_check.as_mut().poll(cx));
            let next_check = tokio::time::Instant::now() + ALIVE_CHECK;
            self.alive_check.as_mut().reset(next_check);
        }
    }
}

impl Drop for ConsumerStream {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.release();
        let consumer = self.consumer.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { consumer.stop().await });
            }
            // The consumer's actors live in an actix System; outside one they are already gone.
            Err(_) => tracing::debug!("consumer stream dropped outside a runtime; not stopping"),
        }
    }
}

impl std::fmt::Debug for ConsumerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerStream")
            .field("consumer", &self.consumer)
            .field("queued", &self.deliveries.len())
            .finish()
    }
}
