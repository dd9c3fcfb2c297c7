//! The server end at the byte level, with a raw client: what nsqd answers and when it closes.

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::FramedRead;

use super::*;
use crate::{
    protocol::{
        Command, ErrorCode, Frame, IdentifyRequest, NsqCodec, Response, ServerError, MAGIC_V2,
    },
    transport::BoxedStream,
};

struct Raw {
    frames: FramedRead<ReadHalf<BoxedStream>, NsqCodec>,
    write: WriteHalf<BoxedStream>,
}

impl Raw {
    fn open(nsqd: &MockNsqd) -> Self {
        let (read, write) = tokio::io::split(dial(nsqd.addr()).unwrap());
        Self {
            frames: FramedRead::new(read, NsqCodec::default()),
            write,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    async fn command(&mut self, command: Command) {
        self.send(&command.to_bytes()).await;
    }

    async fn frame(&mut self) -> Option<Frame> {
        self.frames.next().await.map(|f| f.unwrap())
    }

    /// Magic and a feature-negotiating IDENTIFY, its JSON reply read.
    async fn handshake(nsqd: &MockNsqd) -> Self {
        let mut raw = Self::open(nsqd);
        let mut hello = BytesMut::from(&MAGIC_V2[..]);
        Command::Identify(Box::default()).encode(&mut hello);
        raw.send(&hello).await;
        assert!(matches!(
            raw.frame().await,
            Some(Frame::Response(Response::Data(_)))
        ));
        raw
    }
}

fn error(code: ErrorCode, message: &str) -> Option<Frame> {
    Some(Frame::Error(ServerError::new(code, message)))
}

#[tokio::test]
async fn a_bad_magic_is_refused_as_test_nsqd_refuses_it() {
    let nsqd = MockNsqd::new();
    let mut raw = Raw::open(&nsqd);
    raw.send(b"  V1").await;
    assert_eq!(raw.frame().await, error(ErrorCode::BadProtocol, ""));
    assert_eq!(raw.frame().await, None);
}

#[tokio::test]
async fn an_invalid_identify_gets_nsqds_error_and_no_link() {
    let nsqd = MockNsqd::new();
    let mut raw = Raw::open(&nsqd);
    let identify = IdentifyRequest {
        heartbeat_interval: 10,
        ..IdentifyRequest::default()
    };
    let mut hello = BytesMut::from(&MAGIC_V2[..]);
    Command::Identify(Box::new(identify)).encode(&mut hello);
    raw.send(&hello).await;
    assert_eq!(
        raw.frame().await,
        error(
            ErrorCode::BadBody,
            "IDENTIFY heartbeat interval (10) is invalid"
        )
    );
    assert_eq!(raw.frame().await, None);
    assert!(nsqd.try_accept().is_none());
}

#[tokio::test]
async fn identify_without_feature_negotiation_is_answered_ok() {
    let nsqd = MockNsqd::new();
    let mut raw = Raw::open(&nsqd);
    let identify = IdentifyRequest {
        feature_negotiation: false,
        ..IdentifyRequest::default()
    };
    let mut hello = BytesMut::from(&MAGIC_V2[..]);
    Command::Identify(Box::new(identify)).encode(&mut hello);
    raw.send(&hello).await;
    assert_eq!(raw.frame().await, Some(Frame::Response(Response::Ok)));
    assert_eq!(nsqd.accept().await.number(), 1);
}

#[tokio::test]
async fn commands_are_answered_as_nsqd_answers_them_and_recorded_in_order() {
    let nsqd = MockNsqd::new();
    let mut raw = Raw::handshake(&nsqd).await;
    let mut link = nsqd.accept().await;
    raw.send(b"SUB events tests\nRDY 3\nNOP\nCLS\n").await;
    assert_eq!(raw.frame().await, Some(Frame::Response(Response::Ok)));
    assert_eq!(
        raw.frame().await,
        Some(Frame::Response(Response::CloseWait))
    );
    for line in ["SUB events tests", "RDY 3", "NOP", "CLS"] {
        assert_eq!(link.next_line().await.unwrap(), line);
    }
    assert_eq!(link.rdy(), 3);
    assert_eq!(link.lines(), ["SUB events tests", "RDY 3", "NOP", "CLS"]);
    assert!(link.try_next_command().is_none());

    let id = link.send_message("hi");
    assert!(matches!(raw.frame().await, Some(Frame::Message(m)) if m.id == id && m.attempts == 1));
    assert_eq!(link.in_flight(), 1);
    raw.command(Command::Fin(id)).await;
    assert_eq!(link.next_command().await, Some(Command::Fin(id)));
    assert_eq!(link.in_flight(), 0);

    // A non-fatal error leaves the link up; a fatal one closes it after the frame.
    link.error(ErrorCode::FinFailed, "FIN failed");
    link.heartbeat();
    assert_eq!(raw.frame().await, error(ErrorCode::FinFailed, "FIN failed"));
    assert_eq!(
        raw.frame().await,
        Some(Frame::Response(Response::Heartbeat))
    );
    link.error(ErrorCode::Invalid, "bye");
    assert_eq!(raw.frame().await, error(ErrorCode::Invalid, "bye"));
    assert_eq!(raw.frame().await, None);
    assert_eq!(link.next_command().await, None);
    assert!(link.is_closed());
}

#[tokio::test]
async fn a_malformed_command_or_a_second_identify_closes_the_link() {
    let nsqd = MockNsqd::new();
    let mut raw = Raw::handshake(&nsqd).await;
    let mut link = nsqd.accept().await;
    raw.send(b"RDY many\n").await;
    assert!(matches!(
        raw.frame().await,
        Some(Frame::Error(e)) if e.code == ErrorCode::Invalid
    ));
    assert_eq!(raw.frame().await, None);
    assert_eq!(link.next_command().await, None);

    let mut raw = Raw::handshake(&nsqd).await;
    raw.command(Command::Identify(Box::default())).await;
    assert_eq!(
        raw.frame().await,
        error(ErrorCode::Invalid, "cannot IDENTIFY in current state")
    );
    assert_eq!(raw.frame().await, None);
}

#[tokio::test(start_paused = true)]
async fn publishes_are_answered_ok_failed_or_held() {
    let nsqd = MockNsqd::new();
    let mut raw = Raw::handshake(&nsqd).await;
    let mut link = nsqd.accept().await;
    raw.send(b"PUB events\n\0\0\0\x01a").await;
    assert_eq!(raw.frame().await, Some(Frame::Response(Response::Ok)));
    link.hold_publishes(true);
    raw.send(b"PUB events\n\0\0\0\x01b").await;
    assert_eq!(link.next_line().await.unwrap(), "PUB events");
    assert_eq!(link.next_line().await.unwrap(), "PUB events");
    // Held: nothing comes until the test answers (a minute on the paused clock).
    let silence = tokio::time::timeout(std::time::Duration::from_secs(60), raw.frame()).await;
    assert!(silence.is_err(), "{silence:?}");
    link.respond_ok();
    assert_eq!(raw.frame().await, Some(Frame::Response(Response::Ok)));
    link.hold_publishes(false);
    link.fail_next_publish(ErrorCode::PubFailed, "PUB failed");
    raw.send(b"PUB events\n\0\0\0\x01c").await;
    assert_eq!(raw.frame().await, error(ErrorCode::PubFailed, "PUB failed"));
    assert_eq!(raw.frame().await, None, "nsqd closes after a publish error");
}

#[tokio::test]
async fn dials_are_refused_when_told_and_for_unknown_addresses() {
    let nsqd = MockNsqd::new();
    nsqd.refuse_connections(1);
    let refused = dial(nsqd.addr()).err().unwrap();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    assert!(dial(nsqd.addr()).is_ok());
    assert_eq!(nsqd.dials(), 2);

    let addr = nsqd.addr().to_owned();
    drop(nsqd);
    let gone = dial(&addr).err().unwrap();
    assert_eq!(gone.kind(), io::ErrorKind::ConnectionRefused);
    assert!(
        MockNsqd::new().addr() != addr,
        "each mock has its own address"
    );
}

#[tokio::test]
async fn the_client_handshake_runs_over_the_pipes_without_upgrades() {
    use crate::{transport::Compression, Error, TlsConfig};

    let nsqd = MockNsqd::new();
    let config = nsqd.connection_config(ConnectionConfig::new().snappy(true));
    let established = crate::transport::connect(nsqd.addr(), &config.handshake(None))
        .await
        .unwrap();
    let negotiated = established.negotiated;
    assert_eq!(negotiated.identify.max_rdy_count, 2500);
    assert_eq!(negotiated.identify.version, "1.3.0");
    assert_eq!(
        negotiated.compression,
        Compression::None,
        "snappy not offered"
    );
    assert!(nsqd.accept().await.identify().snappy, "though asked for");

    // A client that requires TLS fails, as against an nsqd without --tls-cert.
    let config = nsqd.connection_config(ConnectionConfig::new().tls(TlsConfig::new()));
    let error = crate::transport::connect(nsqd.addr(), &config.handshake(None))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Tls { .. }), "{error:?}");
}

#[tokio::test]
async fn a_dropped_handle_leaves_the_link_answering() {
    let nsqd = MockNsqd::new();
    let mut raw = Raw::handshake(&nsqd).await;
    drop(nsqd.accept().await);
    raw.send(b"SUB events tests\n").await;
    assert_eq!(raw.frame().await, Some(Frame::Response(Response::Ok)));
    raw.command(Command::Cls).await;
    assert_eq!(
        raw.frame().await,
        Some(Frame::Response(Response::CloseWait))
    );
}
