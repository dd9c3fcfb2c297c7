//! A connection's life: connect, handshake, link up, link lost, reconnect or give up.
//!
//! There is one way back after a failure: a failed connect and a lost link both end in
//! [`schedule_reconnect`](NsqdConnection::schedule_reconnect), in the same context.

use std::{
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use actix::{fut::wrap_future, ActorFutureExt, AsyncContext, Context};
use tokio_util::codec::FramedRead;

use super::{
    driver::LinkDriver, next_link_id, responder::NsqResponder, writer::Writer, ConnectionEvent,
    Link, LostLink, NsqdConnection, Phase, Waiter, READ_CAPACITY,
};
use crate::{
    error::Error,
    protocol::NsqCodec,
    rdy::LinkId,
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
        let (writer, write_half) = Writer::new(write, codec);
        let id = next_link_id();
        let driver = ctx.spawn(LinkDriver::new(id, frames, write_half));
        let heartbeat = self.config.heartbeat();
        // nsqd drops a client after 2 × heartbeat of silence; we do the same to nsqd, so a
        // half-open link (peer gone without FIN/RST) cannot hang the consumer.
        let liveness = heartbeat
            .map(|interval| ctx.run_interval(interval / 2, |act, ctx| act.check_liveness(ctx)));
        let responder = NsqResponder::new(self.answers_tx.clone(), self.addr.clone(), id);
        let max_rdy = u32::try_from(negotiated.identify.max_rdy_count).unwrap_or(u32::MAX);
        let now = Instant::now();
        self.link = Some(Link {
            id,
            writer,
            driver,
            liveness,
            max_rdy,
            rdy: 0,
            rdy_ceiling: 0,
            in_flight: 0,
            last_frame: now,
            connected_at: now,
            heartbeat,
            responder,
            close_wait_seen: false,
            in_flow: self.subscription.is_some(),
            msg_timeout: Duration::from_millis(
                u64::try_from(negotiated.identify.msg_timeout).unwrap_or(60_000),
            ),
        });
        self.phase = Phase::Connected;
        self.counters.connected.store(true, Relaxed);
        self.counters.max_rdy.store(max_rdy, Relaxed);
        if let Some(subscription) = &self.subscription {
            let rdy = subscription
                .flow
                .connected(id, ctx.address().recipient(), max_rdy);
            if let Some(count) = rdy {
                self.set_rdy(count, ctx);
            }
        }
        tracing::info!(nsqd = %self.addr, conn = self.id, tls = negotiated.tls,
            compression = ?negotiated.compression, max_rdy, "connected");
        // The handshake's results, in the order nsqd sent them (IDENTIFY, then AUTH).
        self.tap_connection(|| ConnectionEvent::Identified {
            id: self.id,
            addr: self.addr.clone(),
            identify: Box::new(negotiated.identify.clone()),
        });
        if let Some(auth) = &negotiated.auth {
            self.tap_connection(|| ConnectionEvent::Authenticated {
                id: self.id,
                addr: self.addr.clone(),
                auth: Box::new(auth.clone()),
            });
        }
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

    /// The one way back: picks the next delay and reconnects after it, or gives up. Called
    /// after a failed connect and after a lost link alike.
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

    /// Drops the link because of `error`, then reconnects (or gives up) like after a failed
    /// connect. The actor keeps running: handler futures, answers and lost links carry on.
    pub(super) fn drop_link(&mut self, error: Error, ctx: &mut Context<Self>) {
        let Some(link) = self.link.take() else { return };
        let lost_in_flight = link.in_flight;
        let lasted = link.connected_at.elapsed();
        self.release_link(link, ctx);
        match self.phase {
            // nsqd closed on us while we drained; treat as closed.
            Phase::Closing => return self.finish_close(lost_in_flight, ctx),
            // Closed already; the link was only kept to flush the last FINs.
            Phase::Closed => return self.closed(ctx),
            Phase::Connected | Phase::Connecting | Phase::GaveUp => {}
        }
        tracing::warn!(nsqd = %self.addr, conn = self.id, %error, lost_in_flight, "connection lost");
        self.fail_waiters(&error);
        // A link that stayed up for a while resets the backoff: this is a new failure episode.
        self.reconnect.connection_ended(lasted);
        self.emit(ConnectionEvent::Disconnected {
            id: self.id,
            addr: self.addr.clone(),
            error,
            lost_in_flight,
        });
        self.counters.reconnects.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        crate::metrics::link_lost(self.subscription.as_ref(), &self.addr);
        self.counters.connected.store(false, Relaxed);
        self.counters.rdy.store(0, Relaxed);
        self.counters.in_flight.store(0, Relaxed);
        self.phase = Phase::Connecting;
        self.schedule_reconnect(ctx);
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

    /// The link is gone: its driver and liveness check are cancelled, and it leaves the flow.
    pub(super) fn release_link(&mut self, mut link: Link, ctx: &mut Context<Self>) {
        ctx.cancel_future(link.driver);
        if let Some(liveness) = link.liveness {
            ctx.cancel_future(liveness);
        }
        self.leave_flow(&mut link, ctx);
    }

    /// Answers for the link's messages now fail with `ConnectionLost`. Its in-flight messages
    /// keep their flow-control slots while their handlers still run, so a reconnected link
    /// cannot push the number being handled past `max_in_flight`; nsqd requeues them after
    /// `msg_timeout`, and then the slots are released whatever the handlers do.
    pub(super) fn leave_flow(&mut self, link: &mut Link, ctx: &mut Context<Self>) {
        link.responder.kill();
        if !std::mem::take(&mut link.in_flow) {
            return;
        }
        let Some(subscription) = &self.subscription else {
            return;
        };
        if link.in_flight == 0 {
            subscription.flow.disconnected(link.id);
            return;
        }
        subscription.flow.lost(link.id);
        let after = link.msg_timeout + Duration::from_secs(1);
        self.arm_forget(link.id, link.in_flight, after, ctx);
    }

    /// Releases the slots of lost link `id`, with `in_flight` messages unanswered, after
    /// `after`.
    pub(super) fn arm_forget(
        &mut self,
        id: LinkId,
        in_flight: u32,
        after: Duration,
        ctx: &mut Context<Self>,
    ) {
        let timer = ctx.run_later(after, move |act, _| act.forget_link(id));
        self.lost_links.insert(
            id,
            LostLink {
                in_flight,
                forget_at: Instant::now() + after,
                timer,
            },
        );
    }

    /// A lost link's `msg_timeout` has passed: nsqd has requeued whatever it still had in
    /// flight, so its flow-control slots are released even if its handlers never answer.
    fn forget_link(&mut self, id: LinkId) {
        if let (Some(_), Some(subscription)) = (self.lost_links.remove(&id), &self.subscription) {
            subscription.flow.disconnected(id);
        }
    }

    /// A message of lost link `id` was answered: too late for nsqd, but its slot is free.
    pub(super) fn lost_answered(&mut self, id: LinkId, ctx: &mut Context<Self>) {
        let Some(lost) = self.lost_links.get_mut(&id) else {
            return;
        };
        lost.in_flight = lost.in_flight.saturating_sub(1);
        if lost.in_flight == 0 {
            // The policy forgot the link with its last slot (RdyPolicy::message_done).
            if let Some(lost) = self.lost_links.remove(&id) {
                ctx.cancel_future(lost.timer);
            }
        }
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
