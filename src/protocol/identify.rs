//! IDENTIFY and AUTH bodies.
//!
//! Field names and ranges follow `nsqd/client_v2.go` (`identifyDataV2`, `SetHeartbeatInterval`,
//! `SetOutputBuffer`, `SetSampleRate`, `SetMsgTimeout`) and the response struct in
//! `nsqd/protocol_v2.go` (`IDENTIFY`). An out-of-range value is a fatal `E_BAD_BODY` on the
//! server, so [`IdentifyRequest::validate`] rejects it before anything is sent, naming the field.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ProtocolError};

/// nsqd's default `--max-heartbeat-interval`, in ms.
pub const MAX_HEARTBEAT_INTERVAL_MS: i64 = 60_000;
/// nsqd's default `--max-output-buffer-size`, in bytes.
pub const MAX_OUTPUT_BUFFER_SIZE: i64 = 65_536;
/// nsqd's default `--min-output-buffer-timeout`, in ms.
pub const MIN_OUTPUT_BUFFER_TIMEOUT_MS: i64 = 25;
/// nsqd's default `--max-output-buffer-timeout`, in ms.
pub const MAX_OUTPUT_BUFFER_TIMEOUT_MS: i64 = 30_000;
/// nsqd's default `--max-msg-timeout`, in ms.
pub const MAX_MSG_TIMEOUT_MS: i64 = 900_000;
/// nsqd's default `--max-rdy-count`, assumed when an old nsqd answers IDENTIFY with `OK`.
pub const DEFAULT_MAX_RDY_COUNT: i64 = 2_500;
/// nsqd's default `--msg-timeout`, in ms.
pub const DEFAULT_MSG_TIMEOUT_MS: i64 = 60_000;

/// The IDENTIFY body a client sends. Time values are milliseconds; `0` asks for the server's
/// default and `-1` disables (heartbeats, output buffering) where nsqd allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct IdentifyRequest {
    /// Identifies the client in nsqd's stats (go-nsq: the short hostname).
    pub client_id: String,
    /// The client's hostname.
    pub hostname: String,
    /// The client library and version.
    pub user_agent: String,
    /// Ask nsqd to answer with JSON describing what it negotiated.
    pub feature_negotiation: bool,
    /// ms between `_heartbeat_`s; 1000..=60000, 0 = default (30 s), -1 = off (SUB is refused).
    pub heartbeat_interval: i64,
    /// nsqd's per-client write buffer in bytes; 64..=65536, 0 = default (16 KiB), -1 = off.
    pub output_buffer_size: i64,
    /// ms nsqd may buffer before flushing; 25..=30000, 0 = default (250 ms), -1 = off.
    pub output_buffer_timeout: i64,
    /// Upgrade to TLS after the IDENTIFY response.
    pub tls_v1: bool,
    /// Upgrade to snappy (framed) after the IDENTIFY response (and TLS).
    pub snappy: bool,
    /// Upgrade to raw deflate after the IDENTIFY response (and TLS).
    pub deflate: bool,
    /// Deflate level 1..=9 (nsqd clamps to its `--max-deflate-level`).
    pub deflate_level: i64,
    /// Deliver only this percentage of messages to the client; 0..=99, 0 = all.
    pub sample_rate: i64,
    /// ms before nsqd requeues an unanswered message; 1000..=900000, 0 = default (60 s).
    pub msg_timeout: i64,
    /// Topology-aware delivery hint (nsqd experiment `topology-aware-consumption`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub topology_region: String,
    /// Topology-aware delivery hint (nsqd experiment `topology-aware-consumption`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub topology_zone: String,
}

impl Default for IdentifyRequest {
    fn default() -> Self {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let client_id = hostname.split('.').next().unwrap_or_default().to_owned();
        Self {
            client_id,
            hostname,
            user_agent: concat!("actix-nsq/", env!("CARGO_PKG_VERSION")).to_owned(),
            feature_negotiation: true,
            heartbeat_interval: 30_000,
            output_buffer_size: 16_384,
            output_buffer_timeout: 250,
            tls_v1: false,
            snappy: false,
            deflate: false,
            deflate_level: 6,
            sample_rate: 0,
            msg_timeout: 0,
            topology_region: String::new(),
            topology_zone: String::new(),
        }
    }
}

