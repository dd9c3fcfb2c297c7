//! The crate's own client negotiating TLS, snappy and deflate with the test nsqd, through
//! the public API: a [`Producer`] whose connection events say what was negotiated, and the
//! test nsqd's view of the same connection.

use std::net::SocketAddr;

use actix::{Actor, Handler, Recipient};
use actix_nsq::{
    protocol::ErrorCode,
    testing::{ClientInfo, TestNsqd, TestNsqdBuilder},
    Compression, ConnectionConfig, ConnectionEvent, Error, Negotiated, Producer, TlsConfig,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use crate::{
    layers::DEFLATE_SYNC_MARKER,
    raw::PATIENCE,
    upgrades_raw::{json_then_snappy_chunk, past_first_frame},
};

/// Forwards connection events to a channel the test reads.
struct Forward(mpsc::UnboundedSender<ConnectionEvent>);

impl Actor for Forward {
    type Context = actix::Context<Self>;
}

impl Handler<ConnectionEvent> for Forward {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent, _: &mut Self::Context) {
        let _ = self.0.send(event);
    }
}

struct Client {
    producer: Producer,
    events: mpsc::UnboundedReceiver<ConnectionEvent>,
}

impl Client {
    fn start(addr: impl ToString, config: ConnectionConfig) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let recipient: Recipient<ConnectionEvent> = Forward(tx).start().recipient();
        let producer = Producer::builder()
            .nsqd(addr.to_string())
            .connection(config)
            .events(recipient)
            .start()
            .unwrap();
        Self { producer, events }
    }

    /// What the first connection attempt came to: the negotiation, or why it failed.
    async fn outcome(&mut self) -> Result<Negotiated, Error> {
        loop {
            let event = tokio::time::timeout(PATIENCE, self.events.recv())
                .await
                .expect("no connection event")
                .unwrap();
            match event {
                ConnectionEvent::Connected { negotiated, .. } => return Ok(*negotiated),
                ConnectionEvent::Disconnected { error, .. } => return Err(error),
                _ => {}
            }
        }
    }

    /// The next `Disconnected` event's error.
    async fn disconnected(&mut self) -> Error {
        loop {
            let event = tokio::time::timeout(PATIENCE, self.events.recv())
                .await
                .expect("no disconnection")
                .unwrap();
            if let ConnectionEvent::Disconnected { error, .. } = event {
                return error;
            }
        }
    }
}

fn only_client(nsqd: &TestNsqd) -> ClientInfo {
    let clients = nsqd.clients();
    assert_eq!(clients.len(), 1, "{clients:?}");
    clients.into_iter().next().unwrap()
}

/// Publishes small, batched and 1 MiB messages; all of them must arrive intact.
async fn publish_a_mix(producer: &Producer, nsqd: &TestNsqd, topic: &str) {
    nsqd.create_channel(topic, "check").unwrap();
    let big = vec![b'x'; 1024 * 1024];
    producer.publish(topic, "small").await.unwrap();
    let batch: Vec<String> = (0..100).map(|i| format!("batched {i}")).collect();
    producer.multi_publish(topic, batch).await.unwrap();
    producer.publish(topic, big).await.unwrap();
    assert_eq!(nsqd.depth(topic, "check"), 102);
}

/// Starts `builder`, connects with `config`, publishes, and returns what both sides saw.
async fn connect_and_publish(
    builder: TestNsqdBuilder,
    config: ConnectionConfig,
) -> (Negotiated, ClientInfo) {
    let nsqd = builder.start().unwrap();
    let mut client = Client::start(nsqd.addr(), config);
    let negotiated = client.outcome().await.unwrap();
    let info = only_client(&nsqd);
    publish_a_mix(&client.producer, &nsqd, "mix").await;
    client.producer.stop().await;
    (negotiated, info)
}

fn tls() -> ConnectionConfig {
    ConnectionConfig::new().tls(TestNsqd::tls_config())
}

