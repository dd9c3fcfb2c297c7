//! A connection's life: connect, handshake, link up, link lost, reconnect or give up.

use std::{sync::atomic::Ordering::Relaxed, time::Duration};

use actix::{fut::wrap_future, ActorContext, ActorFutureExt, AsyncContext, Context};
use tokio_util::codec::FramedRead;

use super::{
    responder::NsqResponder, writer::Writer, ConnectionEvent, ForgetLink, Link, NsqdConnection,
    Phase, Waiter, READ_CAPACITY,
};
use crate::{
    error::Error,
    protocol::NsqCodec,
    transport::{self, Established},
};

impl NsqdConnection {
    pub(super) fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Connecting {
            return;
        }
        let subscribe = self
            .subscription
            .as_ref()
            .map(|s| (s.topic.clone(), s.channel.clone()));
        let handshake = self.config.handshake(subscribe);
        let addr = self.addr.clone();
        tracing::debug!(nsqd = %self.addr, conn = self.id, "connecting");
        let fut = wrap_future(async move { transport::connect(&addr, &handshake).await });
        ctx.spawn(fut.map(|result, act: &mut Self, ctx| match result {
            Ok(established) => act.on_established(established, ctx),
            Err(error) => act.on_connect_failed(error, ctx),
        }));
    }

    pub(super) fn on_established(&mut self, established: Established, ctx: &mut Context<Self>) {
        if self.phase != Phase::Connecting {
            return; // closed while handshaking
        }
        let Established {
            stream,
            read_buf,
            negotiated,
        } = established;
        let (read, write) = tokio::io::split(stream);
        let codec =
            NsqCodec::new(self.config.max_frame_len).with_limits(self.config.publish_limits);
        let mut frames = FramedRead::with_capacity(read, codec.clone(), READ_CAPACITY);
        frames.read_buffer_mut().extend_from_slice(&read_buf);
        ctx.add_stream(frames);
        // The context polls its items in order. Answers are polled right after frames and the
        // writer right after answers, so a message read, handled synchronously, and finished
        // leaves as a FIN in the same pass (the actor-wide answers stream from started() stays
        // for the time the link is down).
        let answers = self.answers.clone();
        ctx.add_stream(futures_util::stream::poll_fn(move |cx| {
            answers.borrow_mut().poll_recv(cx)
        }));
        self.link_gen += 1;
        let responder =
            NsqResponder::new(self.answers_tx.clone(), self.addr.clone(), self.link_gen);
        let writer = Writer::start::<Self, _>(write, codec, ctx);
        let max_rdy = u32::try_from(negotiated.identify.max_rdy_count).unwrap_or(u32::MAX);
        let now = std::time::Instant::now();
        let heartbeat = self.config.heartbeat();
        self.link = Some(Link {
            writer,
            max_rdy,
            rdy: 0,
            in_flight: 0,
            last_frame: now,
            connected_at: now,
            heartbeat,
            responder,
            close_wait_seen: false,
            flow_link: None,
            gen: self.link_gen,
            msg_timeout: Duration::from_millis(
                u64::try_from(negotiated.identify.msg_timeout).unwrap_or(60_000),
            ),
        });
        self.phase = Phase::Connected;
        self.counters.connected.store(true, Relaxed);
        self.counters.max_rdy.store(max_rdy, Relaxed);
        if let Some(interval) = heartbeat {
            // nsqd drops a client after 2 × heartbeat of silence; we do the same to nsqd, so a
            // half-open link (peer gone without FIN/RST) cannot hang the consumer.
            ctx.run_interval(interval / 2, |act, ctx| act.check_liveness(ctx));
        }
        if let Some(subscription) = &self.subscription {
            let (link_id, rdy) = subscription.flow.connected(ctx.address(), max_rdy);
            if let Some(link) = &mut self.link {
                link.flow_link = Some(link_id);
            }
            if let Some(count) = rdy {
                self.set_rdy(count, ctx);
            }
        }
        tracing::info!(nsqd = %self.addr, conn = self.id, tls = negotiated.tls,
            compression = ?negotiated.compression, max_rdy, "connected");
        self.emit(ConnectionEvent::Connected {
            id: self.id,
            addr: self.addr.clone(),
            negotiated: Box::new(negotiated),
        });
    }

    pub(super) fn on_connect_failed(&mut self, error: Error, ctx: &mut Context<Self>) {
        tracing::warn!(nsqd = %self.addr, conn = self.id, %error, "connect failed");
        self.emit(ConnectionEvent::Disconnected {
            id: self.id,
            addr: self.addr.clone(),
            error,
            lost_in_flight: 0,
        });
        self.schedule_reconnect(ctx);
    }

    /// Picks the next delay and reconnects after it, or gives up.
    pub(super) fn schedule_reconnect(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Connecting {
            return;
        }
        match self.reconnect.next_delay(&mut rand::rng()) {
            Some(delay) => {
                self.emit(ConnectionEvent::Reconnecting {
                    id: self.id,
                    addr: self.addr.clone(),
                    attempt: self.reconnect.attempts(),
                    delay,
                });
                ctx.run_later(delay, |act, ctx| act.connect(ctx));
            }
            None => self.give_up(),
        }
    }

    /// Drops the link because of `error`; the supervisor restarts the actor.
    pub(super) fn drop_link(&mut self, error: Error, ctx: &mut Context<Self>) {
        let Some(link) = self.link.take() else { return };
        let lost_in_flight = link.in_flight;
        self.release_link(&link, ctx);
        if self.phase == Phase::Closing {
            // nsqd closed on us while we drained; treat as closed.
            self.finish_close(lost_in_flight, ctx);
            return;
        }
        tracing::warn!(nsqd = %self.addr, conn = self.id, %error, lost_in_flight, "connection lost");
        self.fail_waiters(&error);
        // A link that stayed up for a while resets the backoff: this is a new failure episode.
        self.reconnect.connection_ended(link.connected_at.elapsed());
        self.emit(ConnectionEvent::Disconnected {
            id: self.id,
            addr: self.addr.clone(),
            error,
            lost_in_flight,
        });
        self.counters.reconnects.fetch_add(1, Relaxed);
        self.counters.connected.store(false, Relaxed);
        self.phase = Phase::Connecting;
        match self.reconnect.next_delay(&mut rand::rng()) {
            Some(delay) => {
                self.next_delay = delay;
                self.emit(ConnectionEvent::Reconnecting {
                    id: self.id,
                    addr: self.addr.clone(),
                    attempt: self.reconnect.attempts(),
                    delay,
                });
            }
            None => self.give_up(),
        }
        // The supervisor restarts the actor; started() reconnects after next_delay.
        ctx.stop();
    }

    pub(super) fn give_up(&mut self) {
        let attempts = self.reconnect.attempts();
        tracing::error!(nsqd = %self.addr, conn = self.id, attempts, "giving up reconnecting");
        self.phase = Phase::GaveUp;
        self.emit(ConnectionEvent::GaveUp {
            id: self.id,
            addr: self.addr.clone(),
            attempts,
        });
    }

    /// The link is gone: answers for its messages now fail with `ConnectionLost`. Its
    /// in-flight messages keep their flow-control slots while their handlers still run, so a
    /// reconnected link cannot push the number being handled past `max_in_flight`; nsqd
    /// requeues them after `msg_timeout`, and then the slots are released whatever the
    /// handlers do.
    pub(super) fn release_link(&mut self, link: &Link, ctx: &mut Context<Self>) {
        link.responder.kill();
        let (Some(subscription), Some(flow_link)) = (&self.subscription, link.flow_link) else {
            return;
        };
        if link.in_flight == 0 {
            subscription.flow.disconnected(flow_link);
            return;
        }
        subscription.flow.lost(flow_link);
        self.lost_links.insert(link.gen, flow_link);
        let (gen, forget_after) = (link.gen, link.msg_timeout + Duration::from_secs(1));
        let addr = ctx.address();
        // Not a context timer: those die with the context when the supervisor restarts it.
        actix_rt::spawn(async move {
            actix_rt::time::sleep(forget_after).await;
            addr.do_send(ForgetLink(gen));
        });
    }

    pub(super) fn fail_waiters(&mut self, error: &Error) {
        let addr = self.addr.to_string();
        for waiter in self.waiters.drain(..) {
            if let Waiter::Publish(tx) = waiter {
                // Written but unanswered: nsqd may or may not have the message.
                let _ = tx.send(Err(match error {
                    Error::Stopped => Error::Stopped,
                    _ => Error::OutcomeUnknown { addr: addr.clone() },
                }));
            }
        }
    }

    pub(super) fn check_liveness(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else { return };
        let Some(interval) = link.heartbeat else {
            return;
        };
        if link.last_frame.elapsed() > interval * 2 {
            self.drop_link(
                Error::Timeout("no frame from nsqd within two heartbeat intervals"),
                ctx,
            );
        }
    }
}
