//! Receives connection events for a producer: keeps each connection's health, wakes publishes
//! waiting for a connection, and forwards the events to the user's recipient, if any.

use std::sync::{Arc, Mutex};

use actix::{Actor, Context, Handler, Recipient};
use tokio::sync::Notify;

use crate::{conn::ConnectionEvent, error::Error};

/// What a publish that finds no connection up needs to know about one connection.
#[derive(Debug, Clone, Default)]
pub(super) enum Health {
    /// The first attempt has not finished.
    #[default]
    Starting,
    /// The link is up.
    Up,
    /// The link was lost; the reconnect attempt has not finished. Publishes wait for it.
    Lost,
    /// The latest connection attempt failed (or the policy gave up): publishes fail at once
    /// with this error, naming the nsqd, rather than waiting out their timeout.
    Failed(Error),
}

/// The health of every connection, by connection id (its index in the producer).
pub(super) type Healths = Arc<Mutex<Vec<Health>>>;

pub(super) struct EventRelay {
    changed: Arc<Notify>,
    healths: Healths,
    last_error: Arc<Mutex<Option<Error>>>,
    forward: Option<Recipient<ConnectionEvent>>,
}

impl EventRelay {
    pub(super) fn new(
        changed: Arc<Notify>,
        healths: Healths,
        last_error: Arc<Mutex<Option<Error>>>,
        forward: Option<Recipient<ConnectionEvent>>,
    ) -> Self {
        Self {
            changed,
            healths,
            last_error,
            forward,
        }
    }

    fn set(&self, id: u64, health: Health) {
        let Ok(mut healths) = self.healths.lock() else {
            return;
        };
        if let Some(slot) = usize::try_from(id).ok().and_then(|i| healths.get_mut(i)) {
            *slot = health;
        }
    }

    fn health(&self, id: u64) -> Health {
        let healths = self.healths.lock().ok();
        let slot = usize::try_from(id).ok();
        healths
            .and_then(|h| slot.and_then(|i| h.get(i).cloned()))
            .unwrap_or_default()
    }
}

impl Actor for EventRelay {
    type Context = Context<Self>;
}

impl Handler<ConnectionEvent> for EventRelay {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent, _: &mut Context<Self>) {
        match &event {
            ConnectionEvent::Connected { id, .. } => {
                self.set(*id, Health::Up);
                self.changed.notify_waiters();
            }
            ConnectionEvent::Disconnected {
                id, addr, error, ..
            } => {
                let error = Error::Connect {
                    addr: addr.to_string(),
                    source: Box::new(error.clone()),
                };
                // Kept so that a publish that finds no connection can say why.
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(error.clone());
                }
                // A link that was up gets one reconnect attempt before publishes give up on it;
                // a failed attempt fails them at once (go-nsq's Publish, too, returns the
                // connect error as soon as the dial fails).
                let next = match self.health(*id) {
                    Health::Up => Health::Lost,
                    _ => Health::Failed(error),
                };
                self.set(*id, next);
                self.changed.notify_waiters();
            }
            // A lost link whose policy allows no reconnect: nothing left to wait for.
            ConnectionEvent::GaveUp { id, addr, attempts }
                if !matches!(self.health(*id), Health::Failed(_)) =>
            {
                let error = Error::Connect {
                    addr: addr.to_string(),
                    source: Box::new(Error::GaveUp {
                        addr: addr.to_string(),
                        attempts: *attempts,
                    }),
                };
                self.set(*id, Health::Failed(error));
                self.changed.notify_waiters();
            }
            _ => {}
        }
        if let Some(forward) = &self.forward {
            forward.do_send(event);
        }
    }
}
