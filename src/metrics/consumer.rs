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

    /// The consumer stopped: the counts since the last sample are reported and every gauge
    /// goes to zero (a stopped consumer has nothing in flight and no RDY out).
    pub(crate) fn stopped(&mut self, shared: &Mutex<Vec<(Arc<str>, Arc<ConnCounters>)>>) {
        self.sample(shared, 0);
        for (_, conn) in self.conns.drain() {
            conn.retire();
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;

    /// `(name, nsqd label) -> value`, as recorded since the last call (the debugging recorder
    /// resets counters and gauges when it takes a snapshot).
    fn taken(snapshotter: &Snapshotter) -> HashMap<(String, String), DebugValue> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let nsqd = key
                    .key()
                    .labels()
                    .find(|l| l.key() == "nsqd")
                    .map_or(String::new(), |l| l.value().to_owned());
                ((key.key().name().to_owned(), nsqd), value)
            })
            .collect()
    }

    fn counter(values: &HashMap<(String, String), DebugValue>, name: &str, nsqd: &str) -> u64 {
        match values.get(&(name.to_owned(), nsqd.to_owned())) {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!("{name} {nsqd}: {other:?}"),
        }
    }

    fn gauge(values: &HashMap<(String, String), DebugValue>, name: &str, nsqd: &str) -> f64 {
        match values.get(&(name.to_owned(), nsqd.to_owned())) {
            Some(DebugValue::Gauge(n)) => n.into_inner(),
            other => panic!("{name} {nsqd}: {other:?}"),
        }
    }

    fn conn(received: u64, in_flight: u32) -> Arc<ConnCounters> {
        let counters = ConnCounters {
            received: AtomicU64::new(received),
            ..ConnCounters::default()
        };
        counters.in_flight.store(in_flight, Relaxed);
        Arc::new(counters)
    }

    #[test]
    fn samples_report_deltas_once_and_retire_connections_that_went() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let topic = Topic::new("t").unwrap();
            let channel = Channel::new("c").unwrap();
            let mut metrics = ConsumerMetrics::new(&topic, &channel);
            let a: Arc<str> = Arc::from("a:4150");
            let first = conn(3, 2);
            let shared = Mutex::new(vec![(a.clone(), first.clone())]);

            metrics.sample(&shared, 1);
            let values = taken(&snapshotter);
            assert_eq!(counter(&values, MESSAGES_RECEIVED, "a:4150"), 3);
            assert_eq!(gauge(&values, IN_FLIGHT, "a:4150"), 2.0);
            assert_eq!(gauge(&values, BACKOFF_LEVEL, ""), 1.0);

            // Only what was gained since the last sample; nothing twice.
            first.received.store(5, Relaxed);
            metrics.sample(&shared, 0);
            assert_eq!(
                counter(&taken(&snapshotter), MESSAGES_RECEIVED, "a:4150"),
                2
            );
            metrics.sample(&shared, 0);
            assert_eq!(
                counter(&taken(&snapshotter), MESSAGES_RECEIVED, "a:4150"),
                0
            );

            // A new connection to the same nsqd starts from zero: the old one's last gain
            // and the new one's count, not the new count minus the old.
            first.received.store(6, Relaxed);
            let second = conn(1, 4);
            *shared.lock().unwrap() = vec![(a.clone(), second.clone())];
            metrics.sample(&shared, 0);
            let values = taken(&snapshotter);
            assert_eq!(counter(&values, MESSAGES_RECEIVED, "a:4150"), 2);
            assert_eq!(gauge(&values, IN_FLIGHT, "a:4150"), 4.0);

            // Gone from the list: its last gain is reported and its gauges go to zero.
            second.received.store(4, Relaxed);
            shared.lock().unwrap().clear();
            metrics.sample(&shared, 0);
            let values = taken(&snapshotter);
            assert_eq!(counter(&values, MESSAGES_RECEIVED, "a:4150"), 3);
            assert_eq!(gauge(&values, IN_FLIGHT, "a:4150"), 0.0);
            assert!(metrics.conns.is_empty());

            // Stopped: the last gains are reported and every gauge goes to zero.
            let third = conn(2, 1);
            third.rdy.store(5, Relaxed);
            *shared.lock().unwrap() = vec![(a.clone(), third.clone())];
            metrics.sample(&shared, 2); // RDY 5, backoff level 2
            third.received.store(7, Relaxed);
            metrics.stopped(&shared);
            let values = taken(&snapshotter);
            assert_eq!(counter(&values, MESSAGES_RECEIVED, "a:4150"), 7);
            assert_eq!(gauge(&values, RDY, "a:4150"), 0.0);
            assert_eq!(gauge(&values, IN_FLIGHT, "a:4150"), 0.0);
            assert_eq!(gauge(&values, BACKOFF_LEVEL, ""), 0.0);
        });
    }
}
