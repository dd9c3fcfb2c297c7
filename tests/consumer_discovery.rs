//! Discovery under stress: an nsqd that lookupd lists but that cannot be reached must not make
//! the consumer query lookupd in a loop, and a lookupd listing thousands of nsqd must not make
//! it open thousands of connections.

#[path = "support/consumer.rs"]
mod support;

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::TcpListener,
    time::Duration,
};

use actix_nsq::{
    testing::{TestLookupd, TestNsqd},
    ConnectionConfig, Consumer, ConsumerEvent,
};
use support::{eventually, fast_reconnect, lookups, Events};

#[actix_rt::test]
async fn an_unreachable_nsqd_does_not_make_a_requery_storm() {
    let lookupd = TestLookupd::start().unwrap();
    let nsqd = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    nsqd.create_topic("events").unwrap();
    assert!(eventually(|| lookupd.producers("events").len() == 1).await);
    nsqd.refuse_connections(true); // listed, but every connection is closed at once
    lookupd.clear_requests();
    let events = Events::default();
    let consumer = Consumer::builder("events", "c")
        .lookupd(lookupd.url())
        .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
        .events(events.recipient())
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    actix_rt::time::sleep(Duration::from_secs(6)).await;
    let failures = events
        .all()
        .iter()
        .filter(
            |e| matches!(e, ConsumerEvent::Connection(c) if c.addr() == nsqd.addr().to_string()),
        )
        .count();
    assert!(failures > 0, "the consumer did try the nsqd");
    // Before: a query per failed connect, ~10 a second. Now: the first query, one requery at
    // once, one more after the 5 s limit, and maybe the first jittered poll.
    let queries = lookups(&lookupd);
    assert!(queries <= 4, "{queries} lookups in 6 s");
    consumer.stop().await;
}

/// A fake nsqlookupd whose `/lookup` lists `ports.len()` nsqd on 127.0.0.1.
fn fake_lookupd(ports: &[u16]) -> String {
    let producers: Vec<String> = ports
        .iter()
        .map(|port| {
            format!(
                r#"{{"remote_address":"127.0.0.1:1","hostname":"h{port}","broadcast_address":"127.0.0.1","tcp_port":{port},"http_port":{port},"version":"1.3.0"}}"#
            )
        })
        .collect();
    let body = format!(r#"{{"channels":[],"producers":[{}]}}"#, producers.join(","));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-NSQ-Content-Type: nsq; version=1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    format!("http://{addr}")
}

/// Ports nothing listens on (bound, then released).
fn closed_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

#[actix_rt::test]
async fn a_lookupd_listing_many_nsqd_opens_at_most_max_nsqd_connections() {
    let lookupd = fake_lookupd(&closed_ports(300));
    let events = Events::default();
    let consumer = Consumer::builder("events", "c")
        .lookupd(lookupd)
        .max_nsqd_connections(10)
        .events(events.recipient())
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    let limited = || {
        events.any(|e| {
            matches!(
                e,
                ConsumerEvent::ConnectionLimitReached {
                    limit: 10,
                    left_out: 290,
                    ..
                }
            )
        })
    };
    assert!(eventually(limited).await, "{:?}", events.all().first());
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(consumer.stats().connections.len(), 10);
    let tried: HashSet<String> = events
        .all()
        .iter()
        .filter_map(|e| match e {
            ConsumerEvent::Connection(c) => Some(c.addr().to_owned()),
            _ => None,
        })
        .collect();
    assert!(tried.len() <= 10, "{} nsqd tried", tried.len());
    consumer.stop().await;
}

#[actix_rt::test]
async fn max_nsqd_connections_is_validated_by_name() {
    for bad in [0, 10_001] {
        let error = Consumer::builder("events", "c")
            .nsqd("127.0.0.1:4150")
            .max_nsqd_connections(bad)
            .handler_fn(|_| async { Ok(()) })
            .validate()
            .unwrap_err();
        assert!(
            error.to_string().contains("max_nsqd_connections"),
            "{error}"
        );
    }
}

#[actix_rt::test]
async fn discovery_stops_with_the_consumer() {
    let lookupd = TestLookupd::start().unwrap();
    let consumer = Consumer::builder("events", "c")
        .lookupd(lookupd.url())
        .lookupd_poll_interval(Duration::from_millis(50))
        .lookupd_poll_jitter(0.0)
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(eventually(|| lookups(&lookupd) >= 3).await, "it polls");
    consumer.stop().await;
    lookupd.clear_requests();
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    // Before, the poll timer kept the discoverer alive and querying after its consumer stopped.
    assert_eq!(lookups(&lookupd), 0);
}
