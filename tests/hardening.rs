//! Hardening against bad input and misuse (issue 10): one bad nsqlookupd entry does not blank
//! discovery, errors name the nsqd and arrive at once, `start()` outside a System is an error,
//! secrets stay off plain HTTP and out of logs, and learned server limits.

#[path = "support/consumer.rs"]
mod support;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use actix_nsq::{
    protocol::PublishLimits,
    testing::{TestLookupd, TestNsqd},
    BodyError, ConnectionConfig, Consumer, ConsumerEvent, Error, LookupdHttpClient, NsqdHttpClient,
    Producer, ProtocolError,
};
use support::{eventually, Events};

#[actix_rt::test]
async fn one_bad_lookupd_entry_is_skipped_and_reported_the_others_consumed() {
    let nsqd = TestNsqd::start().unwrap();
    let lookupd = TestLookupd::start().unwrap();
    let port = nsqd.addr().port();
    // A good entry between two that nsqlookupd would never send.
    lookupd.set_lookup_answer(Some(format!(
        r#"{{"channels":[],"producers":[
            {{"broadcast_address":"127.0.0.1","tcp_port":70000,"http_port":1}},
            {{"broadcast_address":"127.0.0.1","tcp_port":{port},"http_port":1}},
            {{"broadcast_address":null,"tcp_port":{port}}}]}}"#
    )));
    let events = Events::default();
    let consumer = Consumer::builder("events", "c")
        .lookupd(lookupd.url())
        .events(events.recipient())
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    nsqd.publish("events", "found").unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    let skipped = events.all().into_iter().find_map(|e| match e {
        ConsumerEvent::DiscoveryFailed {
            error: Error::SkippedProducers { skipped, count: 2 },
            ..
        } => Some(skipped),
        _ => None,
    });
    let skipped = skipped.expect("an event lists the skipped entries");
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].reason.starts_with("tcp_port"), "{skipped:?}");
    assert!(
        skipped[1].reason.starts_with("broadcast_address"),
        "{skipped:?}"
    );
    assert!(events.any(|e| matches!(
        e,
        ConsumerEvent::Discovered { nsqd: found, .. } if found == &[nsqd.addr().to_string()]
    )));
    consumer.stop().await;
}

#[actix_rt::test]
async fn a_closed_port_fails_a_publish_at_once_naming_the_nsqd() {
    let nsqd = TestNsqd::start().unwrap();
    let addr = nsqd.addr().to_string();
    nsqd.kill().unwrap();
    let producer = Producer::builder()
        .nsqd(&addr)
        .request_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    let started = Instant::now();
    let err = producer.publish("events", "x").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    match &err {
        Error::Connect { addr: a, source } => {
            assert_eq!(a, &addr);
            assert!(matches!(**source, Error::Io(_)), "{err}");
        }
        other => panic!("{other}"),
    }
    let text = err.to_string();
    assert!(text.contains(&addr) && text.contains("refused"), "{text}");
}

#[actix_rt::test]
async fn nsqds_http_port_is_named_as_such_at_once() {
    let nsqd = TestNsqd::start().unwrap();
    let http = nsqd.http_addr().to_string();
    let producer = Producer::builder()
        .nsqd(&http)
        .request_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    let started = Instant::now();
    let err = producer.publish("events", "x").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    match &err {
        Error::Connect { source, .. } => assert!(
            matches!(&**source, Error::Protocol(ProtocolError::HttpPort { addr }) if *addr == http),
            "{err}"
        ),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("HTTP port"), "{err}");
}

// ---- start() outside an actix System (issue 10 item 8) --------------------------------------

/// No runtime at all: each `start()` returns the error (it used to abort the process).
#[test]
fn start_outside_a_system_is_an_error_not_an_abort() {
    let consumer = Consumer::builder("events", "c")
        .nsqd("127.0.0.1:4150")
        .handler_fn(|_| async { Ok(()) })
        .start();
    assert!(
        matches!(consumer, Err(Error::NoActixSystem(_))),
        "{consumer:?}"
    );
    let producer = Producer::builder().nsqd("127.0.0.1:4150").start();
    assert!(
        matches!(producer, Err(Error::NoActixSystem(_))),
        "{producer:?}"
    );
    // A tokio runtime without actix is not enough either.
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let producer = Producer::builder().nsqd("127.0.0.1:4150").start();
        assert!(
            matches!(producer, Err(Error::NoActixSystem(_))),
            "{producer:?}"
        );
    });
}

