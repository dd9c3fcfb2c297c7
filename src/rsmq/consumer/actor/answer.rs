//! The way back from a [`Delivery`](crate::Delivery) to Redis: each delivery's [`Receipt`]
//! queues its answers to the consumer actor, which frees the slot and makes the checked Redis
//! call (the receive count `rc` is the receipt), and auto-extends unanswered deliveries.

use std::{sync::atomic::Ordering::Relaxed, time::Duration};

use actix::{fut::wrap_future, ActorFutureExt, AsyncContext, Context, SpawnHandle, StreamHandler};
use tokio::sync::mpsc;

use super::RsmqConsumerActor;
use crate::{
    delivery::{requeue_delay, Action, Meta, Respond},
    error::{Error, Result},
    rsmq::{
        consumer::RsmqConsumerEvent,
        types::{DeleteOutcome, VisibilityOutcome},
        validate,
    },
};

/// An answer travelling from a delivery to the consumer actor.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    /// Which delivery: the actor's key for it.
    pub(super) token: u64,
    pub(super) action: Action,
}

/// The responder of one delivery. Unbounded is safe: answers are bounded by the deliveries
/// outstanding, which the concurrency bounds (touches aside, which the handler paces).
pub(super) struct Receipt {
    pub(super) token: u64,
    pub(super) answers: mpsc::UnboundedSender<Answer>,
}

impl Respond for Receipt {
    fn respond(&self, _: &Meta, action: Action) -> Result<(), Error> {
        let token = self.token;
        self.answers
            .send(Answer { token, action })
            .map_err(|_| Error::Stopped)
    }
}

/// RSMQ keeps whole seconds: a delay with a fraction is rounded up, so a requeue never comes
/// back sooner than asked, and capped at RSMQ's largest.
fn whole_seconds_up(delay: Duration) -> Duration {
    let secs = delay
        .as_secs()
        .saturating_add(u64::from(delay.subsec_nanos() > 0));
    Duration::from_secs(secs.min(validate::MAX_SECONDS))
}

/// What an answer's Redis call found.
enum Applied {
    /// It took effect.
    Done,
    /// The receipt was stale; `gone` when the message no longer exists.
    NotOwned { gone: bool },
}

impl From<DeleteOutcome> for Applied {
    fn from(outcome: DeleteOutcome) -> Self {
        match outcome {
            DeleteOutcome::Deleted => Applied::Done,
            DeleteOutcome::NotOwned => Applied::NotOwned { gone: false },
            DeleteOutcome::NotFound => Applied::NotOwned { gone: true },
        }
    }
}

impl From<VisibilityOutcome> for Applied {
    fn from(outcome: VisibilityOutcome) -> Self {
        match outcome {
            VisibilityOutcome::Changed => Applied::Done,
            VisibilityOutcome::NotOwned => Applied::NotOwned { gone: false },
            VisibilityOutcome::NotFound => Applied::NotOwned { gone: true },
        }
    }
}

impl StreamHandler<Answer> for RsmqConsumerActor {
    fn handle(&mut self, answer: Answer, ctx: &mut Context<Self>) {
        self.on_answer(answer, ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The actor holds a sender itself: the stream ends only with the actor.
    }
}

impl RsmqConsumerActor {
    pub(super) fn on_answer(&mut self, Answer { token, action }: Answer, ctx: &mut Context<Self>) {
        if action == Action::Touch {
            if self.in_flight.contains_key(&token) {
                self.extend(token, ctx);
            }
            return;
        }
        let Some(entry) = self.in_flight.remove(&token) else {
            return;
        };
        if let Some(extender) = entry.extender {
            ctx.cancel_future(extender);
        }
        self.counters.in_flight.fetch_sub(1, Relaxed);
        let (rsmq, queue, id, rc) = (self.rsmq.clone(), self.queue.clone(), entry.id, entry.rc);
        let call = match action {
            Action::Requeue { delay, .. } => {
                let settings = &self.settings;
                let delay = whole_seconds_up(requeue_delay(
                    delay,
                    entry.attempts,
                    settings.default_requeue_delay,
                    settings.max_requeue_delay,
                ));
                let id = id.clone();
                tracing::trace!(queue = %queue, id = %id, rc, ?delay, "rsmq requeue");
                Box::pin(async move {
                    rsmq.change_message_visibility_checked(&queue, &id, rc, delay)
                        .await
                        .map(Applied::from)
                }) as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>
            }
            _ => {
                let id = id.clone();
                Box::pin(async move {
                    rsmq.delete_message_checked(&queue, &id, rc)
                        .await
                        .map(Applied::from)
                })
            }
        };
        self.pending_calls += 1;
        ctx.spawn(wrap_future(call).map(move |result, act: &mut Self, ctx| {
            act.pending_calls -= 1;
            act.on_applied(&id, rc, action, result);
            act.check_drained(ctx);
        }));
        // The slot is free once answered, as an NSQ RDY slot is once FIN is written.
        self.fill(ctx);
        self.check_drained(ctx);
    }

