use std::io::Write;

use serde_json::json;
use tokio::io::duplex;
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::{
    protocol::{ErrorCode, ServerError},
    transport::{
        fake_nsqd::{listen, ServerConn},
        tls::server_acceptor,
    },
};

const CA: &[u8] = include_bytes!("../testing/certs/ca.pem");
const OTHER_CA: &[u8] = include_bytes!("../testing/certs/other-ca.pem");
const SERVER_CERT: &[u8] = include_bytes!("../testing/certs/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../testing/certs/server.key");
const CLIENT_CERT: &[u8] = include_bytes!("../testing/certs/client.pem");
const CLIENT_KEY: &[u8] = include_bytes!("../testing/certs/client.key");

/// nsqd 1.3's IDENTIFY reply with every feature off, with `features` merged over it.
fn nsqd_reply(features: serde_json::Value) -> serde_json::Value {
    let mut reply = json!({
        "max_rdy_count": 2500, "version": "1.3.0", "max_msg_timeout": 900000,
        "msg_timeout": 60000, "tls_v1": false, "deflate": false, "deflate_level": 6,
        "max_deflate_level": 6, "snappy": false, "sample_rate": 0, "auth_required": false,
        "output_buffer_size": 16384, "output_buffer_timeout": 250,
        "topology_region": "", "topology_zone": ""
    });
    for (key, value) in features.as_object().unwrap() {
        reply[key] = value.clone();
    }
    reply
}

fn config() -> HandshakeConfig {
    let mut cfg = HandshakeConfig::new(IdentifyRequest::default());
    // Generous: the deadline is not what most tests are about.
    cfg.timeout = Duration::from_secs(20);
    cfg
}

fn tls_config(root: &[u8]) -> TlsConfig {
    TlsConfig::new()
        .built_in_roots(false)
        .add_root_certificate_pem(root)
        .unwrap()
}

fn acceptor(require_client_cert: bool) -> TlsAcceptor {
    server_acceptor(SERVER_CERT, SERVER_KEY, require_client_cert.then_some(CA)).unwrap()
}

fn heartbeat() -> Frame {
    Frame::Response(Response::Heartbeat)
}

/// The next frame after the handshake, from `read_buf` first and then the stream.
async fn next_frame(established: &mut Established) -> Frame {
    let mut codec = NsqCodec::default();
    loop {
        if let Some(frame) = codec.decode(&mut established.read_buf).unwrap() {
            return frame;
        }
        let n = established
            .stream
            .read_buf(&mut established.read_buf)
            .await
            .unwrap();
        assert!(n > 0, "stream ended");
    }
}

/// Writes NOP over the established stream and checks that the server reads it.
async fn assert_usable(established: &mut Established, server: &mut ServerConn) {
    established.stream.write_all(b"NOP\n").await.unwrap();
    established.stream.flush().await.unwrap();
    assert_eq!(&server.line().await[..], b"NOP");
}

#[tokio::test]
async fn plain_handshake_negotiates_nothing_and_leaves_a_usable_stream() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        let identify = conn.identify().await;
        assert!(identify.feature_negotiation && !identify.tls_v1 && !identify.snappy);
        conn.send_json(nsqd_reply(json!({"max_rdy_count": 100})))
            .await;
        conn
    });
    let mut established = connect(&addr, &config()).await.unwrap();
    let mut conn = server.await.unwrap();
    let negotiated = &established.negotiated;
    assert_eq!(negotiated.identify.max_rdy_count, 100);
    assert_eq!(negotiated.identify.version, "1.3.0");
    assert_eq!(
        (negotiated.tls, negotiated.compression),
        (false, Compression::None)
    );
    assert_eq!(negotiated.auth, None);
    assert!(established.read_buf.is_empty());
    assert_usable(&mut established, &mut conn).await;
}

#[tokio::test]
async fn accepts_a_plain_ok_from_an_old_nsqd() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        conn.identify().await;
        conn.send_ok().await;
    });
    let established = connect(&addr, &config()).await.unwrap();
    server.await.unwrap();
    assert_eq!(established.negotiated.identify, IdentifyResponse::legacy());
}

#[tokio::test]
async fn upgrades_to_tls_verified_against_a_custom_root() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        assert!(conn.identify().await.tls_v1);
        conn.send_json(nsqd_reply(json!({"tls_v1": true}))).await;
        let mut conn = conn.upgrade_tls(&acceptor(false)).await.unwrap();
        conn.send_ok().await;
        conn
    });
    let mut cfg = config();
    cfg.tls = Some(tls_config(CA));
    // 127.0.0.1 is checked as an IP SAN.
    let mut established = connect(&addr, &cfg).await.unwrap();
    let mut conn = server.await.unwrap();
    assert!(established.negotiated.tls);
    assert_usable(&mut established, &mut conn).await;
}

