//! The consumer's side of handler supervision: report what happened to the handlers, and
//! take no messages while none is alive.

use actix::{Context, Handler};

use super::{actor::ConsumerActor, events::ConsumerEvent};
use crate::{
    events::{Subscribe, Unsubscribe},
    handler::HandlerEvent,
};

impl Handler<HandlerEvent> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, event: HandlerEvent, _: &mut Context<Self>) {
        match event {
            // RDY 0 on every link while no handler can take a message; max_in_flight and the
            // backoff state are left as they are and apply again once a handler is back.
            HandlerEvent::Unavailable | HandlerEvent::Available => {
                self.set_handlers_available(event == HandlerEvent::Available);
            }
            _ => {}
        }
        self.emit(ConsumerEvent::Handler(event));
    }
}

impl Handler<Subscribe<ConsumerEvent>> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, subscribe: Subscribe<ConsumerEvent>, _: &mut Context<Self>) {
        self.listeners
            .add(subscribe.id, subscribe.recipient, subscribe.interest);
    }
}

impl Handler<Unsubscribe> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, Unsubscribe(id): Unsubscribe, _: &mut Context<Self>) {
        self.listeners.unsubscribe(id);
    }
}
