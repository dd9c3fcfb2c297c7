//! Consumer metrics: the coordinator's sampler (counters and gauges from the connections'
//! atomics) and the per-message handler timer.

use std::{
    collections::HashMap,
    rc::Rc,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::Instant,
};

use ::metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Label, SharedString};

use super::{
    BACKOFF_LEVEL, HANDLER_SECONDS, IN_FLIGHT, MESSAGES_FINISHED, MESSAGES_GIVEN_UP,
    MESSAGES_RECEIVED, MESSAGES_REQUEUED, RDY, RECONNECTS,
};
use crate::{
    conn::ConnCounters,
    protocol::{Channel, Topic},
};

fn labels(topic: &str, channel: &str, nsqd: &Arc<str>) -> [Label; 3] {
    [
        Label::new("topic", topic.to_owned()),
        Label::new("channel", channel.to_owned()),
        Label::new("nsqd", SharedString::from(nsqd.clone())),
    ]
}

/// One connection's handles and the counter values already reported.
struct ConnSample {
    counters: Arc<ConnCounters>,
    received: (Counter, u64),
    finished: (Counter, u64),
    requeued: (Counter, u64),
    reconnects: (Counter, u64),
    rdy: Gauge,
    in_flight: Gauge,
}

impl ConnSample {
    fn new(topic: &str, channel: &str, nsqd: &Arc<str>, counters: Arc<ConnCounters>) -> Self {
        let labels = labels(topic, channel, nsqd);
        Self {
            counters,
            received: (counter!(MESSAGES_RECEIVED, labels.iter()), 0),
            finished: (counter!(MESSAGES_FINISHED, labels.iter()), 0),
            requeued: (counter!(MESSAGES_REQUEUED, labels.iter()), 0),
            reconnects: (counter!(RECONNECTS, labels.iter()), 0),
            rdy: gauge!(RDY, labels.iter()),
            in_flight: gauge!(IN_FLIGHT, labels.iter()),
        }
    }

    /// Reports what the counters gained since the last call, and the gauges as they are.
    fn report(&mut self) {
        let c = &self.counters;
        for (value, (counter, reported)) in [
            (c.received.load(Relaxed), &mut self.received),
            (c.finished.load(Relaxed), &mut self.finished),
            (c.requeued.load(Relaxed), &mut self.requeued),
            (c.reconnects.load(Relaxed), &mut self.reconnects),
        ] {
            counter.increment(value.saturating_sub(*reported));
            *reported = value.max(*reported);
        }
        self.rdy.set(c.rdy.load(Relaxed));
        self.in_flight.set(c.in_flight.load(Relaxed));
    }

    /// The connection is gone: report its last gains, and zero its gauges (a gauge left at
    /// its last value would claim messages in flight on a connection that no longer exists).
    fn retire(mut self) {
        self.report();
        self.rdy.set(0.0);
        self.in_flight.set(0.0);
    }
}

/// Kept by the consumer's coordinator in a field, so a coordinator restart neither loses
/// nor repeats what was reported.
pub(crate) struct ConsumerMetrics {
    topic: Topic,
    channel: Channel,
    backoff_level: Gauge,
    conns: HashMap<Arc<str>, ConnSample>,
}

impl ConsumerMetrics {
    pub(crate) fn new(topic: &Topic, channel: &Channel) -> Self {
        let labels = [
            Label::new("topic", topic.as_str().to_owned()),
            Label::new("channel", channel.as_str().to_owned()),
        ];
        Self {
            topic: topic.clone(),
            channel: channel.clone(),
            backoff_level: gauge!(BACKOFF_LEVEL, labels.iter()),
            conns: HashMap::new(),
        }
    }

    /// Reports every connection listed in `shared` (the list `Consumer::stats` reads) and
    /// retires those no longer listed. Called every `SAMPLE_INTERVAL` and at stop: off the
    /// message path.
    pub(crate) fn sample(
        &mut self,
        shared: &Mutex<Vec<(Arc<str>, Arc<ConnCounters>)>>,
        backoff_level: u32,
    ) {
        self.backoff_level.set(backoff_level);
        let listed: Vec<(Arc<str>, Arc<ConnCounters>)> = match shared.lock() {
            Ok(conns) => conns.clone(),
            Err(_) => return, // a panic elsewhere poisoned it; stats() gives up the same way
        };
        let mut seen = HashMap::with_capacity(listed.len());
        for (addr, counters) in listed {
            let sample = match self.conns.remove(&addr) {
                // The same connection; a new one for the same nsqd has fresh counters.
                Some(sample) if Arc::ptr_eq(&sample.counters, &counters) => sample,
                old => {
                    if let Some(old) = old {
                        old.retire();
                    }
                    ConnSample::new(&self.topic, &self.channel, &addr, counters)
                }
            };
            seen.insert(addr, sample);
        }
        for (_, gone) in self.conns.drain() {
            gone.retire();
        }
        self.conns = seen;
        for sample in self.conns.values_mut() {
            sample.report();
        }
    }
}

/// One consuming connection's handler histogram and give-up counter, shared (`Rc`) by its
/// deliveries.
pub(crate) struct HandlerMetrics {
    handler_seconds: Histogram,
    given_up: Counter,
}

impl HandlerMetrics {
    /// For a consuming connection (one with a subscription); `None` for a producer's.
    pub(crate) fn for_connection(
        subscription: Option<&crate::conn::Subscription>,
        nsqd: &Arc<str>,
    ) -> Option<Rc<Self>> {
        let subscription = subscription?;
        let labels = labels(
            subscription.topic.as_str(),
            subscription.channel.as_str(),
            nsqd,
        );
        Some(Rc::new(Self {
            handler_seconds: histogram!(HANDLER_SECONDS, labels.iter()),
            given_up: counter!(MESSAGES_GIVEN_UP, labels.iter()),
        }))
    }

    /// Starts timing one delivery's handler.
    pub(crate) fn start(self: &Rc<Self>) -> HandlerTimer {
        HandlerTimer {
            metrics: self.clone(),
            started: Instant::now(),
        }
    }
}

/// Times one delivery from dispatch to the handler's result.
pub(crate) struct HandlerTimer {
    metrics: Rc<HandlerMetrics>,
    started: Instant,
}

impl HandlerTimer {
    /// The handler (or, when `give_up`, the give-up hook) is done with the delivery.
    pub(crate) fn done(timer: Option<Self>, give_up: bool) {
        let Some(timer) = timer else { return };
        if give_up {
            timer.metrics.given_up.increment(1);
        } else {
            let elapsed = timer.started.elapsed();
            timer.metrics.handler_seconds.record(elapsed.as_secs_f64());
        }
    }
}