#[tokio::test]
async fn tls_with_the_wrong_root_fails() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        conn.identify().await;
        conn.send_json(nsqd_reply(json!({"tls_v1": true}))).await;
        assert!(conn.upgrade_tls(&acceptor(false)).await.is_err());
    });
    let mut cfg = config();
    cfg.tls = Some(tls_config(OTHER_CA));
    let err = connect(&addr, &cfg).await.unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message: m, .. } if m.contains("UnknownIssuer")),
        "{err}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn fails_closed_when_tls_was_asked_for_and_not_offered() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        assert!(conn.identify().await.tls_v1);
        conn.send_json(nsqd_reply(json!({"tls_v1": false}))).await;
        conn.rest().await
    });
    let mut cfg = config();
    cfg.tls = Some(tls_config(CA));
    cfg.subscribe = Some((Topic::new("t").unwrap(), Channel::new("c").unwrap()));
    let err = connect(&addr, &cfg).await.unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message: m, .. } if m.starts_with("server does not offer TLS")),
        "{err}"
    );
    assert_eq!(
        server.await.unwrap(),
        b"",
        "nothing may follow in plaintext"
    );
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    for with_cert in [true, false] {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            let mut conn = ServerConn::accept(&listener).await;
            conn.identify().await;
            conn.send_json(nsqd_reply(json!({"tls_v1": true}))).await;
            if let Ok(mut conn) = conn.upgrade_tls(&acceptor(true)).await {
                conn.send_ok().await;
            }
        });
        let mut tls = tls_config(CA);
        if with_cert {
            tls = tls.client_certificate_pem(CLIENT_CERT, CLIENT_KEY).unwrap();
        }
        let mut cfg = config();
        cfg.tls = Some(tls);
        let result = connect(&addr, &cfg).await;
        server.await.unwrap();
        match result {
            Ok(established) => assert!(with_cert && established.negotiated.tls),
            Err(Error::Tls { message: m, .. }) => assert!(!with_cert, "{m}"),
            Err(other) => panic!("{other}"),
        }
    }
}

#[tokio::test]
async fn tls_then_snappy_then_sub() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        let identify = conn.identify().await;
        assert!(identify.tls_v1 && identify.snappy);
        conn.send_json(nsqd_reply(json!({"tls_v1": true, "snappy": true})))
            .await;
        let mut conn = conn.upgrade_tls(&acceptor(false)).await.unwrap();
        conn.send_ok().await;
        let mut conn = conn.upgrade(|s| Box::new(SnappyStream::new(s)));
        conn.send_ok().await;
        assert_eq!(&conn.line().await[..], b"SUB topic chan");
        conn.send_ok().await;
        conn
    });
    let mut cfg = config();
    cfg.identify.snappy = true;
    cfg.tls = Some(tls_config(CA).server_name("localhost").unwrap());
    cfg.subscribe = Some((Topic::new("topic").unwrap(), Channel::new("chan").unwrap()));
    let mut established = connect(&addr, &cfg).await.unwrap();
    let mut conn = server.await.unwrap();
    assert_eq!(
        (
            established.negotiated.tls,
            established.negotiated.compression
        ),
        (true, Compression::Snappy)
    );
    assert_usable(&mut established, &mut conn).await;
}

#[tokio::test]
async fn deflate_at_the_level_nsqd_granted() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        let identify = conn.identify().await;
        assert!(identify.deflate && identify.deflate_level == 9);
        conn.send_json(nsqd_reply(json!({"deflate": true, "deflate_level": 3})))
            .await;
        let mut conn = conn.upgrade(|s| Box::new(DeflateStream::new(s, 3)));
        conn.send_ok().await;
        conn
    });
    let mut cfg = config();
    cfg.identify.deflate = true;
    cfg.identify.deflate_level = 9;
    let mut established = connect(&addr, &cfg).await.unwrap();
    let mut conn = server.await.unwrap();
    assert_eq!(
        established.negotiated.compression,
        Compression::Deflate { level: 3 }
    );
    assert_usable(&mut established, &mut conn).await;
}