fn in_range(
    field: &'static str,
    value: i64,
    min: i64,
    max: i64,
    special: &[i64],
) -> Result<(), Error> {
    if special.contains(&value) || (min..=max).contains(&value) {
        return Ok(());
    }
    let also = special
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" or ");
    let also = if also.is_empty() {
        String::new()
    } else {
        format!(" (or {also})")
    };
    Err(Error::config(
        field,
        format!("{value} is outside {min}..={max}{also}"),
    ))
}

impl IdentifyRequest {
    /// Checks every field against the ranges nsqd enforces with its default limits.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first field that nsqd would reject.
    pub fn validate(&self) -> Result<(), Error> {
        in_range(
            "heartbeat_interval",
            self.heartbeat_interval,
            1000,
            MAX_HEARTBEAT_INTERVAL_MS,
            &[-1, 0],
        )?;
        in_range(
            "output_buffer_size",
            self.output_buffer_size,
            64,
            MAX_OUTPUT_BUFFER_SIZE,
            &[-1, 0],
        )?;
        in_range(
            "output_buffer_timeout",
            self.output_buffer_timeout,
            MIN_OUTPUT_BUFFER_TIMEOUT_MS,
            MAX_OUTPUT_BUFFER_TIMEOUT_MS,
            &[-1, 0],
        )?;
        in_range("sample_rate", self.sample_rate, 0, 99, &[])?;
        in_range(
            "msg_timeout",
            self.msg_timeout,
            1000,
            MAX_MSG_TIMEOUT_MS,
            &[0],
        )?;
        if self.deflate {
            in_range("deflate_level", self.deflate_level, 1, 9, &[])?;
        }
        if self.snappy && self.deflate {
            // nsqd: fatal E_IDENTIFY_FAILED "cannot enable both deflate and snappy compression".
            return Err(Error::config(
                "snappy",
                "snappy and deflate cannot both be enabled",
            ));
        }
        Ok(())
    }
}

/// What nsqd negotiated, from its IDENTIFY reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct IdentifyResponse {
    /// The largest RDY this nsqd accepts (`--max-rdy-count`).
    pub max_rdy_count: i64,
    /// nsqd's version.
    pub version: String,
    /// The largest `msg_timeout` a client may ask for, in ms.
    pub max_msg_timeout: i64,
    /// The message timeout in effect for this connection, in ms.
    pub msg_timeout: i64,
    /// The connection upgrades to TLS next.
    pub tls_v1: bool,
    /// The connection upgrades to deflate next.
    pub deflate: bool,
    /// The deflate level in effect.
    pub deflate_level: i64,
    /// The server's `--max-deflate-level`.
    pub max_deflate_level: i64,
    /// The connection upgrades to snappy next.
    pub snappy: bool,
    /// The sample rate in effect.
    pub sample_rate: i64,
    /// The server requires AUTH before SUB/PUB.
    pub auth_required: bool,
    /// The output buffer size in effect.
    pub output_buffer_size: i64,
    /// The output buffer timeout in effect, in ms.
    pub output_buffer_timeout: i64,
    /// The server's topology region.
    pub topology_region: String,
    /// The server's topology zone.
    pub topology_zone: String,
}

impl Default for IdentifyResponse {
    fn default() -> Self {
        Self::legacy()
    }
}

impl IdentifyResponse {
    /// What a pre-feature-negotiation nsqd implies when it answers `OK`: the defaults of
    /// the time (go-nsq and nsqjs assume the same).
    pub fn legacy() -> Self {
        Self {
            max_rdy_count: DEFAULT_MAX_RDY_COUNT,
            version: String::new(),
            max_msg_timeout: MAX_MSG_TIMEOUT_MS,
            msg_timeout: DEFAULT_MSG_TIMEOUT_MS,
            tls_v1: false,
            deflate: false,
            deflate_level: 0,
            max_deflate_level: 0,
            snappy: false,
            sample_rate: 0,
            auth_required: false,
            output_buffer_size: 16_384,
            output_buffer_timeout: 250,
            topology_region: String::new(),
            topology_zone: String::new(),
        }
    }

