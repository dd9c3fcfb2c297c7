//! Handler actors under the consumer's supervision.
//!
//! actix does not catch panics: an actor whose handler panics is gone, and so is everything in
//! its mailbox. The pool keeps one slot per handler actor. A slot started from a factory is
//! started again when its actor is found dead, within a restart budget; a slot holding a
//! `Recipient` the user started stays dead.
//!
//! What no handler saw never counts as an attempt. A delivery sent to an actor that dies comes
//! back as `MailboxError::Closed`; the delivery's own drop tells whether the actor's handler had
//! it (see `Revive`): the one it was handling when it panicked is a failed attempt, the ones
//! still queued in its mailbox are sent again to a live actor. While no actor is alive,
//! deliveries wait (touched so that nsqd keeps them) and the owner is told, so that it stops
//! taking messages until a handler is back.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use actix::{dev::RecipientRequest, MailboxError, Recipient};
use tokio::sync::watch;

use super::{Handled, HandlerEvent, RestartBudget};
use crate::delivery::{Delivery, Revive};

/// Starts one handler actor and returns its address.
pub(crate) type StartActor = Arc<dyn Fn() -> Recipient<Delivery> + Send + Sync>;

/// How often a delivery waiting for a live handler is touched. nsqd's default `msg_timeout`
/// is 60 s; touching at a third of the lowest timeout nsqd accepts (1 s) would be wasteful, at
/// a third of the default it keeps every common configuration alive.
const HOLD_TOUCH_EVERY: Duration = Duration::from_secs(20);

/// What a slot of the pool starts from.
#[derive(Clone)]
pub(crate) enum SlotSpec {
    /// An actor the user started: not restarted.
    Given(Recipient<Delivery>),
    /// Started (and restarted) by the pool.
    Factory(StartActor),
}

struct Slot {
    spec: SlotSpec,
    state: Mutex<SlotState>,
}

struct SlotState {
    recipient: Option<Recipient<Delivery>>,
    /// Shared with every delivery sent to this incarnation; a new incarnation gets a new one.
    incarnation: Arc<AtomicBool>,
    /// When this slot was restarted, within the budget's window.
    restarts: VecDeque<Instant>,
    /// A restart is scheduled for when the budget allows it again.
    retry_scheduled: bool,
}

/// The handler actors of one consumer.
pub(crate) struct ActorPool {
    slots: Vec<Slot>,
    next: AtomicUsize,
    budget: RestartBudget,
    events: OnceLock<Recipient<HandlerEvent>>,
    /// Bumped whenever a slot comes back, and when the pool closes: waiting deliveries retry.
    generation: watch::Sender<u64>,
    unavailable: AtomicBool,
    closed: AtomicBool,
}

impl ActorPool {
    /// Builds the pool and starts the factory slots' actors.
    pub(crate) fn start(specs: &[SlotSpec], budget: RestartBudget) -> Arc<Self> {
        let slots = specs
            .iter()
            .map(|spec| Slot {
                spec: spec.clone(),
                state: Mutex::new(SlotState {
                    recipient: Some(match spec {
                        SlotSpec::Given(recipient) => recipient.clone(),
                        SlotSpec::Factory(start) => start(),
                    }),
                    incarnation: Arc::default(),
                    restarts: VecDeque::new(),
                    retry_scheduled: false,
                }),
            })
            .collect();
        Arc::new(Self {
            slots,
            next: AtomicUsize::new(0),
            budget,
            events: OnceLock::new(),
            generation: watch::channel(0).0,
            unavailable: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// Where restarts and availability changes are reported (once; later calls are ignored).
    pub(crate) fn report_to(&self, events: Recipient<HandlerEvent>) {
        let _ = self.events.set(events);
    }

    /// The consumer is stopping: deliveries waiting for a handler are released at once.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
    }

    fn emit(&self, event: HandlerEvent) {
        if let Some(events) = self.events.get() {
            events.do_send(event);
        }
    }

    /// The next live actor, round robin, with its slot and incarnation. Dead factory slots are
    /// restarted on the way (within the budget).
    fn pick(self: &Arc<Self>) -> Option<(usize, Recipient<Delivery>, Arc<AtomicBool>)> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let index = (start + i) % n;
            let Ok(mut state) = self.slots[index].state.lock() else {
                continue;
            };
            if let Some(recipient) = &state.recipient {
                if recipient.connected() {
                    let picked = (index, recipient.clone(), state.incarnation.clone());
                    drop(state);
                    if self.unavailable.swap(false, Ordering::AcqRel) {
                        self.emit(HandlerEvent::Available);
                    }
                    return Some(picked);
                }
            }
            if let Some(picked) = self.restart(index, &mut state) {
                return Some(picked);
            }
        }
        if !self.unavailable.swap(true, Ordering::AcqRel) {
            tracing::error!(
                slots = n,
                "no handler actor is alive; holding deliveries until one is back"
            );
            self.emit(HandlerEvent::Unavailable);
        }
        None
    }