#[tokio::test]
async fn keeps_snappy_bytes_that_arrive_with_the_identify_reply() {
    let (client_io, server_io) = duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::start(Box::new(server_io)).await;
        conn.identify().await;
        // nsqd writes the JSON and, right behind it, the snappy stream with `OK` and a
        // heartbeat: all of it in one write, so one read on the client takes it all.
        let reply = serde_json::to_vec(&nsqd_reply(json!({"snappy": true}))).unwrap();
        let mut bytes = Frame::Response(Response::Data(reply.into()))
            .to_bytes()
            .to_vec();
        let mut framed = snap::write::FrameEncoder::new(Vec::new());
        framed
            .write_all(&Frame::Response(Response::Ok).to_bytes())
            .unwrap();
        framed.write_all(&heartbeat().to_bytes()).unwrap();
        bytes.extend_from_slice(&framed.into_inner().unwrap());
        conn.send_bytes(&bytes).await;
        conn.upgrade(|s| Box::new(SnappyStream::new(s)))
    });
    let mut cfg = config();
    cfg.identify.snappy = true;
    let mut established = handshake(client_io, "localhost", &cfg).await.unwrap();
    let mut conn = server.await.unwrap();
    assert_eq!(established.negotiated.compression, Compression::Snappy);
    // The heartbeat after the OK reaches the caller.
    assert_eq!(next_frame(&mut established).await, heartbeat());
    assert_usable(&mut established, &mut conn).await;
}

#[tokio::test]
async fn sends_auth_when_required_and_returns_the_identity() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        conn.identify().await;
        conn.send_json(nsqd_reply(json!({"auth_required": true})))
            .await;
        assert_eq!(conn.raw(15).await, b"AUTH\n\x00\x00\x00\x06s3cr3t");
        conn.send_json(json!({"identity": "bot", "identity_url": "", "permission_count": 2}))
            .await;
        assert_eq!(&conn.line().await[..], b"SUB t c");
        conn.send_ok().await;
    });
    let mut cfg = config();
    cfg.auth_secret = Some(Secret::from("s3cr3t"));
    cfg.subscribe = Some((Topic::new("t").unwrap(), Channel::new("c").unwrap()));
    let established = connect(&addr, &cfg).await.unwrap();
    server.await.unwrap();
    let auth = established.negotiated.auth.unwrap();
    assert_eq!((auth.identity.as_str(), auth.permission_count), ("bot", 2));
}

#[tokio::test]
async fn auth_required_without_a_secret_fails_before_sending_anything() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        conn.identify().await;
        conn.send_json(nsqd_reply(json!({"auth_required": true})))
            .await;
        conn.rest().await
    });
    let err = connect(&addr, &config()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "authentication: server requires AUTH and no secret is configured"
    );
    assert_eq!(server.await.unwrap(), b"");
}

#[tokio::test]
async fn never_sends_auth_when_not_required() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        conn.identify().await;
        conn.send_json(nsqd_reply(json!({}))).await;
        conn.rest().await
    });
    let mut cfg = config();
    cfg.auth_secret = Some(Secret::from("unused"));
    let established = connect(&addr, &cfg).await.unwrap();
    assert_eq!(established.negotiated.auth, None);
    drop(established);
    // nsqd answers an unneeded AUTH with a fatal E_AUTH_DISABLED.
    assert_eq!(server.await.unwrap(), b"");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        conn.identify().await;
        conn.rest().await
    });
    let mut cfg = config();
    cfg.timeout = Duration::from_millis(300);
    let err = connect(&addr, &cfg).await.unwrap_err();
    assert!(matches!(err, Error::Timeout("handshake")), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn an_error_reply_is_a_server_error_with_its_code() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        conn.identify().await;
        let error = ServerError::new(ErrorCode::BadBody, "IDENTIFY heartbeat interval is invalid");
        conn.send(Frame::Error(error)).await;
    });
    let err = connect(&addr, &config()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Server(e) if e.code == ErrorCode::BadBody),
        "{err}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn subscribes_and_reports_a_refused_sub() {
    for accept in [true, false] {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            let mut conn = ServerConn::accept(&listener).await;
            conn.identify().await;
            conn.send_json(nsqd_reply(json!({}))).await;
            assert_eq!(&conn.line().await[..], b"SUB orders billing#ephemeral");
            if accept {
                conn.send_ok().await;
            } else {
                let error = ServerError::new(ErrorCode::SubFailed, "channel is exiting");
                conn.send(Frame::Error(error)).await;
            }
        });
        let mut cfg = config();
        let channel = Channel::new("billing#ephemeral").unwrap();
        cfg.subscribe = Some((Topic::new("orders").unwrap(), channel));
        let result = connect(&addr, &cfg).await;
        server.await.unwrap();
        match result {
            Ok(_) => assert!(accept),
            Err(Error::Server(e)) => assert!(!accept && e.code == ErrorCode::SubFailed),
            Err(other) => panic!("{other}"),
        }
    }
}

