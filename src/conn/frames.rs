//! What arrives on a connection: frames from nsqd, and answers from deliveries.

use std::sync::atomic::Ordering::Relaxed;

use actix::Context;

use super::{
    handling::Settling, responder::Answer, tap_message, ConnectionEvent, NsqdConnection, Phase,
    Waiter,
};
use crate::{
    delivery::{Action, Delivery, DeliveryId, Meta},
    error::{Error, ProtocolError},
    events::MessageEvent,
    handler::{Dispatch, Handled},
    protocol::{Command, Frame, Message, Response, ServerError},
    rdy::Outcome,
};

impl NsqdConnection {
    pub(super) fn on_frame(&mut self, frame: Result<Frame, Error>, ctx: &mut Context<Self>) {
        let Some(link) = &mut self.link else { return };
        link.last_frame = std::time::Instant::now();
        match frame {
            Ok(Frame::Message(message)) => self.on_message(message, ctx),
            Ok(Frame::Response(response)) => self.on_response(response, ctx),
            Ok(Frame::Error(error)) => self.on_error_frame(error, ctx),
            Err(error) => self.drop_link(error, ctx),
        }
    }

    pub(super) fn on_eof(&mut self, ctx: &mut Context<Self>) {
        let error = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "nsqd closed the connection",
        );
        self.drop_link(error.into(), ctx);
    }

    fn on_response(&mut self, response: Response, ctx: &mut Context<Self>) {
        match response {
            // Any command answers a heartbeat; NOP is the convention. The writer flushes it at
            // once (a NOP stuck behind a timer would get us dropped: go-nsq PR #348).
            Response::Heartbeat => {
                let _ = self.write(&Command::Nop, ctx);
                self.tap_connection(|| ConnectionEvent::Heartbeat {
                    id: self.id,
                    addr: self.addr.clone(),
                });
            }
            Response::Ok => match self.waiters.pop_front() {
                Some(Waiter::Publish(tx)) => {
                    self.tap_connection(|| ConnectionEvent::Response {
                        id: self.id,
                        addr: self.addr.clone(),
                        response: "OK",
                    });
                    let _ = tx.send(Ok(()));
                    self.maybe_finish_close(ctx);
                }
                other => self.unexpected(other, "OK", ctx),
            },
            Response::CloseWait => match self.waiters.pop_front() {
                Some(Waiter::CloseWait) => {
                    self.tap_connection(|| ConnectionEvent::Response {
                        id: self.id,
                        addr: self.addr.clone(),
                        response: "CLOSE_WAIT",
                    });
                    if let Some(link) = &mut self.link {
                        link.close_wait_seen = true;
                    }
                    self.maybe_finish_close(ctx);
                }
                other => self.unexpected(other, "CLOSE_WAIT", ctx),
            },
            Response::Data(data) => {
                let text = String::from_utf8_lossy(&data).into_owned();
                self.unexpected(None, &text, ctx);
            }
        }
    }

    /// A response nobody was waiting for: our view of the stream is out of step with nsqd's,
    /// so no later response can be trusted to belong to its waiter. Reset the link.
    fn unexpected(&mut self, waiter: Option<Waiter>, what: &str, ctx: &mut Context<Self>) {
        if let Some(waiter) = waiter {
            self.waiters.push_front(waiter);
        }
        self.drop_link(
            ProtocolError::UnexpectedResponse(what.to_owned()).into(),
            ctx,
        );
    }

    fn on_error_frame(&mut self, error: ServerError, ctx: &mut Context<Self>) {
        if !error.is_fatal() {
            // E_FIN_FAILED / E_REQ_FAILED / E_TOUCH_FAILED: usually the message timed out and
            // was redelivered. Report it; the connection stays up.
            tracing::warn!(nsqd = %self.addr, conn = self.id, code = %error.code, message = %error.message, "nsqd error");
            self.emit(ConnectionEvent::ServerError {
                id: self.id,
                addr: self.addr.clone(),
                error: Error::Server(error),
            });
            return;
        }
        // A fatal error answers the oldest pending command (nsqd answers in order), then nsqd
        // closes the connection.
        let error = Error::Server(error);
        match self.waiters.pop_front() {
            Some(Waiter::Publish(tx)) => {
                let _ = tx.send(Err(error.clone()));
            }
            Some(Waiter::CloseWait) | None => {}
        }
        self.drop_link(error, ctx);
    }

    fn on_message(&mut self, message: Message, ctx: &mut Context<Self>) {
        let (Some(subscription), Some(link)) = (&self.subscription, &mut self.link) else {
            let error = ProtocolError::UnexpectedResponse(
                "message on a connection that did not SUB".into(),
            );
            self.drop_link(error.into(), ctx);
            return;
        };
        if link.in_flight >= link.rdy_ceiling {
            // nsqd sends only while the client's in-flight count is below its RDY
            // (nsqd/client_v2.go IsReadyForMessages; protocol_v2.go messagePump waits on
            // it), and applies a RDY when it reads it, so until then a lowered RDY may still
            // let earlier sends through: the highest RDY sent on this link is the bound an
            // honest nsqd never crosses. A message past it is a protocol violation. We reset
            // the link rather than REQ it: a server that ignores RDY would otherwise make us
            // read, and write a REQ for, an unbounded stream (and REQ counts an attempt); on
            // the reset nsqd keeps the message and redelivers it after msg_timeout. Above
            // all, it never reaches a handler, so handlers stay within max_in_flight.
            let error = ProtocolError::UnexpectedResponse(format!(
                "message beyond RDY: {} in flight, RDY {}",
                link.in_flight, link.rdy_ceiling
            ));
            self.drop_link(error.into(), ctx);
            return;
        }
        link.in_flight += 1;
        self.counters.in_flight.store(link.in_flight, Relaxed);
        self.counters.received.fetch_add(1, Relaxed);
        let rdy = if link.in_flow {
            subscription.flow.received(link.id)
        } else {
            None
        };
        let attempts = u32::from(message.attempts);
        let (conn, id) = (self.id, message.id);
        tap_message(&self.tap, || MessageEvent::Received {
            conn,
            addr: self.addr.clone(),
            id,
            attempts,
            body: message.body.clone(),
        });
        let give_up = subscription.gives_up_on(attempts);
        let responder = link.responder.clone();
        let source = self.addr.clone();
        let make = |body| {
            let meta = Meta {
                id: DeliveryId::Nsq(id),
                body,
                attempts,
                timestamp_nanos: message.timestamp,
                source,
            };
            Delivery::new(meta, responder)
        };
        let (dispatch, watch, give_up) = if give_up {
            tap_message(&self.tap, || MessageEvent::GivingUp {
                conn,
                addr: self.addr.clone(),
                id,
                attempts,
            });
            let (delivery, watch) = make(message.body);
            (subscription.give_up.dispatch(delivery), watch, true)
        } else {
            match subscription.hooks.prepare(message.body, make) {
                (delivery, watch, None) => (subscription.handler.dispatch(delivery), watch, false),
                (delivery, watch, Some(reason)) => {
                    // The handler never sees it (pynsq validate_method): finished, or handed to
                    // the give-up hook, as configured.
                    let to_give_up = subscription.hooks.give_up_rejected;
                    tracing::debug!(id = %id, %reason, to_give_up, "message rejected before the handler");
                    tap_message(&self.tap, || MessageEvent::Rejected {
                        conn,
                        addr: self.addr.clone(),
                        id,
                        reason,
                        given_up: to_give_up,
                    });
                    if to_give_up {
                        (subscription.give_up.dispatch(delivery), watch, true)
                    } else {
                        drop(delivery);
                        (
                            Dispatch::Done(Some(Handled::Returned(Ok(())))),
                            watch,
                            false,
                        )
                    }
                }
            }
        };
        self.handling.run(Settling {
            dispatch,
            watch: Some(watch),
            give_up,
            failures: self.failures.clone(),
            #[cfg(feature = "metrics")]
            timer: self
                .metrics
                .as_ref()
                .map(crate::metrics::HandlerMetrics::start),
        });
        if let Some(count) = rdy {
            self.set_rdy(count, ctx);
        }
    }

    pub(super) fn on_answer(&mut self, answer: Answer, ctx: &mut Context<Self>) {
        let Some(subscription) = &self.subscription else {
            return;
        };
        if !self.is_current(answer.link) {
            // An answer for a lost link: nsqd will not hear it, but its slot is free now.
            if answer.action != Action::Touch && self.lost_links.contains_key(&answer.link) {
                let _ = subscription
                    .flow
                    .done(answer.link, outcome_of(answer.action));
                self.lost_answered(answer.link, ctx);
            }
            return;
        }
        let Some(link) = &mut self.link else { return };
        let (command, outcome) = match answer.action {
            Action::Finish => (Command::Fin(answer.id), Outcome::Finished),
            Action::Requeue { delay, backoff } => {
                let delay = subscription.requeue_delay(delay, answer.attempts);
                (
                    Command::Req {
                        id: answer.id,
                        delay,
                    },
                    Outcome::Requeued { backoff },
                )
            }
            Action::Touch => {
                self.counters.touched.fetch_add(1, Relaxed);
                if self.write(&Command::Touch(answer.id), ctx).is_ok() {
                    let (conn, id) = (self.id, answer.id);
                    tap_message(&self.tap, || MessageEvent::Touched {
                        conn,
                        addr: self.addr.clone(),
                        id,
                    });
                }
                return;
            }
        };
        link.in_flight = link.in_flight.saturating_sub(1);
        self.counters.in_flight.store(link.in_flight, Relaxed);
        match outcome {
            Outcome::Finished => self.counters.finished.fetch_add(1, Relaxed),
            Outcome::Requeued { .. } => self.counters.requeued.fetch_add(1, Relaxed),
        };
        // Ask the flow policy first and write its RDY change before the FIN/REQ (nsq#404).
        let rdy = if link.in_flow {
            subscription.flow.done(link.id, outcome)
        } else {
            None
        };
        if let Some(count) = rdy {
            self.set_rdy(count, ctx);
        }
        if self.write(&command, ctx).is_err() {
            return; // the link is gone; nsqd redelivers after msg_timeout
        }
        let conn = self.id;
        tap_message(&self.tap, || match command {
            Command::Req { id, delay } => MessageEvent::Requeued {
                conn,
                addr: self.addr.clone(),
                id,
                delay,
                backoff: matches!(outcome, Outcome::Requeued { backoff: true }),
            },
            _ => MessageEvent::Finished {
                conn,
                addr: self.addr.clone(),
                id: answer.id,
            },
        });
        if self.phase == Phase::Closing {
            self.maybe_finish_close(ctx);
        }
    }
}

fn outcome_of(action: Action) -> Outcome {
    match action {
        Action::Requeue { backoff, .. } => Outcome::Requeued { backoff },
        Action::Finish | Action::Touch => Outcome::Finished,
    }
}