#[actix_rt::test]
async fn tls_alone() {
    let (negotiated, info) = connect_and_publish(TestNsqd::builder().tls(true), tls()).await;
    assert!(negotiated.tls && negotiated.identify.tls_v1);
    assert_eq!(negotiated.compression, Compression::None);
    assert!(info.tls && !info.snappy && !info.deflate);
}

#[actix_rt::test]
async fn tls_and_snappy() {
    let config = tls().snappy(true);
    let (negotiated, info) = connect_and_publish(TestNsqd::builder().tls(true), config).await;
    assert!(negotiated.tls);
    assert_eq!(negotiated.compression, Compression::Snappy);
    assert!(info.tls && info.snappy);
}

#[actix_rt::test]
async fn tls_and_deflate() {
    let config = tls().deflate(5);
    let (negotiated, info) = connect_and_publish(TestNsqd::builder().tls(true), config).await;
    assert!(negotiated.tls);
    assert_eq!(negotiated.compression, Compression::Deflate { level: 5 });
    assert!(info.tls && info.deflate);
    assert_eq!(info.deflate_level, 5);
}

#[actix_rt::test]
async fn snappy_alone() {
    let config = ConnectionConfig::new().snappy(true);
    let (negotiated, info) = connect_and_publish(TestNsqd::builder(), config).await;
    assert_eq!(
        (negotiated.tls, negotiated.compression),
        (false, Compression::Snappy)
    );
    assert!(info.snappy && !info.tls);
}

#[actix_rt::test]
async fn deflate_clamped_to_the_server_maximum() {
    let config = ConnectionConfig::new().deflate(9);
    let builder = TestNsqd::builder().max_deflate_level(3);
    let (negotiated, info) = connect_and_publish(builder, config).await;
    assert_eq!(negotiated.compression, Compression::Deflate { level: 3 });
    assert_eq!(negotiated.identify.max_deflate_level, 3);
    assert_eq!(info.deflate_level, 3);
}

#[actix_rt::test]
async fn a_client_certificate_is_required_and_accepted() {
    let builder = TestNsqd::builder().tls(true).tls_client_auth(true);
    let config = ConnectionConfig::new().tls(TestNsqd::tls_config_with_client_cert());
    let (negotiated, info) = connect_and_publish(builder, config).await;
    assert!(negotiated.tls && info.tls);
}

