//! The connection actor's own life, against the in-process nsqd.

use std::{sync::Arc, time::Duration};

use actix::{Handler, Message};

use super::{ConnCounters, ConnectionConfig, ConnectionParams, NsqdConnection};
use crate::{retry::ReconnectPolicy, testing::TestNsqd};

/// How often the actor's `started()` ran.
#[derive(Message)]
#[rtype(result = "u32")]
struct Starts;

impl Handler<Starts> for NsqdConnection {
    type Result = u32;

    fn handle(&mut self, _: Starts, _: &mut Self::Context) -> u32 {
        self.starts
    }
}

async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

fn start(nsqd: &TestNsqd, counters: &Arc<ConnCounters>) -> actix::Addr<NsqdConnection> {
    let reconnect = ReconnectPolicy::new()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(100));
    NsqdConnection::start(ConnectionParams {
        id: 0,
        addr: Arc::from(nsqd.addr().to_string()),
        config: Arc::new(ConnectionConfig::new().reconnect(reconnect)),
        subscription: None,
        events: None,
        tap: None,
        span: tracing::Span::none(),
        counters: counters.clone(),
    })
}

#[actix_rt::test]
async fn a_lost_link_reconnects_without_restarting_the_actor() {
    let nsqd = TestNsqd::start().unwrap();
    let counters = Arc::new(ConnCounters::default());
    let conn = start(&nsqd, &counters);
    let connected = || {
        counters
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(eventually(connected).await);
    for round in 1..=3 {
        nsqd.close_all_connections().unwrap();
        let reconnected = || {
            counters
                .reconnects
                .load(std::sync::atomic::Ordering::Relaxed)
                == round
                && connected()
        };
        assert!(eventually(reconnected).await, "round {round}");
    }
    // One reconnect path, in the same context: the supervisor never restarted the actor.
    assert_eq!(conn.send(Starts).await.unwrap(), 1);
    assert_eq!(nsqd.clients().len(), 1);
}

#[actix_rt::test]
async fn a_connection_that_gave_up_ends_when_its_owner_lets_go() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens there now: every connect is refused
    let counters = Arc::new(ConnCounters::default());
    let reconnect = ReconnectPolicy::new()
        .initial_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(5))
        .max_attempts(Some(2));
    let conn = NsqdConnection::start(ConnectionParams {
        id: 0,
        addr: Arc::from(addr.to_string()),
        config: Arc::new(ConnectionConfig::new().reconnect(reconnect)),
        subscription: None,
        events: None,
        tap: None,
        span: tracing::Span::none(),
        counters,
    });
    let weak = conn.downgrade();
    drop(conn);
    // Without an address and with nothing left to drive, the actor's mailbox goes away; before,
    // an answers stream that never ended kept a gave-up connection alive for good.
    assert!(eventually(|| weak.upgrade().is_none()).await);
}