#[cfg(feature = "rsmq")]
#[test]
fn rsmq_consumer_start_outside_a_system_is_an_error() {
    use actix_nsq::rsmq::{RsmqBuilder, RsmqConsumer};

    let redis = fake_redis::answering();
    // The client connects on a runtime of its own; the consumer is then started from a
    // thread that runs no System.
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rsmq = tokio
        .block_on(
            RsmqBuilder::from_url(&format!("redis://{redis}"))
                .unwrap()
                .build(),
        )
        .unwrap();
    let started = RsmqConsumer::builder(rsmq, "jobs")
        .handler_fn(|_| async { Ok(()) })
        .start();
    assert!(
        matches!(started, Err(Error::NoActixSystem(_))),
        "{started:?}"
    );
}

// ---- Rsmq::connect bounded by connection_timeout (issue 10 item 10) ---------------------------

#[cfg(feature = "rsmq")]
#[actix_rt::test]
async fn rsmq_connect_to_a_silent_redis_honours_connection_timeout() {
    use actix_nsq::rsmq::RsmqBuilder;

    let redis = fake_redis::silent();
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let result = RsmqBuilder::from_url(&format!("redis://{redis}"))
        .unwrap()
        .connection_timeout(timeout)
        .build()
        .await;
    let took = started.elapsed();
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    // The redis crate's manager alone retries 6 times, each attempt bounded by the timeout:
    // about 10 s here. The bound holds for the whole connect (plus scheduling slack).
    assert!(took < timeout * 4, "took {took:?}");
}

#[cfg(feature = "rsmq")]
#[actix_rt::test]
async fn rsmq_realtime_subscription_to_a_silent_redis_honours_connection_timeout() {
    use actix_nsq::rsmq::RsmqBuilder;

    // The client's own connection is answered; the subscription's connection is not.
    let redis = fake_redis::answering_then_silent();
    let timeout = Duration::from_millis(500);
    let rsmq = RsmqBuilder::from_url(&format!("redis://{redis}"))
        .unwrap()
        .connection_timeout(timeout)
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let subscribed = tokio::time::timeout(Duration::from_secs(20), rsmq.subscribe("jobs")).await;
    let took = started.elapsed();
    let result = subscribed.expect("subscribe hung on a silent Redis");
    assert!(
        matches!(result, Err(Error::Timeout(_))),
        "{:?}",
        result.err()
    );
    assert!(took < timeout * 4, "took {took:?}");
}

/// Loopback stand-ins for Redis: one that accepts and never answers (a stopped process), one
/// that answers `+OK` to every command.
#[cfg(feature = "rsmq")]
mod fake_redis {
    use std::{
        io::{Read, Write},
        net::{SocketAddr, TcpListener, TcpStream},
        thread,
    };

    pub(super) fn silent() -> SocketAddr {
        serve(swallow)
    }

    pub(super) fn answering() -> SocketAddr {
        serve(answer)
    }

    /// Answers on its first connection, then stands still on every later one.
    pub(super) fn answering_then_silent() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for (i, stream) in listener.incoming().flatten().enumerate() {
                let conn: fn(TcpStream) = if i == 0 { answer } else { swallow };
                thread::spawn(move || conn(stream));
            }
        });
        addr
    }

    fn swallow(mut stream: TcpStream) {
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    }

    /// `+OK` to every command.
    fn answer(mut stream: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
            while let Some(used) = command_len(&buf) {
                buf.drain(..used);
                if stream.write_all(b"+OK\r\n").is_err() {
                    return;
                }
            }
        }
    }

    /// The length of the first complete RESP command (`*N\r\n` then N `$len\r\n...\r\n`).
    fn command_len(buf: &[u8]) -> Option<usize> {
        fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
            let end = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
            Some((&buf[at..at + end], at + end + 2))
        }
        let (head, mut at) = line(buf, 0)?;
        let count: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
            .ok()?
            .parse()
            .ok()?;
        for _ in 0..count {
            let (len, next) = line(buf, at)?;
            let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
                .ok()?
                .parse()
                .ok()?;
            at = next + len + 2;
            if buf.len() < at {
                return None;
            }
        }
        Some(at)
    }

    fn serve(conn: fn(TcpStream)) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || conn(stream));
            }
        });
        addr
    }
}

// ---- secrets (issue 10 item 9) ------------------------------------------------------------

/// A loopback nsqlookupd stand-in that records every request head and answers `/lookup` with
/// no producers.
fn recording_lookupd() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            thread::spawn(move || serve_lookup(stream, &seen));
        }
    });
    (addr, heads)
}

