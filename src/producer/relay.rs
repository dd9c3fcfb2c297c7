//! Receives connection events for a producer: keeps each connection's health, wakes publishes
//! waiting for a connection, and forwards the events to the user's recipient, if any.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix::{fut::wrap_future, Actor, Addr, AsyncContext, Context, Handler, Message, Recipient};
use tokio::sync::{oneshot, Notify};

use super::limits::{self, ServerLimits};
use crate::{
    conn::{Close, ConnectionEvent, NsqdConnection},
    error::Error,
    events::{Interest, Listeners, Subscribe, Unsubscribe},
};

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
    /// The producer's listeners.
    forward: Listeners<ConnectionEvent>,
    /// Per connection id: the nsqd's HTTP address, if known, and its limits to update.
    learn_from: HashMap<u64, (Option<String>, Arc<ServerLimits>)>,
}

/// A new connection (sent before it starts): where to learn its limits from.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct Track {
    pub(super) id: u64,
    pub(super) http: Option<String>,
    pub(super) limits: Arc<ServerLimits>,
}

impl EventRelay {
    pub(super) fn new(
        changed: Arc<Notify>,
        healths: Healths,
        last_error: Arc<Mutex<Option<Error>>>,
        listeners: Vec<Recipient<ConnectionEvent>>,
    ) -> Self {
        let forward = Listeners::default();
        for recipient in listeners {
            forward.subscribe(recipient, Interest::Lifecycle);
        }
        Self {
            changed,
            healths,
            last_error,
            forward,
            learn_from: HashMap::new(),
        }
    }

    /// The listeners, for the connections to send what they observe straight to them.
    pub(super) fn listeners(&self) -> Listeners<ConnectionEvent> {
        self.forward.clone()
    }

    /// Reads the nsqd's limits from its HTTP API (if its address is known): every time the
    /// connection comes up, as nsqd may have restarted with other flags.
    fn learn_limits(&self, id: u64, addr: &str, ctx: &mut Context<Self>) {
        let Some((Some(http), limits)) = self.learn_from.get(&id).cloned() else {
            return;
        };
        let addr = addr.to_owned();
        ctx.spawn(wrap_future(async move {
            match limits::fetch(&http).await {
                Ok((msg, body)) => {
                    limits.set_from_server(msg, body);
                    tracing::debug!(nsqd = %addr, max_msg_size = msg, max_body_size = body,
                        "read nsqd's publish limits from its HTTP API");
                }
                // Not fatal: its "too big" errors still teach the limits.
                Err(error) => tracing::warn!(nsqd = %addr, %error,
                    "could not read nsqd's publish limits from its HTTP API"),
            }
        }));
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

/// Close every connection within `deadline`, then set `stopped` and answer on `done`. Sent
/// with `do_send` and carried out here, so that the stop completes even if its caller stops
/// waiting (actix skips a `send` whose requester went away before it was handled).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct StopAll {
    pub(super) conns: Vec<Addr<NsqdConnection>>,
    pub(super) deadline: Duration,
    pub(super) stopped: Arc<AtomicBool>,
    pub(super) done: oneshot::Sender<()>,
}

impl Handler<StopAll> for EventRelay {
    type Result = ();

    fn handle(&mut self, stop: StopAll, ctx: &mut Context<Self>) {
        let deadline = stop.deadline;
        let closes: Vec<_> = stop
            .conns
            .iter()
            .map(|conn| conn.send(Close { deadline }))
            .collect();
        ctx.spawn(wrap_future(async move {
            for close in closes {
                let _ = close.await;
            }
            stop.stopped.store(true, Ordering::Release);
            let _ = stop.done.send(());
        }));
    }
}

impl Handler<Track> for EventRelay {
    type Result = ();

    fn handle(&mut self, Track { id, http, limits }: Track, _: &mut Context<Self>) {
        self.learn_from.insert(id, (http, limits));
    }
}

impl Handler<ConnectionEvent> for EventRelay {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent, ctx: &mut Context<Self>) {
        match &event {
            ConnectionEvent::Connected { id, addr, .. } => {
                self.set(*id, Health::Up);
                self.changed.notify_waiters();
                self.learn_limits(*id, addr, ctx);
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
        self.forward.emit(event);
    }
}

impl Handler<Subscribe<ConnectionEvent>> for EventRelay {
    type Result = ();

    fn handle(&mut self, subscribe: Subscribe<ConnectionEvent>, _: &mut Context<Self>) {
        self.forward
            .add(subscribe.id, subscribe.recipient, subscribe.interest);
    }
}

impl Handler<Unsubscribe> for EventRelay {
    type Result = ();

    fn handle(&mut self, Unsubscribe(id): Unsubscribe, _: &mut Context<Self>) {
        self.forward.unsubscribe(id);
    }
}
