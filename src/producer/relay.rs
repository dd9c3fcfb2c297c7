//! Receives connection events for a producer: wakes publishes waiting for a connection and
//! forwards the events to the user's recipient, if any.

use std::sync::Arc;

use actix::{Actor, Context, Handler, Recipient};
use tokio::sync::Notify;

use crate::conn::ConnectionEvent;

pub(super) struct EventRelay {
    connected: Arc<Notify>,
    forward: Option<Recipient<ConnectionEvent>>,
}

impl EventRelay {
    pub(super) fn new(connected: Arc<Notify>, forward: Option<Recipient<ConnectionEvent>>) -> Self {
        Self { connected, forward }
    }
}

impl Actor for EventRelay {
    type Context = Context<Self>;
}

impl Handler<ConnectionEvent> for EventRelay {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent, _: &mut Context<Self>) {
        if matches!(event, ConnectionEvent::Connected { .. }) {
            self.connected.notify_waiters();
        }
        if let Some(forward) = &self.forward {
            forward.do_send(event);
        }
    }
}