    /// Auto-extension: every `vt / 2` while the delivery is unanswered.
    pub(super) fn start_extender(
        &mut self,
        token: u64,
        ctx: &mut Context<Self>,
    ) -> Option<SpawnHandle> {
        let vt = self.vt?;
        if !self.settings.auto_extend {
            return None;
        }
        let every = Duration::from_secs(vt) / 2;
        Some(ctx.run_interval(every, move |act, ctx| act.extend(token, ctx)))
    }

    /// Extends a delivery's visibility by `vt` from now (a touch or an auto-extension).
    fn extend(&mut self, token: u64, ctx: &mut Context<Self>) {
        let (Some(entry), Some(vt)) = (self.in_flight.get(&token), self.vt) else {
            return;
        };
        let (rsmq, queue, id, rc) = (
            self.rsmq.clone(),
            self.queue.clone(),
            entry.id.clone(),
            entry.rc,
        );
        let call = {
            let id = id.clone();
            async move {
                rsmq.change_message_visibility_checked(&queue, &id, rc, Duration::from_secs(vt))
                    .await
                    .map(Applied::from)
            }
        };
        self.pending_calls += 1;
        ctx.spawn(wrap_future(call).map(move |result, act: &mut Self, ctx| {
            act.pending_calls -= 1;
            if let Ok(Applied::NotOwned { .. }) = result {
                // Lost it: extending further cannot help; the answer will be refused too.
                if let Some(extender) = act
                    .in_flight
                    .get_mut(&token)
                    .and_then(|e| e.extender.take())
                {
                    ctx.cancel_future(extender);
                }
            }
            act.on_applied(&id, rc, Action::Touch, result);
            act.check_drained(ctx);
        }));
    }

    fn on_applied(&mut self, id: &str, rc: u64, action: Action, result: Result<Applied>) {
        let counters = &self.counters;
        match result {
            Ok(Applied::Done) => {
                let counter = match action {
                    Action::Finish => &counters.finished,
                    Action::Requeue { .. } => &counters.requeued,
                    _ => &counters.extended,
                };
                counter.fetch_add(1, Relaxed);
            }
            Ok(Applied::NotOwned { gone }) => {
                counters.not_owned.fetch_add(1, Relaxed);
                tracing::warn!(queue = %self.queue, id, rc, ?action, gone, "rsmq answer too late: the message is no longer ours; nothing changed");
                self.emit(RsmqConsumerEvent::NotOwned {
                    id: id.to_owned(),
                    rc,
                    action,
                    gone,
                });
            }
            Err(error) => {
                tracing::warn!(queue = %self.queue, id, rc, ?action, %error, "rsmq answer failed; the message comes back after its vt");
                self.emit(RsmqConsumerEvent::AnswerFailed {
                    id: id.to_owned(),
                    action,
                    error,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_whole_seconds_within_rsmq_range() {
        let ms = Duration::from_millis;
        assert_eq!(whole_seconds_up(Duration::ZERO), Duration::ZERO);
        assert_eq!(whole_seconds_up(ms(1)), ms(1000));
        assert_eq!(whole_seconds_up(ms(1000)), ms(1000));
        assert_eq!(whole_seconds_up(ms(1500)), ms(2000));
        assert_eq!(
            whole_seconds_up(Duration::MAX),
            Duration::from_secs(validate::MAX_SECONDS)
        );
    }

    #[test]
    fn late_answers_map_to_not_owned() {
        assert!(matches!(
            Applied::from(DeleteOutcome::Deleted),
            Applied::Done
        ));
        assert!(matches!(
            Applied::from(DeleteOutcome::NotOwned),
            Applied::NotOwned { gone: false }
        ));
        assert!(matches!(
            Applied::from(VisibilityOutcome::NotFound),
            Applied::NotOwned { gone: true }
        ));
    }
}
