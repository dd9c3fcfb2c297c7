//! What the test nsqd and nsqlookupd send is what v1.3.0 sends: field for field, checked
//! against the Go structs at that tag (`git show v1.3.0:nsqd/...`, `v1.3.0:nsqlookupd/...` in
//! nsqio/nsq). Later nsq adds `topology_region`/`topology_zone` to IDENTIFY, `/info`, `/stats`
//! and nsqlookupd's producers; v1.3.0 has no topology.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
};

use actix_nsq::{
    protocol::{Frame, Response},
    testing::{TestLookupd, TestNsqd},
};
use serde_json::{json, Value};

use crate::raw::{Raw, PATIENCE};

/// nsqd v1.3.0 answers IDENTIFY with exactly the anonymous struct of `nsqd/protocol_v2.go`
/// `IDENTIFY`, marshalled in declaration order. These are the bytes it sends with its defaults
/// (`deflateLevel` starts at 6 even when deflate is not negotiated).
#[test]
fn identify_reply_is_exactly_v1_3_0s() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = Raw::connect(nsqd.addr());
    let Frame::Response(Response::Data(body)) = c.identify_with(json!({})) else {
        panic!("expected the IDENTIFY JSON");
    };
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        concat!(
            r#"{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"#,
            r#""msg_timeout":60000,"tls_v1":false,"deflate":false,"deflate_level":6,"#,
            r#""max_deflate_level":6,"snappy":false,"sample_rate":0,"auth_required":false,"#,
            r#""output_buffer_size":16384,"output_buffer_timeout":250}"#
        )
    );
}

/// A blocking `GET` on the test nsqd's HTTP listener; the JSON body.
fn get_json(nsqd: &TestNsqd, target: &str) -> Value {
    get_json_at(nsqd.http_addr(), target)
}

/// A blocking `GET` on an HTTP listener; the JSON body.
fn get_json_at(addr: SocketAddr, target: &str) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

fn sorted(mut k: Vec<&str>) -> Vec<&str> {
    k.sort_unstable();
    k
}

/// `doInfo` in `nsqd/http.go` at v1.3.0: ten fields, no topology.
#[test]
fn info_has_exactly_v1_3_0s_fields() {
    let nsqd = TestNsqd::start().unwrap();
    let info = get_json(&nsqd, "/info");
    assert_eq!(
        keys(&info),
        sorted(vec![
            "version",
            "broadcast_address",
            "hostname",
            "http_port",
            "tcp_port",
            "start_time",
            "max_heartbeat_interval",
            "max_output_buffer_size",
            "max_output_buffer_timeout",
            "max_deflate_level",
        ])
    );
    assert_eq!(info["version"], "1.3.0");
}

/// `ClientV2Stats` in `nsqd/client_v2.go` at v1.3.0 (the `omitempty` auth and pub-count
/// fields absent for an unauthenticated consumer): no topology.
#[test]
fn stats_clients_have_exactly_v1_3_0s_fields() {
    let nsqd = TestNsqd::start().unwrap();
    let _c = crate::raw::consumer(nsqd.addr(), "fidelity", "ch", 1);
    assert!(nsqd.wait_until(PATIENCE, |n| n.clients().len() == 1));
    let stats = get_json(&nsqd, "/stats?format=json&include_clients=true");
    let client = &stats["topics"][0]["channels"][0]["clients"][0];
    assert_eq!(
        keys(client),
        sorted(vec![
            "client_id",
            "hostname",
            "version",
            "remote_address",
            "state",
            "ready_count",
            "in_flight_count",
            "message_count",
            "finish_count",
            "requeue_count",
            "connect_ts",
            "sample_rate",
            "deflate",
            "snappy",
            "user_agent",
            "tls",
            "tls_cipher_suite",
            "tls_version",
            "tls_negotiated_protocol",
            "tls_negotiated_protocol_is_mutual",
        ]),
        "{client}"
    );
}

/// `PeerInfo` in `nsqlookupd/registration_db.go` and `node` in `nsqlookupd/http.go` at
/// v1.3.0: the test nsqlookupd's `/lookup` and `/nodes` entries have exactly their fields (the
/// topology fields came after v1.3.0).
#[test]
fn lookupd_lookup_and_nodes_have_exactly_v1_3_0s_fields() {
    let lookupd = TestLookupd::start().unwrap();
    let nsqd = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    nsqd.create_topic("fidelity").unwrap();
    assert!(lookupd.wait_until(PATIENCE, |l| l.producers("fidelity").len() == 1));
    let peer = vec![
        "remote_address",
        "hostname",
        "broadcast_address",
        "tcp_port",
        "http_port",
        "version",
    ];
    let lookup = get_json_at(lookupd.http_addr(), "/lookup?topic=fidelity");
    assert_eq!(keys(&lookup), sorted(vec!["channels", "producers"]));
    assert_eq!(keys(&lookup["producers"][0]), sorted(peer.clone()));
    let nodes = get_json_at(lookupd.http_addr(), "/nodes");
    assert_eq!(keys(&nodes), ["producers"]);
    let node = &nodes["producers"][0];
    assert_eq!(
        keys(node),
        sorted([peer, vec!["tombstones", "topics"]].concat())
    );
    assert_eq!(node["topics"], json!(["fidelity"]));
    assert_eq!(node["tombstones"], json!([false]));
}
