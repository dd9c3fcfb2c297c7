//! The consumer's side of handler supervision: report what happened to the handlers, and
//! take no messages while none is alive.

use actix::{Context, Handler};

use super::{actor::ConsumerActor, events::ConsumerEvent};
use crate::handler::HandlerEvent;

impl Handler<HandlerEvent> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, event: HandlerEvent, _: &mut Context<Self>) {
        match event {
            HandlerEvent::Unavailable => self.handlers_available(false),
            HandlerEvent::Available => self.handlers_available(true),
            _ => {}
        }
        self.emit(ConsumerEvent::Handler(event));
    }
}