    /// The actor of `index` was seen dead: start its successor if it has a factory and the
    /// budget allows; otherwise leave the slot empty (and retry when the budget allows).
    fn restart(
        self: &Arc<Self>,
        index: usize,
        state: &mut SlotState,
    ) -> Option<(usize, Recipient<Delivery>, Arc<AtomicBool>)> {
        let was_alive = state.recipient.take().is_some();
        let SlotSpec::Factory(start) = &self.slots[index].spec else {
            if was_alive {
                tracing::error!(slot = index, "handler actor stopped; it has no factory");
                self.emit(HandlerEvent::Stopped { slot: index });
            }
            return None;
        };
        let now = Instant::now();
        while state
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.budget.within)
        {
            state.restarts.pop_front();
        }
        if state.restarts.len() >= self.budget.max_restarts as usize {
            let retry_in = state.restarts.front().map_or(self.budget.within, |t| {
                self.budget.within.saturating_sub(now.duration_since(*t))
            });
            if !state.retry_scheduled {
                state.retry_scheduled = true;
                tracing::error!(slot = index, ?retry_in, "handler restart budget used up");
                self.emit(HandlerEvent::RestartBudgetExhausted {
                    slot: index,
                    retry_in,
                });
                self.retry_later(index, retry_in);
            }
            return None;
        }
        state.restarts.push_back(now);
        state.retry_scheduled = false;
        let recipient = start();
        state.incarnation = Arc::default();
        state.recipient = Some(recipient.clone());
        let restarts = u32::try_from(state.restarts.len()).unwrap_or(u32::MAX);
        tracing::warn!(slot = index, restarts, "handler actor restarted");
        self.emit(HandlerEvent::Restarted {
            slot: index,
            restarts,
        });
        self.generation.send_modify(|g| *g += 1);
        Some((index, recipient, state.incarnation.clone()))
    }

    /// Wakes waiting deliveries once `index` may be restarted again.
    fn retry_later(self: &Arc<Self>, index: usize, after: Duration) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(pool) = pool.upgrade() {
                if let Ok(mut state) = pool.slots[index].state.lock() {
                    state.retry_scheduled = false;
                }
                pool.generation.send_modify(|g| *g += 1);
            }
        });
    }

    /// The incarnation `incarnation` of slot `index` died: restart it unless that was done.
    fn died(self: &Arc<Self>, index: usize, incarnation: &Arc<AtomicBool>) {
        let Ok(mut state) = self.slots[index].state.lock() else {
            return;
        };
        if Arc::ptr_eq(&state.incarnation, incarnation) {
            let _ = self.restart(index, &mut state);
        }
    }

    /// Sends `delivery` to a live actor, or waits for one.
    pub(crate) fn dispatch(self: &Arc<Self>, delivery: Delivery) -> ActorDispatch {
        let mut waiting = None;
        let picked = self.pick().or_else(|| {
            // Subscribe first, then look again: a restart in between is not missed.
            waiting = Some(Waiting::new(self));
            self.pick()
        });
        let (step, revive) = match picked {
            Some((slot, recipient, incarnation)) => {
                let (delivery, revive) = Revive::bind(delivery, incarnation.clone());
                let request = Box::pin(recipient.send(delivery));
                let step = Step::Sending {
                    request,
                    slot,
                    incarnation,
                };
                (step, revive)
            }
            None => {
                // Sent nowhere: the revive handle keeps the message while it waits.
                let (delivery, revive) = Revive::bind(delivery, Arc::default());
                drop(delivery);
                let waiting = waiting.unwrap_or_else(|| Waiting::new(self));
                (Step::Waiting(waiting), revive)
            }
        };
        ActorDispatch {
            pool: self.clone(),
            revive,
            step,
        }
    }
}