#[actix_rt::test]
async fn without_a_client_certificate_the_handshake_fails() {
    let nsqd = TestNsqd::builder()
        .tls(true)
        .tls_client_auth(true)
        .start()
        .unwrap();
    let mut client = Client::start(nsqd.addr(), tls());
    match client.outcome().await {
        Err(Error::Tls { message, .. }) => {
            assert!(message.contains("CertificateRequired"), "{message}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(
        nsqd.wait_until_async(PATIENCE, |n| n.clients().is_empty())
            .await
    );
    client.producer.stop().await;
    // Only IDENTIFY ever got through, however often the producer retried.
    assert!(nsqd.commands().iter().all(|c| c.name() == "IDENTIFY"));
}

#[actix_rt::test]
async fn a_server_with_a_certificate_from_another_ca_is_refused() {
    let nsqd = TestNsqd::builder().tls(true).start().unwrap();
    let other_ca = TlsConfig::new()
        .built_in_roots(false)
        .add_root_certificate_pem(actix_nsq::testing::certs::OTHER_CA_PEM)
        .unwrap();
    let mut client = Client::start(nsqd.addr(), ConnectionConfig::new().tls(other_ca));
    assert!(matches!(client.outcome().await, Err(Error::Tls { .. })));
    client.producer.stop().await;
}

#[actix_rt::test]
async fn tls_required_refuses_a_plaintext_client() {
    let nsqd = TestNsqd::builder()
        .tls(true)
        .tls_required(true)
        .start()
        .unwrap();
    let mut client = Client::start(nsqd.addr(), ConnectionConfig::new());
    let negotiated = client.outcome().await.unwrap();
    assert!(!negotiated.tls && !negotiated.identify.tls_v1);
    assert!(client.producer.publish("t", "plain").await.is_err());
    match client.disconnected().await {
        Error::Server(e) => {
            assert_eq!(e.code, ErrorCode::Invalid);
            assert_eq!(e.message, "cannot PUB in current state (TLS required)");
        }
        other => panic!("expected E_INVALID, got {other:?}"),
    }
    client.producer.stop().await;
    assert_eq!(nsqd.topic_depth("t"), 0);
}

#[actix_rt::test]
async fn tls_asked_of_a_server_without_it_fails_closed() {
    let nsqd = TestNsqd::start().unwrap();
    let mut client = Client::start(nsqd.addr(), tls());
    match client.outcome().await {
        Err(Error::Tls { message, .. }) => {
            assert!(message.contains("does not offer TLS"), "{message}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    client.producer.stop().await;
    // The client hung up after the reply: nothing but IDENTIFY, never in plaintext.
    assert!(
        nsqd.wait_until_async(PATIENCE, |n| n.clients().is_empty())
            .await
    );
    assert!(nsqd.commands().iter().all(|c| c.name() == "IDENTIFY"));
}

#[actix_rt::test]
async fn auth_over_tls() {
    let nsqd = TestNsqd::builder()
        .tls(true)
        .auth_secret("s3cret")
        .start()
        .unwrap();
    let mut client = Client::start(nsqd.addr(), tls().snappy(true).auth_secret("s3cret"));
    let negotiated = client.outcome().await.unwrap();
    assert!(negotiated.tls && negotiated.identify.auth_required);
    assert_eq!(negotiated.auth.unwrap().identity, "test-identity");
    let info = only_client(&nsqd);
    assert!(info.tls && info.snappy);
    assert_eq!(info.auth_identity.as_deref(), Some("test-identity"));
    client.producer.publish("authed", "hello").await.unwrap();
    let names: Vec<String> = nsqd
        .commands()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(names, ["IDENTIFY", "AUTH", "PUB"]);
    client.producer.stop().await;
}

/// Passes one connection through to `upstream`, but holds nsqd's first bytes back until
/// `complete` says the JSON reply and the compressed `OK` are both there, then hands them
/// to the client in one write, as a busy network would.
async fn coalescing_proxy(upstream: SocketAddr, complete: fn(&[u8]) -> bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(upstream).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        actix_rt::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        });
        let mut held = Vec::new();
        while !complete(&held) {
            let mut chunk = [0u8; 4096];
            let n = server_read.read(&mut chunk).await.unwrap();
            assert!(n > 0, "nsqd closed before the upgrade");
            held.extend_from_slice(&chunk[..n]);
        }
        client_write.write_all(&held).await.unwrap();
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    addr
}

#[actix_rt::test]
async fn a_compressed_ok_in_the_same_read_as_the_json_reply() {
    fn deflate_complete(held: &[u8]) -> bool {
        past_first_frame(held).is_some_and(|rest| rest.ends_with(DEFLATE_SYNC_MARKER))
    }
    type Case = (ConnectionConfig, fn(&[u8]) -> bool, Compression);
    let cases: [Case; 2] = [
        (
            ConnectionConfig::new().snappy(true),
            json_then_snappy_chunk,
            Compression::Snappy,
        ),
        (
            ConnectionConfig::new().deflate(6),
            deflate_complete,
            Compression::Deflate { level: 6 },
        ),
    ];
    for (config, complete, compression) in cases {
        let nsqd = TestNsqd::start().unwrap();
        let proxy = coalescing_proxy(nsqd.addr(), complete).await;
        let mut client = Client::start(proxy, config);
        assert_eq!(client.outcome().await.unwrap().compression, compression);
        publish_a_mix(&client.producer, &nsqd, "coalesced").await;
        client.producer.stop().await;
    }
}

#[actix_rt::test]
async fn the_tls_config_trusts_the_test_server_by_name_too() {
    let nsqd = TestNsqd::builder().tls(true).start().unwrap();
    let addr = format!("localhost:{}", nsqd.addr().port());
    let mut client = Client::start(addr, tls());
    assert!(client.outcome().await.unwrap().tls);
    client.producer.publish("by-name", "hello").await.unwrap();
    client.producer.stop().await;
    assert_eq!(nsqd.topic_depth("by-name"), 1);
}