fn serve_lookup(mut stream: TcpStream, seen: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let body = r#"{"channels":[],"producers":[]}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nX-NSQ-Content-Type: nsq; version=1.0\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }
}

async fn lookupd_heads(over_http: Option<bool>, lookupd: String) -> Vec<String> {
    let (addr, heads) = recording_lookupd();
    let events = Events::default();
    let mut builder = Consumer::builder("events", "c")
        .lookupd(lookupd.replace("ADDR", &addr))
        .connection(ConnectionConfig::new().auth_secret("hunter2"))
        .events(events.recipient())
        .handler_fn(|_| async { Ok(()) });
    if let Some(over_http) = over_http {
        builder = builder.lookupd_authorization_over_http(over_http);
    }
    let consumer = builder.start().unwrap();
    assert!(eventually(|| events.any(|e| matches!(e, ConsumerEvent::Discovered { .. }))).await);
    // Whatever names the nsqlookupd in events carries no credentials.
    for event in events.all() {
        let text = format!("{event:?}");
        assert!(!text.contains("pw"), "{text}");
    }
    consumer.stop().await;
    let heads = heads.lock().unwrap().clone();
    assert!(!heads.is_empty());
    heads
}

#[actix_rt::test]
async fn the_auth_secret_does_not_go_to_a_plain_http_lookupd() {
    for head in lookupd_heads(None, "http://ADDR".into()).await {
        assert!(head.starts_with("GET /lookup?topic=events"), "{head}");
        assert!(!head.contains("hunter2"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("authorization"),
            "{head}"
        );
    }
}

#[actix_rt::test]
async fn the_auth_secret_goes_over_plain_http_only_by_opt_in() {
    let heads = lookupd_heads(Some(true), "http://ADDR".into()).await;
    assert!(
        heads
            .iter()
            .all(|h| h.contains("\r\nauthorization: Bearer hunter2\r\n")
                || h.contains("\r\nAuthorization: Bearer hunter2\r\n")),
        "{heads:?}"
    );
}

#[actix_rt::test]
async fn lookupd_credentials_stay_out_of_events_and_debug() {
    // lookupd_heads checks the events; the request itself still reaches the server.
    lookupd_heads(None, "http://user:pw@ADDR".into()).await;
    let builder = Consumer::builder("events", "c").lookupd("http://user:pw@127.0.0.1:4161");
    let text = format!("{builder:?}");
    assert!(
        !text.contains("pw@") && text.contains("***@127.0.0.1:4161"),
        "{text}"
    );
    let client = LookupdHttpClient::new("http://user:pw@127.0.0.1:4161").unwrap();
    let text = format!("{client:?}");
    assert!(
        !text.contains("pw@") && text.contains("***@127.0.0.1:4161"),
        "{text}"
    );
    let builder = LookupdHttpClient::builder("http://user:pw@127.0.0.1:4161");
    assert!(!format!("{builder:?}").contains("pw@"));
    let nsqd = NsqdHttpClient::new("http://user:pw@127.0.0.1:4151").unwrap();
    assert!(!format!("{nsqd:?}").contains("pw@"));
}

#[test]
fn values_nsqd_would_refuse_forever_are_refused_up_front() {
    let field = |r: Result<(), Error>| match r {
        Err(Error::Config { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let producer = || Producer::builder().nsqd("127.0.0.1:4150");
    // nsqd refuses an IDENTIFY body over --max-body-size, on every attempt.
    let huge = ConnectionConfig::new().client_id("x".repeat(10 << 20));
    assert_eq!(field(producer().connection(huge).validate()), "client_id");
    let swapped = ConnectionConfig::new().publish_limits(5 << 20, 1 << 20);
    assert_eq!(
        field(producer().connection(swapped).validate()),
        "publish_limits"
    );
    assert_eq!(
        field(producer().max_defer(Duration::MAX).validate()),
        "max_defer"
    );
    let silent = ConnectionConfig::new().heartbeat_interval(None);
    assert_eq!(
        field(producer().connection(silent).validate()),
        "heartbeat_interval"
    );
    producer().validate().unwrap();
    let http = NsqdHttpClient::builder("127.0.0.1:4151")
        .publish_limits(PublishLimits {
            max_msg_size: 10,
            max_body_size: 5,
        })
        .build();
    assert!(matches!(
        http,
        Err(Error::Config {
            field: "publish_limits",
            ..
        })
    ));
}

// ---- the server's limits (issue 10 item 6) --------------------------------------------------

fn count(nsqd: &TestNsqd, line: &str) -> usize {
    nsqd.commands().iter().filter(|c| c.line == line).count()
}

#[actix_rt::test]
async fn a_limit_nsqd_stated_is_checked_before_the_next_publish() {
    // The producer believes nsqd's defaults (1 MiB / 5 MiB); this nsqd says otherwise.
    let nsqd = TestNsqd::builder()
        .max_msg_size(100)
        .max_body_size(500)
        .start()
        .unwrap();
    let producer =
        Producer::builder()
            .nsqd(nsqd.addr().to_string())
            .connection(ConnectionConfig::new().reconnect(
                actix_nsq::ReconnectPolicy::new().initial_delay(Duration::from_millis(20)),
            ))
            .start()
            .unwrap();
    producer.publish("events", "small").await.unwrap();
    // The first one is unavoidable: nsqd's refusal is fatal and costs the connection.
    let err = producer
        .publish("events", vec![b'x'; 200])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Server(_)), "{err}");
    assert!(err.to_string().contains("200 > 100"), "{err}");
    // The second is refused before writing, naming the limit.
    let err = producer
        .publish("events", vec![b'x'; 200])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidBody(BodyError::TooLarge {
                size: 200,
                max: 100
            })
        ),
        "{err}"
    );
    let err = producer
        .deferred_publish("events", Duration::from_secs(1), vec![b'x'; 101])
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    // MPUB bodies: the same for --max-body-size.
    let batch = || (0..6).map(|_| vec![b'y'; 90]).collect::<Vec<_>>();
    let err = producer.multi_publish("events", batch()).await.unwrap_err();
    assert!(err.to_string().contains("> 500"), "{err}");
    let err = producer.multi_publish("events", batch()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidBody(BodyError::BatchTooLarge { max: 500, .. })
        ),
        "{err}"
    );
    producer.publish("events", "still fine").await.unwrap();
    // Two refusals reached nsqd (one per limit), each costing one connection; the refused
    // ones before writing cost nothing.
    assert_eq!(count(&nsqd, "PUB events"), 3, "{:?}", nsqd.commands());
    assert_eq!(count(&nsqd, "DPUB events 1000"), 0);
    assert_eq!(count(&nsqd, "MPUB events"), 1);
    assert_eq!(count(&nsqd, "IDENTIFY"), 3);
    assert_eq!(nsqd.topic_depth("events"), 2);
}