/// A delivery on its way to a handler actor.
pub(crate) struct ActorDispatch {
    pool: Arc<ActorPool>,
    revive: Revive,
    step: Step,
}

enum Step {
    Sending {
        // actix's request is !Unpin; boxing keeps the dispatch Unpin.
        request: Pin<Box<RecipientRequest<Delivery>>>,
        slot: usize,
        incarnation: Arc<AtomicBool>,
    },
    Waiting(Waiting),
}

/// Waiting for a live handler, touching the message so that nsqd keeps it meanwhile.
struct Waiting {
    changed: Pin<Box<dyn Future<Output = ()> + Send>>,
    touch: Pin<Box<tokio::time::Sleep>>,
}

impl Waiting {
    /// Subscribes before the caller looks for a live actor, so no restart is missed.
    fn new(pool: &ActorPool) -> Self {
        let mut rx = pool.generation.subscribe();
        Self {
            changed: Box::pin(async move {
                let _ = rx.changed().await;
            }),
            touch: Box::pin(tokio::time::sleep(HOLD_TOUCH_EVERY)),
        }
    }
}

impl Future for ActorDispatch {
    type Output = Handled;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Handled> {
        let this = &mut *self;
        loop {
            match &mut this.step {
                Step::Sending {
                    request,
                    slot,
                    incarnation,
                } => {
                    let error = match ready!(request.as_mut().poll(cx)) {
                        Ok(result) => return Poll::Ready(Handled::Returned(result)),
                        Err(MailboxError::Closed | MailboxError::Timeout) => {
                            this.pool.died(*slot, incarnation);
                            "handler actor stopped while handling the message"
                        }
                    };
                    if this.revive.was_seen() {
                        return Poll::Ready(Handled::Panicked(error.to_owned()));
                    }
                    let waiting = Waiting::new(&this.pool);
                    this.step = Step::Waiting(waiting);
                }
                Step::Waiting(waiting) => {
                    if this.pool.closed.load(Ordering::Acquire) {
                        return Poll::Ready(Handled::Gone);
                    }
                    if let Some((slot, recipient, incarnation)) = this.pool.pick() {
                        let Some(delivery) = this.revive.revive() else {
                            return Poll::Ready(Handled::Gone);
                        };
                        let (delivery, revive) = Revive::bind(delivery, incarnation.clone());
                        this.revive = revive;
                        this.step = Step::Sending {
                            request: Box::pin(recipient.send(delivery)),
                            slot,
                            incarnation,
                        };
                        continue;
                    }
                    if waiting.touch.as_mut().poll(cx).is_ready() {
                        let _ = this.revive.touch();
                        let next = tokio::time::Instant::now() + HOLD_TOUCH_EVERY;
                        waiting.touch.as_mut().reset(next);
                        let _ = waiting.touch.as_mut().poll(cx);
                    }
                    ready!(waiting.changed.as_mut().poll(cx));
                    waiting.changed = Waiting::new(&this.pool).changed;
                }
            }
        }
    }
}