    /// Parses the response frame's data: JSON, or a plain `OK` from an old nsqd.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Handshake`] when the data is neither.
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        if data == b"OK" {
            return Ok(Self::legacy());
        }
        let mut response: Self = serde_json::from_slice(data)
            .map_err(|e| ProtocolError::Handshake(format!("IDENTIFY response is not JSON: {e}")))?;
        if response.max_rdy_count <= 0 {
            // A server that lies about its window would leave us unable to send any RDY.
            response.max_rdy_count = DEFAULT_MAX_RDY_COUNT;
        }
        Ok(response)
    }
}

/// nsqd's reply to AUTH.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AuthResponse {
    /// Who the auth server says we are.
    pub identity: String,
    /// A link describing the identity.
    pub identity_url: String,
    /// How many permissions were granted.
    pub permission_count: i64,
}

impl AuthResponse {
    /// Parses AUTH's JSON reply.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Handshake`] when the reply is not JSON.
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(data)
            .map_err(|e| ProtocolError::Handshake(format!("AUTH response is not JSON: {e}")).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_negotiate_features() {
        let req = IdentifyRequest::default();
        req.validate().unwrap();
        assert!(req.feature_negotiation);
        assert!(req.user_agent.starts_with("actix-nsq/"));
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["heartbeat_interval"], 30_000);
        // Empty topology hints are left out, as go-nsq does.
        assert!(json.get("topology_zone").is_none());
    }

    #[test]
    fn rejects_what_nsqd_rejects_naming_the_field() {
        type Mutation = fn(&mut IdentifyRequest);
        let cases: [(&str, Mutation); 8] = [
            ("heartbeat_interval", |r| r.heartbeat_interval = 999),
            ("heartbeat_interval", |r| r.heartbeat_interval = 60_001),
            ("output_buffer_size", |r| r.output_buffer_size = 63),
            ("output_buffer_size", |r| r.output_buffer_size = 524_289),
            ("output_buffer_timeout", |r| r.output_buffer_timeout = 1),
            ("sample_rate", |r| r.sample_rate = 100),
            ("msg_timeout", |r| r.msg_timeout = 999),
            ("snappy", |r| {
                r.snappy = true;
                r.deflate = true;
            }),
        ];
        for (field, mutate) in cases {
            let mut req = IdentifyRequest::default();
            mutate(&mut req);
            match req.validate() {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let disabled = IdentifyRequest {
            heartbeat_interval: -1,
            output_buffer_size: -1,
            output_buffer_timeout: -1,
            ..IdentifyRequest::default()
        };
        disabled.validate().unwrap();
    }

    #[test]
    fn accepts_plain_ok_from_old_servers() {
        let r = IdentifyResponse::parse(b"OK").unwrap();
        assert_eq!(r.max_rdy_count, 2500);
        assert!(!r.tls_v1 && !r.auth_required);
    }

    #[test]
    fn parses_nsqd_json() {
        let data = br#"{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,
            "msg_timeout":60000,"tls_v1":true,"deflate":false,"deflate_level":6,
            "max_deflate_level":6,"snappy":true,"sample_rate":0,"auth_required":true,
            "output_buffer_size":16384,"output_buffer_timeout":250,"future_field":1}"#;
        let r = IdentifyResponse::parse(data).unwrap();
        assert!(r.tls_v1 && r.snappy && r.auth_required);
        assert_eq!(r.version, "1.3.0");
        assert!(IdentifyResponse::parse(b"garbage").is_err());
        let zero = IdentifyResponse::parse(br#"{"max_rdy_count":0}"#).unwrap();
        assert_eq!(zero.max_rdy_count, DEFAULT_MAX_RDY_COUNT);
    }

    #[test]
    fn parses_auth_reply() {
        let r =
            AuthResponse::parse(br#"{"identity":"bot","identity_url":"","permission_count":2}"#)
                .unwrap();
        assert_eq!(r.identity, "bot");
        assert_eq!(r.permission_count, 2);
    }
}