#[actix_rt::test]
async fn limits_are_read_from_nsqds_http_api_before_any_refusal() {
    let nsqd = TestNsqd::builder()
        .max_msg_size(100)
        .max_body_size(500)
        .start()
        .unwrap();
    let producer = Producer::builder()
        .nsqd_with_http(nsqd.addr().to_string(), nsqd.http_url())
        .start()
        .unwrap();
    producer.publish("events", "small").await.unwrap();
    let learned = PublishLimits {
        max_msg_size: 100,
        max_body_size: 500,
    };
    assert!(eventually(|| producer.publish_limits()[0].1 == learned).await);
    let err = producer
        .publish("events", vec![b'x'; 200])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidBody(BodyError::TooLarge {
                size: 200,
                max: 100
            })
        ),
        "{err}"
    );
    // Nothing oversized was written: one connection, one PUB.
    assert_eq!(count(&nsqd, "PUB events"), 1);
    // No refusal taught it: the limits came from /config.
    assert_eq!(count(&nsqd, "IDENTIFY"), 1);
}

#[test]
fn an_nsqd_http_address_is_checked() {
    let err = Producer::builder()
        .nsqd_with_http("127.0.0.1:4150", "ftp://127.0.0.1:4151")
        .validate()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "nsqd_http",
                ..
            }
        ),
        "{err}"
    );
}

#[actix_rt::test]
async fn the_lookupd_http_client_keeps_the_good_entries_too() {
    let lookupd = TestLookupd::start().unwrap();
    lookupd.set_lookup_answer(Some(
        r#"{"channels":["c"],"producers":[{"broadcast_address":"h","tcp_port":"4150"},
        {"broadcast_address":"h","tcp_port":4150,"http_port":4151}]}"#
            .into(),
    ));
    let http = LookupdHttpClient::new(lookupd.url()).unwrap();
    let answer = http.lookup("events").await.unwrap();
    assert_eq!(answer.channels, ["c"]);
    assert_eq!(answer.producers.len(), 1);
    assert_eq!(answer.producers[0].tcp_address().as_deref(), Some("h:4150"));
    assert_eq!(answer.skipped.len(), 1);
    assert!(
        answer.skipped[0].reason.starts_with("tcp_port"),
        "{:?}",
        answer.skipped
    );
}
