//! When the consumer receives again after finding the queue empty: on the poll timer (with
//! jitter), or at once on a realtime notification (`{ns}:rt:{qname}`, Node rsmq's channel).

use std::time::Duration;

use actix::{fut::wrap_future, ActorFutureExt, AsyncContext, Context, StreamHandler};
use rand::Rng;

use super::{RsmqConsumerActor, Supply};
use crate::rsmq::{
    consumer::{RsmqConsumerBuilder, RsmqConsumerEvent},
    realtime::Notification,
};

impl RsmqConsumerActor {
    pub(super) fn arm_poll(&mut self, ctx: &mut Context<Self>) {
        if self.poll_timer.is_some() || self.is_stopping() {
            return;
        }
        let jitter = RsmqConsumerBuilder::POLL_JITTER;
        let wait = self
            .settings
            .poll_interval
            .mul_f64(rand::rng().random_range(1.0 - jitter..=1.0 + jitter));
        self.poll_timer = Some(ctx.run_later(wait, |act, ctx| {
            act.poll_timer = None;
            act.wake(ctx);
        }));
    }

    /// The poll timer fired or a notification came: there may be messages again.
    pub(super) fn wake(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.poll_timer.take() {
            ctx.cancel_future(timer);
        }
        if self.supply == Supply::Empty {
            self.supply = Supply::Unknown;
        }
        self.fill(ctx);
    }

    pub(super) fn subscribe(&mut self, ctx: &mut Context<Self>) {
        let (rsmq, queue) = (self.rsmq.clone(), self.queue.clone());
        let subscribe = async move { rsmq.subscribe(&queue).await };
        ctx.spawn(wrap_future(subscribe).map(|result, act: &mut Self, ctx| {
            if act.is_stopping() {
                return;
            }
            match result {
                Ok(notifications) => {
                    tracing::debug!(queue = %act.queue, "rsmq realtime subscribed");
                    act.realtime_backoff.reset();
                    ctx.add_stream(notifications);
                    // A message sent before the subscription was active sent its
                    // notification to nobody: look now.
                    act.wake(ctx);
                }
                Err(error) => {
                    let retry_in = act
                        .realtime_backoff
                        .next_delay(&mut rand::rng())
                        .unwrap_or(Duration::from_secs(30));
                    tracing::warn!(queue = %act.queue, %error, ?retry_in, "rsmq realtime subscribe failed");
                    act.emit(RsmqConsumerEvent::RealtimeFailed { error, retry_in });
                    ctx.run_later(retry_in, |act, ctx| act.subscribe(ctx));
                }
            }
        }));
    }
}

impl StreamHandler<Notification> for RsmqConsumerActor {
    fn handle(&mut self, notification: Notification, ctx: &mut Context<Self>) {
        tracing::trace!(queue = %self.queue, ?notification, "rsmq realtime notification");
        self.wake(ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The notification stream never ends by itself; subscribe again if it does.
        if !self.is_stopping() {
            self.subscribe(ctx);
        }
    }
}
