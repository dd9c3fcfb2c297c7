//! `LookupdHttpClient` against the test nsqlookupd: every call, registration by test nsqds
//! (create, stop, kill, restart, tombstones, inactivity), faults, legacy answers, HTTPS, and
//! a consumer that discovers a test nsqd through it.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_nsq::{
    testing::{LookupFault, TestLookupd, TestNsqd},
    Consumer, Delivery, Error, LookupResponse, LookupdHttpClient, TlsConfig,
};

const WAIT: Duration = Duration::from_secs(20);
const CA: &[u8] = include_bytes!("../src/testing/certs/ca.pem");
const OTHER_CA: &[u8] = include_bytes!("../src/testing/certs/other-ca.pem");

fn client(lookupd: &TestLookupd) -> LookupdHttpClient {
    LookupdHttpClient::new(lookupd.url()).unwrap()
}

fn http_error(result: Result<impl std::fmt::Debug, Error>) -> (u16, String) {
    match result {
        Err(Error::Http { status, message }) => (status, message),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

/// Polls until `done` holds for the client's answer, yielding to the actix runtime.
async fn eventually<T, F, Fut>(mut call: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
    T: std::fmt::Debug,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let answer = call().await.unwrap();
        if done(&answer) {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up at {answer:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tcp_ports(answer: &LookupResponse) -> Vec<u16> {
    answer.producers.iter().map(|p| p.tcp_port).collect()
}

#[actix_rt::test]
async fn ping_info_and_the_registry() {
    let lookupd = TestLookupd::start().unwrap();
    let http = client(&lookupd);
    http.ping().await.unwrap();
    assert_eq!(http.info().await.unwrap().version, "1.3.0");
    assert!(http.topics().await.unwrap().is_empty());
    // An unknown topic is "no producers", not an error.
    assert_eq!(http.lookup("t").await.unwrap(), LookupResponse::default());
    assert!(http.channels("t").await.unwrap().is_empty());
    http.create_topic("t").await.unwrap();
    http.create_channel("u", "c").await.unwrap();
    assert_eq!(http.topics().await.unwrap(), ["t", "u"]);
    assert_eq!(http.channels("u").await.unwrap(), ["c"]);
    let found = http.lookup("u").await.unwrap();
    assert_eq!(
        (found.channels, found.producers),
        (vec!["c".to_owned()], vec![])
    );
    http.delete_channel("u", "c").await.unwrap();
    assert_eq!(
        http_error(http.delete_channel("u", "c").await),
        (404, "CHANNEL_NOT_FOUND".into())
    );
    http.delete_topic("t").await.unwrap();
    assert_eq!(http.topics().await.unwrap(), ["u"]);
    assert!(http.nodes().await.unwrap().is_empty());
    assert!(lookupd
        .requests()
        .contains(&"GET /lookup?topic=t".to_owned()));
}

#[actix_rt::test]
async fn bad_input_is_refused_before_sending() {
    let lookupd = TestLookupd::start().unwrap();
    let http = client(&lookupd);
    fn invalid<T>(r: &Result<T, Error>) -> bool {
        matches!(r, Err(Error::InvalidName { .. }))
    }
    assert!(invalid(&http.lookup("a b").await));
    assert!(invalid(&http.channels("").await));
    assert!(invalid(&http.create_topic("x\ny").await));
    assert!(invalid(&http.create_channel("t", "c c").await));
    assert!(invalid(
        &http.tombstone_topic_producer("#ephemeral", "h:1").await
    ));
    assert!(matches!(
        http.tombstone_topic_producer("t", "no-port").await,
        Err(Error::Config { field: "node", .. })
    ));
    assert!(lookupd.requests().is_empty());
    assert!(matches!(
        LookupdHttpClient::new("ftp://h:1"),
        Err(Error::Config {
            field: "base_url",
            ..
        })
    ));
}

#[actix_rt::test]
async fn test_nsqds_register_and_unregister() {
    let lookupd = TestLookupd::start().unwrap();
    let http = client(&lookupd);
    let nsqd = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    let other = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    nsqd.create_topic("t").unwrap();
    other.publish("t", "x").unwrap();
    nsqd.create_channel("t", "c").unwrap();
    let found = http.lookup("t").await.unwrap();
    assert_eq!(found.channels, ["c"]);
    let mut ports = tcp_ports(&found);
    ports.sort_unstable();
    let mut expected = vec![nsqd.addr().port(), other.addr().port()];
    expected.sort_unstable();
    assert_eq!(ports, expected);
    let mine = found
        .producers
        .iter()
        .find(|p| p.tcp_port == nsqd.addr().port())
        .unwrap();
    assert_eq!(mine.broadcast_address, "127.0.0.1");
    assert_eq!(mine.http_port, nsqd.http_addr().port());
    assert_eq!(mine.version, "1.3.0");
    assert_eq!(mine.tcp_address(), Some(nsqd.addr().to_string()));

    let nodes = http.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    let node = nodes
        .iter()
        .find(|n| n.producer.tcp_port == nsqd.addr().port())
        .unwrap();
    assert_eq!(
        (node.topics.clone(), node.tombstones.clone()),
        (vec!["t".to_owned()], vec![false])
    );

    // A graceful stop closes the lookupd connection: the producer is gone at once.
    nsqd.stop().unwrap();
    assert_eq!(
        tcp_ports(&http.lookup("t").await.unwrap()),
        [other.addr().port()]
    );
    assert_eq!(http.nodes().await.unwrap().len(), 1);
    // Restarting registers what survived the stop.
    nsqd.restart().unwrap();
    assert_eq!(http.lookup("t").await.unwrap().producers.len(), 2);
    // Deleting the channel unregisters this nsqd from it; nsqlookupd keeps the key.
    nsqd.delete_channel("t", "c");
    nsqd.delete_topic("t");
    assert_eq!(
        tcp_ports(&http.lookup("t").await.unwrap()),
        [other.addr().port()]
    );
    assert_eq!(http.channels("t").await.unwrap(), ["c"]);
    // An ephemeral channel goes from nsqlookupd with its last producer.
    other.create_channel("t", "tail#ephemeral").unwrap();
    assert_eq!(http.channels("t").await.unwrap(), ["c", "tail#ephemeral"]);
    other.delete_channel("t", "tail#ephemeral");
    assert_eq!(http.channels("t").await.unwrap(), ["c"]);
    // Kill and drop close the connection too.
    other.kill().unwrap();
    assert!(http.lookup("t").await.unwrap().producers.is_empty());
    nsqd.create_topic("t").unwrap();
    assert_eq!(http.lookup("t").await.unwrap().producers.len(), 1);
    drop(nsqd);
    assert!(http.lookup("t").await.unwrap().producers.is_empty());
    assert!(http.nodes().await.unwrap().is_empty());
    // The topic stays listed, as in nsqlookupd.
    assert_eq!(http.topics().await.unwrap(), ["t"]);
}

#[actix_rt::test]
async fn tombstones_hide_a_producer_for_their_lifetime() {
    let lookupd = TestLookupd::builder()
        .tombstone_lifetime(Duration::from_secs(5))
        .start()
        .unwrap();
    let http = client(&lookupd);
    let nsqd = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    nsqd.create_topic("t").unwrap();
    nsqd.create_topic("u").unwrap();
    let producer = http.lookup("t").await.unwrap().producers.remove(0);
    let node = producer.http_address().unwrap();
    http.tombstone_topic_producer("t", &node).await.unwrap();
    assert!(http.lookup("t").await.unwrap().producers.is_empty());
    assert_eq!(http.lookup("u").await.unwrap().producers.len(), 1);
    let nodes = http.nodes().await.unwrap();
    assert!(nodes[0].is_tombstoned("t") && !nodes[0].is_tombstoned("u"));
    // After the lifetime the producer is back.
    eventually(|| http.lookup("t"), |r| r.producers.len() == 1).await;
    assert!(!http.nodes().await.unwrap()[0].is_tombstoned("t"));
    // Tombstoning an address nobody has changes nothing.
    http.tombstone_topic_producer("t", "10.9.9.9:4151")
        .await
        .unwrap();
    assert_eq!(http.lookup("t").await.unwrap().producers.len(), 1);
}

#[actix_rt::test]
async fn producers_that_stop_pinging_become_inactive() {
    // nsqd pings every 15 s; with a shorter timeout its registration goes stale.
    let lookupd = TestLookupd::builder()
        .inactive_producer_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    let http = client(&lookupd);
    let nsqd = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    nsqd.create_topic("t").unwrap();
    assert!(
        lookupd
            .wait_until_async(WAIT, |l| l.producers("t").is_empty())
            .await
    );
    assert!(http.lookup("t").await.unwrap().producers.is_empty());
    assert!(http.nodes().await.unwrap().is_empty());
    assert_eq!(http.topics().await.unwrap(), ["t"]);
}

#[actix_rt::test]
async fn lookup_faults() {
    let lookupd = TestLookupd::start().unwrap();
    let nsqd = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    nsqd.create_topic("t").unwrap();
    let http = LookupdHttpClient::builder(lookupd.url())
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    lookupd.set_lookup_fault(Some(LookupFault::Status(500)));
    assert_eq!(
        http_error(http.lookup("t").await),
        (500, "INTERNAL_ERROR".into())
    );
    lookupd.set_lookup_fault(Some(LookupFault::Garbage));
    let (status, message) = http_error(http.lookup("t").await);
    assert_eq!(status, 200);
    assert!(message.starts_with("undecodable answer"), "{message}");
    lookupd.set_lookup_fault(Some(LookupFault::Slow(Duration::from_secs(3))));
    assert!(matches!(http.lookup("t").await, Err(Error::Timeout(_))));
    lookupd.set_lookup_fault(Some(LookupFault::HangUp));
    assert_eq!(http_error(http.lookup("t").await).0, 0);
    // Other routes are not affected.
    assert_eq!(http.topics().await.unwrap(), ["t"]);
    lookupd.set_lookup_fault(None);
    assert_eq!(http.lookup("t").await.unwrap().producers.len(), 1);
}

#[actix_rt::test]
async fn legacy_answers_are_understood() {
    let lookupd = TestLookupd::start().unwrap();
    let nsqd = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    nsqd.create_channel("t", "c").unwrap();
    lookupd.set_legacy_answers(true);
    let http = client(&lookupd);
    assert_eq!(http.info().await.unwrap().version, "1.3.0");
    let found = http.lookup("t").await.unwrap();
    assert_eq!(tcp_ports(&found), [nsqd.addr().port()]);
    assert_eq!(found.channels, ["c"]);
    assert_eq!(http.topics().await.unwrap(), ["t"]);
    assert_eq!(http.channels("t").await.unwrap(), ["c"]);
    assert_eq!(http.nodes().await.unwrap()[0].topics, ["t"]);
    assert_eq!(
        http.lookup("missing").await.unwrap(),
        LookupResponse::default()
    );
    http.create_topic("x").await.unwrap();
    assert_eq!(
        http_error(http.delete_channel("x", "nope").await),
        (404, "CHANNEL_NOT_FOUND".into())
    );
}

#[actix_rt::test]
async fn https_with_the_test_ca() {
    let lookupd = TestLookupd::builder().tls(true).start().unwrap();
    assert!(lookupd.url().starts_with("https://127.0.0.1:"));
    let trusted = TlsConfig::new().add_root_certificate_pem(CA).unwrap();
    let http = LookupdHttpClient::builder(lookupd.url())
        .tls(trusted)
        .build()
        .unwrap();
    http.ping().await.unwrap();
    http.create_topic("t").await.unwrap();
    assert_eq!(http.topics().await.unwrap(), ["t"]);
    // The webpki roots alone, or the wrong CA, do not trust the test certificate.
    let (status, message) = http_error(client(&lookupd).ping().await);
    assert_eq!(status, 0, "{message}");
    let wrong = TlsConfig::new()
        .built_in_roots(false)
        .add_root_certificate_pem(OTHER_CA)
        .unwrap();
    let http = LookupdHttpClient::builder(lookupd.url())
        .tls(wrong)
        .build()
        .unwrap();
    assert_eq!(http_error(http.ping().await).0, 0);
}

fn counting_consumer(topic: &str, lookupd: &TestLookupd, handled: Arc<AtomicUsize>) -> Consumer {
    Consumer::builder(topic, "c")
        .lookupd(lookupd.url())
        .lookupd_poll_interval(Duration::from_millis(50))
        .lookupd_poll_jitter(0.0)
        .handler_fn(move |_: Delivery| {
            let handled = handled.clone();
            async move {
                handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()
        .unwrap()
}

#[actix_rt::test]
async fn a_consumer_discovers_a_test_nsqd_through_lookupd() {
    let lookupd = TestLookupd::start().unwrap();
    let nsqd = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    nsqd.create_topic("events").unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let consumer = counting_consumer("events", &lookupd, handled.clone());
    nsqd.publish("events", "hello").unwrap();
    assert!(
        nsqd.wait_until_async(WAIT, |n| n.finished_count("events", "c") == 1)
            .await
    );
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    assert!(lookupd
        .requests()
        .iter()
        .any(|r| r == "GET /lookup?topic=events"));
    consumer.stop().await;
}

#[actix_rt::test]
async fn a_consumer_finds_an_nsqd_that_appears_later_through_a_legacy_lookupd() {
    let lookupd = TestLookupd::start().unwrap();
    lookupd.set_legacy_answers(true);
    let handled = Arc::new(AtomicUsize::new(0));
    // The topic is unknown at first: lookupd answers 404 TOPIC_NOT_FOUND.
    let consumer = counting_consumer("later", &lookupd, handled.clone());
    let nsqd = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    nsqd.publish("later", "one").unwrap();
    nsqd.publish("later", "two").unwrap();
    assert!(
        nsqd.wait_until_async(WAIT, |n| n.finished_count("later", "c") == 2)
            .await
    );
    assert_eq!(handled.load(Ordering::SeqCst), 2);
    consumer.stop().await;
}