#[tokio::test]
async fn answers_heartbeats_during_the_handshake_with_nop() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        conn.identify().await;
        conn.send(heartbeat()).await;
        assert_eq!(&conn.line().await[..], b"NOP");
        conn.send_json(nsqd_reply(json!({}))).await;
        assert_eq!(&conn.line().await[..], b"SUB t c");
        conn.send(heartbeat()).await;
        assert_eq!(&conn.line().await[..], b"NOP");
        conn.send_ok().await;
    });
    let mut cfg = config();
    cfg.subscribe = Some((Topic::new("t").unwrap(), Channel::new("c").unwrap()));
    connect(&addr, &cfg).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn rejects_replies_out_of_place() {
    let cases = [
        (
            json!({"snappy": true, "deflate": true}),
            "both snappy and deflate",
        ),
        (json!({"tls_v1": true}), "TLS unasked"),
    ];
    for (reply, needle) in cases {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            let mut conn = ServerConn::accept(&listener).await;
            conn.identify().await;
            conn.send_json(nsqd_reply(reply)).await;
        });
        let err = connect(&addr, &config()).await.unwrap_err();
        assert!(
            matches!(&err, Error::Protocol(_)) && err.to_string().contains(needle),
            "{err}"
        );
        server.await.unwrap();
    }
}

#[tokio::test]
async fn a_close_before_the_reply_is_an_io_error() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        conn.identify().await;
    });
    let err = connect(&addr, &config()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof),
        "{err}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn dial_errors_are_typed() {
    let err = connect("localhost", &config()).await.unwrap_err();
    assert!(matches!(err, Error::Config { field: "addr", .. }), "{err}");
    let (listener, addr) = listen().await;
    drop(listener);
    let err = connect(&addr, &config()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused),
        "{err}"
    );
}

#[test]
fn host_of_handles_names_ipv4_and_bracketed_ipv6() {
    assert_eq!(host_of("nsqd-1.internal:4150").unwrap(), "nsqd-1.internal");
    assert_eq!(host_of("127.0.0.1:4150").unwrap(), "127.0.0.1");
    assert_eq!(host_of("[::1]:4150").unwrap(), "::1");
    for bad in ["nsqd", "nsqd:port", ":4150", "nsqd:99999"] {
        assert!(host_of(bad).is_err(), "{bad}");
    }
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let mut cfg = config();
    cfg.auth_secret = Some(Secret::new("hunter2"));
    let debug = format!("{cfg:?}");
    assert!(
        debug.contains("auth_secret: Some(***)") && !debug.contains("hunter2"),
        "{debug}"
    );
}

#[tokio::test]
async fn an_identify_reply_that_is_not_an_object_is_refused() {
    for reply in [json!([]), json!([2500]), json!(1), json!("x"), json!(null)] {
        let (listener, addr) = listen().await;
        let sent = reply.clone();
        let server = tokio::spawn(async move {
            let mut conn = ServerConn::accept(&listener).await;
            conn.identify().await;
            conn.send_json(sent).await;
        });
        let err = connect(&addr, &config()).await.unwrap_err();
        assert!(
            matches!(err, Error::Protocol(ProtocolError::IdentifyNotObject(_))),
            "{reply}: {err}"
        );
        server.await.unwrap();
    }
}

#[tokio::test]
async fn an_http_answer_names_the_address_at_once() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut conn = ServerConn::accept(&listener).await;
        // What Go's net/http answers to "  V2IDENTIFY" (net/http/server.go, conn.serve).
        conn.send_bytes(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Connection: close\r\n\r\n400 Bad Request",
        )
        .await;
        conn.rest().await
    });
    let mut cfg = config();
    cfg.timeout = Duration::from_secs(30);
    let started = std::time::Instant::now();
    let err = connect(&addr, &cfg).await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(ProtocolError::HttpPort { addr: a }) if *a == addr),
        "{err}"
    );
    assert!(err.to_string().contains(&addr), "{err}");
    // Not the handshake deadline: the first bytes are enough.
    assert!(started.elapsed() < Duration::from_secs(10));
    server.abort();
}
