//! Realtime notifications: Node rsmq publishes the queue's message count on `{ns}:rt:{qname}`
//! after each send when `realtime` is on. PyRSMQ never publishes, so a consumer must still
//! poll as a fallback; the notifications only let it wake at once.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{stream::BoxStream, Stream, StreamExt};
use redis::aio::PubSubStream;

use super::{client::Rsmq, validate};
use crate::error::{Error, Result};

/// The first wait before resubscribing after the subscription connection dropped; doubled per
/// failed attempt up to [`MAX_RESUBSCRIBE_DELAY`].
const MIN_RESUBSCRIBE_DELAY: Duration = Duration::from_millis(100);
const MAX_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(5);

/// One event on a queue's realtime channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// A message was sent; `msgs` is the queue's message count right after it (Node's
    /// payload, the ZCARD). The message may be delayed, or already taken by another consumer.
    Sent {
        /// Messages in the queue after the send, hidden ones included.
        msgs: u64,
    },
    /// The subscription connection dropped and is back. Notifications sent meanwhile are lost:
    /// receive now.
    Resubscribed,
}

/// The notifications of one queue, a never-ending [`Stream`]. It resubscribes by itself
/// after a disconnect (with backoff) and then yields [`Notification::Resubscribed`].
/// Dropping it unsubscribes.
pub struct Notifications {
    queue: String,
    inner: BoxStream<'static, Notification>,
}

impl fmt::Debug for Notifications {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifications")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Notifications {
    /// The queue these notifications are about.
    pub fn queue(&self) -> &str {
        &self.queue
    }
}

impl Stream for Notifications {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl Rsmq {
    /// Subscribes to `{ns}:rt:{qname}` on a connection of its own. Works whether or not this
    /// handle publishes ([`RsmqBuilder::realtime`](super::RsmqBuilder::realtime)); what
    /// matters is that the senders do.
    ///
    /// The subscription is active when this returns.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName), [`Error::Redis`](crate::Error::Redis)
    /// when the first subscription fails, [`Error::Timeout`](crate::Error::Timeout) when it
    /// takes longer than [`connection_timeout`](super::RsmqBuilder::connection_timeout) (a
    /// Redis that accepts and never answers).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn demo(rsmq: actix_nsq::rsmq::Rsmq) -> actix_nsq::Result<()> {
    /// use std::time::Duration;
    /// use futures_util::StreamExt;
    ///
    /// let mut wake = rsmq.subscribe("jobs").await?;
    /// loop {
    ///     while let Some(msg) = rsmq.receive_message("jobs", None).await? {
    ///         // ... handle, then:
    ///         rsmq.delete_message_checked("jobs", &msg.id, msg.rc).await?;
    ///     }
    ///     // Wake on a notification, or poll again after a while anyway.
    ///     let _ = tokio::time::timeout(Duration::from_secs(2), wake.next()).await;
    /// }
    /// # }
    /// ```
    pub async fn subscribe(&self, qname: &str) -> Result<Notifications> {
        validate::queue_name(qname)?;
        let channel = format!("{}rt:{qname}", self.prefix);
        let timeout = self.connection_timeout;
        let live = subscribe_once(&self.client, &channel, timeout).await?;
        let state = State {
            client: self.client.clone(),
            channel,
            live: Some(live),
            timeout,
        };
        let inner = futures_util::stream::unfold(state, next_notification).boxed();
        Ok(Notifications {
            queue: qname.to_owned(),
            inner,
        })
    }
}

struct State {
    client: redis::Client,
    channel: String,
    /// `None` while reconnecting.
    live: Option<PubSubStream>,
    /// Bound on one (re)subscription: connecting plus SUBSCRIBE.
    timeout: Duration,
}

/// A subscription on a connection of its own, within `timeout`: without the bound, a Redis
/// that accepts and never answers (a stopped process) would hang it forever.
async fn subscribe_once(
    client: &redis::Client,
    channel: &str,
    timeout: Duration,
) -> Result<PubSubStream> {
    let subscribe = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub.into_on_message())
    };
    match tokio::time::timeout(timeout, subscribe).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::Timeout("subscribing to Redis (connection_timeout)")),
    }
}

async fn next_notification(mut state: State) -> Option<(Notification, State)> {
    let mut attempt: u32 = 0;
    loop {
        let Some(live) = state.live.as_mut() else {
            tokio::time::sleep(resubscribe_delay(attempt)).await;
            match subscribe_once(&state.client, &state.channel, state.timeout).await {
                Ok(live) => {
                    tracing::info!(channel = state.channel, "rsmq realtime resubscribed");
                    state.live = Some(live);
                    return Some((Notification::Resubscribed, state));
                }
                Err(error) => {
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(channel = state.channel, %error, attempt, "rsmq resubscribe failed");
                    continue;
                }
            }
        };
        match live.next().await {
            Some(msg) => match msg.get_payload::<u64>() {
                Ok(msgs) => return Some((Notification::Sent { msgs }, state)),
                Err(error) => {
                    tracing::debug!(channel = state.channel, %error, "rsmq realtime payload is not a count");
                }
            },
            None => {
                tracing::warn!(channel = state.channel, "rsmq realtime subscription lost");
                state.live = None;
            }
        }
    }
}

fn resubscribe_delay(attempt: u32) -> Duration {
    MIN_RESUBSCRIBE_DELAY
        .saturating_mul(1 << attempt.min(6))
        .min(MAX_RESUBSCRIBE_DELAY)
}
