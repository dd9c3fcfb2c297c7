//! `NsqdHttpClient` against the test nsqd's HTTP API: every call, bad input caught before
//! sending, nsqd's own refusals with their status and message, timeouts, and the server's
//! exact answers to requests the client would never send.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_nsq::{
    http::{MpubMode, StatsQuery},
    protocol::PublishLimits,
    testing::TestNsqd,
    BodyError, Consumer, Delivery, Error, NsqdHttpClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

fn client(nsqd: &TestNsqd) -> NsqdHttpClient {
    NsqdHttpClient::new(nsqd.http_url()).unwrap()
}

fn http_error(result: Result<impl std::fmt::Debug, Error>) -> (u16, String) {
    match result {
        Err(Error::Http { status, message }) => (status, message),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

/// One raw request with `Connection: close`: status line, headers, body.
async fn raw(nsqd: &TestNsqd, method: &str, target: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(nsqd.http_addr())
        .await
        .unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

#[actix_rt::test]
async fn ping_and_info() {
    let nsqd = TestNsqd::start().unwrap();
    let http = client(&nsqd);
    http.ping().await.unwrap();
    let info = http.info().await.unwrap();
    assert_eq!(info.version, "1.3.0");
    assert_eq!(info.tcp_port, i32::from(nsqd.addr().port()));
    assert_eq!(info.http_port, i32::from(nsqd.http_addr().port()));
    assert_eq!(info.broadcast_address, "127.0.0.1");
    assert_eq!(info.max_heartbeat_interval, Duration::from_secs(60));
    assert_eq!(info.max_output_buffer_timeout, Duration::from_secs(30));
    assert_eq!(info.max_deflate_level, 6);
    assert!(info.start_time > 1_600_000_000);
    // The same client over `host:port`, no scheme.
    let bare = NsqdHttpClient::new(nsqd.http_addr().to_string()).unwrap();
    assert_eq!(bare.base_url(), nsqd.http_url());
    bare.ping().await.unwrap();
}

#[actix_rt::test]
async fn publish_and_defer() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.create_channel("t", "c").unwrap();
    let http = client(&nsqd);
    http.publish("t", "hello", None).await.unwrap();
    http.publish("t", &b"bin\n\0ary"[..], None).await.unwrap();
    http.publish("t", "later", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(nsqd.depth("t", "c"), 2);
    assert_eq!(nsqd.deferred("t", "c"), 1);
    let stats = http.stats(&StatsQuery::new()).await.unwrap();
    let topic = stats.topic("t").unwrap();
    assert_eq!((topic.message_count, topic.message_bytes), (3, 5 + 8 + 5));
    // A topic that did not exist is created by the publish, as in nsqd.
    http.publish("fresh", "x", None).await.unwrap();
    assert_eq!(nsqd.topic_depth("fresh"), 1);
}

#[actix_rt::test]
async fn multi_publish_in_both_modes() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.create_channel("t", "c").unwrap();
    let http = client(&nsqd);
    http.multi_publish("t", ["a", "bb", "ccc"], MpubMode::Newline)
        .await
        .unwrap();
    assert_eq!(nsqd.depth("t", "c"), 3);
    // Binary mode carries newlines and NULs inside one message each.
    let bodies: Vec<&[u8]> = vec![b"line1\nline2", b"\0\0", b"z"];
    http.multi_publish("t", bodies, MpubMode::Binary)
        .await
        .unwrap();
    assert_eq!(nsqd.depth("t", "c"), 6);
    let stats = http.stats(&StatsQuery::new().topic("t")).await.unwrap();
    assert_eq!(stats.topics[0].message_bytes, 6 + 11 + 2 + 1);
}

#[actix_rt::test]
async fn bad_input_is_refused_before_sending() {
    let nsqd = TestNsqd::start().unwrap();
    let http = NsqdHttpClient::builder(nsqd.http_url())
        .publish_limits(PublishLimits {
            max_msg_size: 8,
            max_body_size: 20,
        })
        .max_defer(Duration::from_secs(10))
        .build()
        .unwrap();
    let invalid_name = |r: Result<(), Error>| matches!(r, Err(Error::InvalidName { .. }));
    assert!(invalid_name(http.publish("bad topic", "x", None).await));
    assert!(invalid_name(http.create_topic("").await));
    assert!(invalid_name(http.create_channel("t", "a/b").await));
    assert!(invalid_name(http.pause_channel(&"x".repeat(65), "c").await));
    assert!(matches!(
        http.stats(&StatsQuery::new().channel("no way")).await,
        Err(Error::InvalidName { .. })
    ));
    let body_error = |r: Result<(), Error>| match r {
        Err(Error::InvalidBody(e)) => e,
        other => panic!("expected InvalidBody, got {other:?}"),
    };
    assert_eq!(
        body_error(http.publish("t", "", None).await),
        BodyError::Empty
    );
    assert_eq!(
        body_error(http.publish("t", "123456789", None).await),
        BodyError::TooLarge { size: 9, max: 8 }
    );
    assert!(matches!(
        body_error(http.publish("t", "x", Some(Duration::from_secs(11))).await),
        BodyError::DeferOutOfRange {
            ms: 11_000,
            max_ms: 10_000
        }
    ));
    let none: [&str; 0] = [];
    assert_eq!(
        body_error(http.multi_publish("t", none, MpubMode::Binary).await),
        BodyError::NoMessages
    );
    match body_error(
        http.multi_publish("t", ["ok", "a\nb"], MpubMode::Newline)
            .await,
    ) {
        BodyError::InBatch { index: 1, source } => {
            assert_eq!(*source, BodyError::ContainsNewline)
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        body_error(http.multi_publish("t", ["a", ""], MpubMode::Newline).await),
        BodyError::InBatch { index: 1, .. }
    ));
    assert!(matches!(
        body_error(
            http.multi_publish("t", ["12345678"; 3], MpubMode::Binary)
                .await
        ),
        BodyError::BatchTooLarge { size: 40, max: 20 }
    ));
    assert!(matches!(
        body_error(
            http.multi_publish("t", ["12345678"; 3], MpubMode::Newline)
                .await
        ),
        BodyError::BatchTooLarge { size: 26, max: 20 }
    ));
    assert!(matches!(
        http.config_get("Bad/opt").await,
        Err(Error::Config { field: "opt", .. })
    ));
    assert!(matches!(
        http.config_set("log_level", "").await,
        Err(Error::Config { field: "value", .. })
    ));
    // Nothing reached the server.
    assert!(nsqd.topics().is_empty());
}

#[actix_rt::test]
async fn nsqd_refusals_carry_status_and_message() {
    let nsqd = TestNsqd::builder()
        .max_msg_size(8)
        .max_body_size(30)
        .max_req_timeout(Duration::from_secs(1))
        .start()
        .unwrap();
    // A client that believes the server's limits are nsqd's defaults.
    let http = client(&nsqd);
    assert_eq!(
        http_error(http.delete_topic("missing").await),
        (404, "TOPIC_NOT_FOUND".into())
    );
    assert_eq!(
        http_error(http.create_channel("missing", "c").await),
        (404, "TOPIC_NOT_FOUND".into())
    );
    http.create_topic("t").await.unwrap();
    for call in [
        http.delete_channel("t", "c").await,
        http.empty_channel("t", "c").await,
        http.pause_channel("t", "c").await,
    ] {
        assert_eq!(http_error(call), (404, "CHANNEL_NOT_FOUND".into()));
    }
    assert_eq!(
        http_error(http.publish("t", "123456789", None).await),
        (413, "MSG_TOO_BIG".into())
    );
    assert_eq!(
        http_error(
            http.multi_publish("t", ["123456789"], MpubMode::Newline)
                .await
        ),
        (413, "MSG_TOO_BIG".into())
    );
    assert_eq!(
        http_error(
            http.multi_publish("t", ["12345678"; 4], MpubMode::Binary)
                .await
        ),
        (413, "BODY_TOO_BIG".into())
    );
    assert_eq!(
        http_error(http.publish("t", "x", Some(Duration::from_secs(2))).await),
        (400, "INVALID_DEFER".into())
    );
    assert_eq!(
        http_error(http.config_get("no_such_option").await),
        (400, "INVALID_OPTION".into())
    );
    assert_eq!(
        http_error(http.config_set("log_level", "loud").await),
        (400, "INVALID_VALUE".into())
    );
    assert_eq!(
        http_error(http.config_set("max_msg_size", "1").await),
        (400, "INVALID_OPTION".into())
    );
    assert_eq!(
        http_error(
            http.config_set("nsqlookupd_tcp_addresses", "not json")
                .await
        ),
        (400, "INVALID_VALUE".into())
    );
}

#[actix_rt::test]
async fn topic_and_channel_administration() {
    let nsqd = TestNsqd::start().unwrap();
    let http = client(&nsqd);
    http.create_topic("t").await.unwrap();
    http.create_topic("t").await.unwrap();
    http.create_channel("t", "c").await.unwrap();
    assert_eq!(nsqd.channels("t"), ["c"]);
    http.pause_topic("t").await.unwrap();
    http.publish("t", "held", None).await.unwrap();
    assert_eq!((nsqd.topic_depth("t"), nsqd.depth("t", "c")), (1, 0));
    let stats = http.stats(&StatsQuery::new()).await.unwrap();
    assert!(stats.topic("t").unwrap().paused);
    http.unpause_topic("t").await.unwrap();
    assert_eq!((nsqd.topic_depth("t"), nsqd.depth("t", "c")), (0, 1));
    http.pause_channel("t", "c").await.unwrap();
    let stats = http.stats(&StatsQuery::new()).await.unwrap();
    assert!(stats.topic("t").unwrap().channel("c").unwrap().paused);
    http.unpause_channel("t", "c").await.unwrap();
    http.empty_channel("t", "c").await.unwrap();
    assert_eq!(nsqd.depth("t", "c"), 0);
    http.pause_topic("t").await.unwrap();
    http.publish("t", "held", None).await.unwrap();
    http.empty_topic("t").await.unwrap();
    assert_eq!(nsqd.topic_depth("t"), 0);
    http.delete_channel("t", "c").await.unwrap();
    assert!(nsqd.channels("t").is_empty());
    http.delete_topic("t").await.unwrap();
    assert!(nsqd.topics().is_empty());
}

#[actix_rt::test]
async fn stats_filters_clients_and_text() {
    let nsqd = TestNsqd::start().unwrap();
    let http = client(&nsqd);
    for (t, c) in [("a", "x"), ("a", "y"), ("b", "x")] {
        nsqd.create_channel(t, c).unwrap();
    }
    let handled = Arc::new(AtomicUsize::new(0));
    let seen = handled.clone();
    let consumer = Consumer::builder("a", "x")
        .nsqd(nsqd.addr().to_string())
        .handler_fn(move |_: Delivery| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()
        .unwrap();
    assert!(
        nsqd.wait_until_async(WAIT, |n| n
            .channel_stats("a", "x")
            .is_some_and(|c| !c.clients.is_empty()))
            .await
    );
    let all = http.stats(&StatsQuery::new()).await.unwrap();
    assert_eq!(all.version, "1.3.0");
    assert_eq!(all.health, "OK");
    assert!(all.memory.is_some());
    let names: Vec<_> = all.topics.iter().map(|t| t.topic_name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let x = all.topic("a").unwrap().channel("x").unwrap();
    assert_eq!((x.client_count, x.clients.len()), (1, 1));
    let client = &x.clients[0];
    assert_eq!((client.version.as_str(), client.state), ("V2", 3));
    assert!(client.user_agent.starts_with("actix-nsq"), "{client:?}");
    assert!(client.connect_time > 1_600_000_000);

    let filtered = StatsQuery::new()
        .topic("a")
        .channel("x")
        .include_clients(false)
        .include_mem(false);
    let only = http.stats(&filtered).await.unwrap();
    assert_eq!(only.topics.len(), 1);
    let channels: Vec<_> = only.topics[0]
        .channels
        .iter()
        .map(|c| c.channel_name.as_str())
        .collect();
    assert_eq!(channels, ["x"]);
    let x = &only.topics[0].channels[0];
    assert_eq!((x.client_count, x.clients.len()), (1, 0));
    assert!(only.memory.is_none());
    // The channel filter alone picks it in every topic; an unknown topic gives nothing.
    let by_channel = http.stats(&StatsQuery::new().channel("x")).await.unwrap();
    assert_eq!(by_channel.topics.len(), 2);
    let unknown = http.stats(&StatsQuery::new().topic("nope")).await.unwrap();
    assert!(unknown.topics.is_empty());

    nsqd.publish("a", "m").unwrap();
    assert!(
        nsqd.wait_until_async(WAIT, |n| n.finished_count("a", "x") == 1)
            .await
    );
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    let text = http.stats_text(&StatsQuery::new()).await.unwrap();
    assert!(text.starts_with("nsqd v1.3.0"), "{text}");
    assert!(text.contains("\nHealth: OK\n"), "{text}");
    assert!(
        text.contains("[a              ] depth: 0     be-depth: 0     msgs: 1"),
        "{text}"
    );
    assert!(
        text.contains("      [x                        ] depth: 0"),
        "{text}"
    );
    assert!(text.contains("] state: 3 inflt: 0    rdy: "), "{text}");
    consumer.stop().await;
}

#[actix_rt::test]
async fn runtime_config() {
    let nsqd = TestNsqd::start().unwrap();
    let http = client(&nsqd);
    assert_eq!(http.config_get("max_msg_size").await.unwrap(), 1_048_576);
    assert_eq!(
        http.config_get("msg_timeout").await.unwrap(),
        60_000_000_000_i64
    );
    assert_eq!(http.config_get("log_level").await.unwrap(), 2);
    assert_eq!(http.config_set("log_level", "DEBUG").await.unwrap(), 1);
    assert_eq!(http.config_get("log_level").await.unwrap(), 1);
    assert_eq!(
        http.config_get("nsqlookupd_tcp_addresses").await.unwrap(),
        serde_json::json!([])
    );
    let set = http
        .config_set("nsqlookupd_tcp_addresses", r#"["127.0.0.1:4160"]"#)
        .await
        .unwrap();
    assert_eq!(set, serde_json::json!(["127.0.0.1:4160"]));
}

#[actix_rt::test]
async fn timeouts_refusals_and_size_bounds() {
    // A server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = NsqdHttpClient::builder(silent.local_addr().unwrap().to_string())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(matches!(http.ping().await, Err(Error::Timeout(_))));
    assert!(matches!(
        http.publish("t", "x", None).await,
        Err(Error::Timeout(_))
    ));
    // Nobody listening: no status.
    let port = silent.local_addr().unwrap().port();
    drop(silent);
    let refused = NsqdHttpClient::new(format!("127.0.0.1:{port}")).unwrap();
    assert_eq!(http_error(refused.ping().await).0, 0);
    // An answer over the bound.
    let nsqd = TestNsqd::start().unwrap();
    nsqd.create_channel("t", "c").unwrap();
    let small = NsqdHttpClient::builder(nsqd.http_url())
        .max_response_size(64)
        .build()
        .unwrap();
    let (status, message) = http_error(small.stats(&StatsQuery::new()).await);
    assert_eq!(status, 200);
    assert!(message.contains("64 bytes"), "{message}");
    // A stopped nsqd's HTTP API goes away with it, and comes back on restart.
    let http = client(&nsqd);
    nsqd.stop().unwrap();
    assert_eq!(http_error(http.ping().await).0, 0);
    nsqd.restart().unwrap();
    http.ping().await.unwrap();
}

#[actix_rt::test]
async fn server_answers_requests_the_client_never_sends() {
    let nsqd = TestNsqd::start().unwrap();
    let cases: &[(&str, &str, &[u8], u16, &str)] = &[
        (
            "POST",
            "/pub",
            b"x",
            400,
            r#"{"message":"MISSING_ARG_TOPIC"}"#,
        ),
        (
            "POST",
            "/pub?topic=a%20b",
            b"x",
            400,
            r#"{"message":"INVALID_TOPIC"}"#,
        ),
        (
            "POST",
            "/pub?topic=t",
            b"",
            400,
            r#"{"message":"MSG_EMPTY"}"#,
        ),
        (
            "POST",
            "/pub?topic=t&defer=soon",
            b"x",
            400,
            r#"{"message":"INVALID_DEFER"}"#,
        ),
        (
            "POST",
            "/pub?topic=t&defer=-1",
            b"x",
            400,
            r#"{"message":"INVALID_DEFER"}"#,
        ),
        (
            "POST",
            "/pub?topic=%zz",
            b"x",
            400,
            r#"{"message":"INVALID_REQUEST"}"#,
        ),
        (
            "POST",
            "/mpub?topic=t&binary=true",
            b"\0\0\0\0",
            413,
            r#"{"message":"BAD_BODY"}"#,
        ),
        (
            "POST",
            "/mpub?topic=t&binary=1",
            b"\0\0\0\x01\0\0\0\x05ab",
            413,
            r#"{"message":"BAD_MESSAGE"}"#,
        ),
        (
            "POST",
            "/channel/create?topic=t",
            b"",
            400,
            r#"{"message":"MISSING_ARG_CHANNEL"}"#,
        ),
        (
            "POST",
            "/channel/create?topic=t&channel=a%20b",
            b"",
            400,
            r#"{"message":"INVALID_ARG_CHANNEL"}"#,
        ),
        (
            "POST",
            "/channel/create?topic=a%20b&channel=c",
            b"",
            400,
            r#"{"message":"INVALID_ARG_TOPIC"}"#,
        ),
        (
            "POST",
            "/topic/empty?topic=a%20b",
            b"",
            400,
            r#"{"message":"INVALID_TOPIC"}"#,
        ),
        (
            "GET",
            "/pub?topic=t",
            b"",
            405,
            r#"{"message":"METHOD_NOT_ALLOWED"}"#,
        ),
        ("GET", "/nothing", b"", 404, r#"{"message":"NOT_FOUND"}"#),
        (
            "PUT",
            "/config/log_level",
            b"",
            413,
            r#"{"message":"INVALID_VALUE"}"#,
        ),
        ("POST", "/topic/create?topic=t", b"", 200, ""),
        ("POST", "/pub?topic=t", b"x", 200, "OK"),
        ("POST", "/mpub?topic=t", b"a\n\nb\n", 200, "OK"),
    ];
    for (method, target, body, status, answer) in cases {
        let (got, head, text) = raw(&nsqd, method, target, body).await;
        assert_eq!(
            (got, text.as_str()),
            (*status, *answer),
            "{method} {target}"
        );
        assert!(
            head.contains("X-NSQ-Content-Type: nsq; version=1.0"),
            "{head}"
        );
    }
    // mpub dropped the empty line: 1 + 2 messages in the topic (no channel yet).
    assert_eq!(nsqd.topic_depth("t"), 3);
    let (status, head, text) = raw(&nsqd, "GET", "/ping", b"").await;
    assert_eq!((status, text.as_str()), (200, "OK"));
    assert!(!head.contains("X-NSQ-Content-Type"), "{head}");
    // nsqd's plain listener under --tls-required refuses everything.
    let strict = TestNsqd::builder()
        .tls(true)
        .tls_required(true)
        .start()
        .unwrap();
    let (status, _, text) = raw(&strict, "GET", "/info", b"").await;
    assert_eq!(status, 403);
    assert!(text.contains("TLS_REQUIRED"), "{text}");
}
