//! Receives connection events for a producer: wakes publishes waiting for a connection and
//! forwards the events to the user's recipient, if any.

use std::sync::{Arc, Mutex};

use actix::{Actor, Context, Handler, Recipient};
use tokio::sync::Notify;

use crate::{conn::ConnectionEvent, error::Error};

pub(super) struct EventRelay {
    connected: Arc<Notify>,
    last_error: Arc<Mutex<Option<Error>>>,
    forward: Option<Recipient<ConnectionEvent>>,
}

impl EventRelay {
    pub(super) fn new(
        connected: Arc<Notify>,
        last_error: Arc<Mutex<Option<Error>>>,
        forward: Option<Recipient<ConnectionEvent>>,
    ) -> Self {
        Self {
            connected,
            last_error,
            forward,
        }
    }
}

impl Actor for EventRelay {
    type Context = Context<Self>;
}

impl Handler<ConnectionEvent> for EventRelay {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent, _: &mut Context<Self>) {
        match &event {
            ConnectionEvent::Connected { .. } => self.connected.notify_waiters(),
            // Kept so that a publish that finds no connection can say why.
            ConnectionEvent::Disconnected { error, .. } => {
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(error.clone());
                }
            }
            _ => {}
        }
        if let Some(forward) = &self.forward {
            forward.do_send(event);
        }
    }
}
