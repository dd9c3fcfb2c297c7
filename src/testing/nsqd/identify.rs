//! IDENTIFY and AUTH, as `nsqd/protocol_v2.go` and `nsqd/client_v2.go` (`Identify`,
//! `SetHeartbeatInterval`, `SetOutputBuffer`, `SetSampleRate`, `SetMsgTimeout`) handle them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    conn::{Conn, Failure},
    exec::{fatal, read_bounded_body},
    options::{Options, NSQD_VERSION},
    record::ClientState,
};
use crate::protocol::{AuthResponse, ErrorCode, Frame, Response, ServerError};

/// The IDENTIFY body with Go's zero values for missing fields (`identifyDataV2`): a missing
/// `heartbeat_interval` is 0 (the server default), a missing `feature_negotiation` false.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct IdentifyData {
    client_id: String,
    hostname: String,
    heartbeat_interval: i64,
    output_buffer_size: i64,
    output_buffer_timeout: i64,
    feature_negotiation: bool,
    tls_v1: bool,
    deflate: bool,
    deflate_level: i64,
    snappy: bool,
    sample_rate: i32,
    user_agent: String,
    msg_timeout: i64,
}

/// The IDENTIFY reply of nsqd v1.3.0, field for field and in its order (Go marshals a struct
/// in declaration order): the anonymous struct in `nsqd/protocol_v2.go` `IDENTIFY` at tag
/// v1.3.0. Deliberately not `protocol::IdentifyResponse`, which also knows the
/// `topology_region`/`topology_zone` that later nsqd sends and v1.3.0 does not.
#[derive(Debug, Serialize)]
struct IdentifyReply {
    max_rdy_count: i64,
    version: &'static str,
    max_msg_timeout: i64,
    msg_timeout: i64,
    tls_v1: bool,
    deflate: bool,
    deflate_level: i64,
    max_deflate_level: i64,
    snappy: bool,
    sample_rate: i32,
    auth_required: bool,
    output_buffer_size: i64,
    output_buffer_timeout: i64,
}

impl IdentifyData {
    /// Decodes an IDENTIFY body the way nsqd's `json.Unmarshal` into a struct does: `null`
    /// leaves every field at its zero value, keys match case-insensitively, the last of
    /// duplicate keys wins, a `null` field keeps its zero value, and anything but an object
    /// (or `null`) is an error. Found by comparing with nsqd 1.3 (tests/live_nsqd.rs).
    pub(super) fn decode_like_go(body: &[u8]) -> Option<Self> {
        match serde_json::from_slice::<serde_json::Value>(body).ok()? {
            serde_json::Value::Null => Some(Self::default()),
            serde_json::Value::Object(fields) => {
                let fields: serde_json::Map<String, serde_json::Value> = fields
                    .into_iter()
                    .filter(|(_, value)| !value.is_null())
                    .map(|(key, value)| (key.to_ascii_lowercase(), value))
                    .collect();
                serde_json::from_value(serde_json::Value::Object(fields)).ok()
            }
            _ => None,
        }
    }
}

/// A client's negotiable settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClientSettings {
    /// `None`: heartbeats disabled (`heartbeat_interval: -1`).
    pub(super) heartbeat: Option<Duration>,
    pub(super) output_buffer_size: i64,
    pub(super) output_buffer_timeout: Duration,
    pub(super) sample_rate: i32,
    pub(super) msg_timeout: Duration,
}

/// What a connection upgrades to after the IDENTIFY reply, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Upgrades {
    pub(super) tls: bool,
    pub(super) snappy: bool,
    /// Deflate at this level (1..=9).
    pub(super) deflate: Option<u32>,
}

impl Upgrades {
    pub(super) fn any(&self) -> bool {
        self.tls || self.snappy || self.deflate.is_some()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl ClientSettings {
    /// A new client's settings (`newClientV2`).
    pub(super) fn initial(opts: &Options) -> Self {
        Self {
            heartbeat: Some(opts.default_heartbeat()),
            output_buffer_size: 16 * 1024,
            output_buffer_timeout: opts.output_buffer_timeout,
            sample_rate: 0,
            msg_timeout: opts.msg_timeout,
        }
    }

    /// `clientV2.Identify`: each field in nsqd's order, with nsqd's error text.
    pub(super) fn identify(mut self, opts: &Options, data: &IdentifyData) -> Result<Self, String> {
        let ms = |v: i64| Duration::from_millis(v.unsigned_abs());
        match data.heartbeat_interval {
            -1 => self.heartbeat = None,
            0 => {}
            v if (1000..=millis(opts.max_heartbeat_interval)).contains(&v) => {
                self.heartbeat = Some(ms(v));
            }
            v => return Err(format!("heartbeat interval ({v}) is invalid")),
        }
        match data.output_buffer_timeout {
            -1 => self.output_buffer_timeout = Duration::ZERO,
            0 => {}
            v if (millis(opts.min_output_buffer_timeout)
                ..=millis(opts.max_output_buffer_timeout))
                .contains(&v) =>
            {
                self.output_buffer_timeout = ms(v);
            }
            v => return Err(format!("output buffer timeout ({v}) is invalid")),
        }
        match data.output_buffer_size {
            -1 => {
                self.output_buffer_size = 1;
                self.output_buffer_timeout = Duration::ZERO;
            }
            0 => {}
            v if (64..=opts.max_output_buffer_size).contains(&v) => self.output_buffer_size = v,
            v => return Err(format!("output buffer size ({v}) is invalid")),
        }
        if !(0..=99).contains(&data.sample_rate) {
            return Err(format!("sample rate ({}) is invalid", data.sample_rate));
        }
        self.sample_rate = data.sample_rate;
        match data.msg_timeout {
            0 => {}
            v if (1000..=millis(opts.max_msg_timeout)).contains(&v) => self.msg_timeout = ms(v),
            v => return Err(format!("msg timeout ({v}) is invalid")),
        }
        Ok(self)
    }
}

/// The upgrades nsqd negotiates and the deflate level it reports (even without deflate:
/// the default 6, clamped to `--max-deflate-level`).
fn negotiate(opts: &Options, data: &IdentifyData) -> Result<(Upgrades, i64), String> {
    let tls = opts.tls_acceptor.is_some() && data.tls_v1;
    let deflate = opts.deflate && data.deflate;
    let mut level = 6;
    if deflate && data.deflate_level > 0 {
        level = data.deflate_level;
    }
    level = level.min(opts.max_deflate_level);
    let snappy = opts.snappy && data.snappy;
    if deflate && snappy {
        return Err("cannot enable both deflate and snappy compression".to_owned());
    }
    // `max_deflate_level` is validated to 1..=9 and a request only counts when positive.
    let deflate_level = u32::try_from(level).map_err(|_| format!("deflate level {level}"))?;
    let upgrades = Upgrades {
        tls,
        snappy,
        deflate: deflate.then_some(deflate_level),
    };
    Ok((upgrades, level))
}

/// The JSON nsqd answers a feature-negotiating IDENTIFY with (`protocol_v2.go`, `IDENTIFY`).
fn reply(
    opts: &Options,
    settings: &ClientSettings,
    upgrades: Upgrades,
    deflate_level: i64,
) -> IdentifyReply {
    IdentifyReply {
        max_rdy_count: opts.max_rdy_count,
        version: NSQD_VERSION,
        max_msg_timeout: millis(opts.max_msg_timeout),
        msg_timeout: millis(settings.msg_timeout),
        tls_v1: upgrades.tls,
        deflate: upgrades.deflate.is_some(),
        deflate_level,
        max_deflate_level: opts.max_deflate_level,
        snappy: upgrades.snappy,
        sample_rate: settings.sample_rate,
        auth_required: opts.auth.is_some(),
        output_buffer_size: settings.output_buffer_size,
        output_buffer_timeout: millis(settings.output_buffer_timeout),
    }
}

/// IDENTIFY on a connection with nothing to upgrade to (`opts` without TLS, snappy and
/// deflate): the frame nsqd answers with, or the fatal error it closes the connection with.
/// `MockNsqd` answers through this, so it replies exactly as the test nsqd does.
pub(in crate::testing) fn identify_without_upgrades(
    opts: &Options,
    body: &[u8],
) -> Result<Frame, ServerError> {
    let data = IdentifyData::decode_like_go(body).ok_or_else(|| {
        ServerError::new(ErrorCode::BadBody, "IDENTIFY failed to decode JSON body")
    })?;
    let settings = ClientSettings::initial(opts)
        .identify(opts, &data)
        .map_err(|e| ServerError::new(ErrorCode::BadBody, format!("IDENTIFY {e}")))?;
    if !data.feature_negotiation {
        return Ok(Frame::Response(Response::Ok));
    }
    let (upgrades, deflate_level) =
        negotiate(opts, &data).map_err(|e| ServerError::new(ErrorCode::IdentifyFailed, e))?;
    if upgrades.any() {
        return Err(ServerError::new(
            ErrorCode::IdentifyFailed,
            "IDENTIFY failed: upgrades are not offered here",
        ));
    }
    let json = serde_json::to_vec(&reply(opts, &settings, upgrades, deflate_level))
        .map_err(|e| ServerError::new(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}")))?;
    Ok(Frame::Response(Response::Data(json.into())))
}

impl Conn {
    pub(super) async fn identify(&mut self) -> Result<Option<Frame>, Failure> {
        if self.state() != Some(ClientState::Init) {
            return Err(fatal(
                ErrorCode::Invalid,
                "cannot IDENTIFY in current state",
            ));
        }
        let max = self.shared.opts.max_body_size;
        let body = read_bounded_body(self, "IDENTIFY", ErrorCode::BadBody, max).await?;
        self.body = Some(body.clone());
        let data = IdentifyData::decode_like_go(&body)
            .ok_or_else(|| fatal(ErrorCode::BadBody, "IDENTIFY failed to decode JSON body"))?;
        tracing::debug!(client = %self.id, ?data, "IDENTIFY");
        let opts = &self.shared.opts;
        let settings = self
            .settings
            .identify(opts, &data)
            .map_err(|e| fatal(ErrorCode::BadBody, format!("IDENTIFY {e}")))?;
        self.settings = settings;
        self.set_heartbeat(settings.heartbeat);
        if let Some(client) = self.shared.broker().client_mut(self.id) {
            client.info.client_id.clone_from(&data.client_id);
            client.info.hostname.clone_from(&data.hostname);
            client.info.user_agent.clone_from(&data.user_agent);
            client.info.msg_timeout = settings.msg_timeout;
            client.sample_rate = settings.sample_rate;
        }
        if !data.feature_negotiation {
            return Ok(Some(Frame::Response(Response::Ok)));
        }
        let (upgrades, deflate_level) =
            negotiate(opts, &data).map_err(|e| fatal(ErrorCode::IdentifyFailed, e))?;
        let response = reply(opts, &settings, upgrades, deflate_level);
        let json = serde_json::to_vec(&response)
            .map_err(|e| fatal(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}")))?;
        self.send(Frame::Response(Response::Data(json.into())));
        if upgrades.any() {
            self.upgrade(upgrades)
                .await
                .map_err(|e| fatal(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}")))?;
        }
        Ok(None)
    }

    pub(super) async fn auth(&mut self, params: &[&[u8]]) -> Result<Option<Frame>, Failure> {
        if self.state() != Some(ClientState::Init) {
            return Err(fatal(ErrorCode::Invalid, "cannot AUTH in current state"));
        }
        if params.len() != 1 {
            return Err(fatal(
                ErrorCode::Invalid,
                "AUTH invalid number of parameters",
            ));
        }
        let max = self.shared.opts.max_body_size;
        let body = read_bounded_body(self, "AUTH", ErrorCode::BadBody, max).await?;
        self.body = Some(body.clone());
        if self.authed {
            return Err(fatal(ErrorCode::Invalid, "AUTH already set"));
        }
        let Some(auth) = &self.shared.opts.auth else {
            return Err(fatal(ErrorCode::AuthDisabled, "AUTH disabled"));
        };
        if body != auth.secret.as_bytes() {
            return Err(fatal(ErrorCode::AuthFailed, "AUTH failed"));
        }
        self.authed = true;
        if let Some(client) = self.shared.broker().client_mut(self.id) {
            client.info.auth_identity = Some(auth.identity.clone());
        }
        let reply = AuthResponse {
            identity: auth.identity.clone(),
            identity_url: auth.identity_url.clone(),
            permission_count: 1,
        };
        let json = serde_json::to_vec(&reply)
            .map_err(|e| fatal(ErrorCode::AuthError, format!("AUTH error {e}")))?;
        Ok(Some(Frame::Response(Response::Data(json.into()))))
    }

    /// `CheckAuth`: with auth enabled, SUB and the publishes need a successful AUTH first.
    pub(super) fn check_auth(&self, command: &str) -> Result<(), Failure> {
        if self.shared.opts.auth.is_some() && !self.authed {
            return Err(fatal(
                ErrorCode::AuthFirst,
                format!("AUTH required before {command}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestNsqd;

    fn data(json: &str) -> IdentifyData {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn missing_fields_are_go_zero_values() {
        let opts = TestNsqd::builder()
            .client_timeout(Duration::from_secs(10))
            .into_options();
        let initial = ClientSettings::initial(&opts);
        assert_eq!(initial.heartbeat, Some(Duration::from_secs(5)));
        let d = data(r#"{"client_id":"x","unknown":1}"#);
        assert!(!d.feature_negotiation);
        assert_eq!(initial.identify(&opts, &d).unwrap(), initial);
    }

    #[test]
    fn validates_like_client_v2() {
        let opts = TestNsqd::builder().into_options();
        let s = ClientSettings::initial(&opts);
        let err = |json: &str| s.identify(&opts, &data(json)).unwrap_err();
        assert_eq!(
            err(r#"{"heartbeat_interval":999}"#),
            "heartbeat interval (999) is invalid"
        );
        assert_eq!(
            err(r#"{"output_buffer_timeout":1}"#),
            "output buffer timeout (1) is invalid"
        );
        assert_eq!(
            err(r#"{"output_buffer_size":65537}"#),
            "output buffer size (65537) is invalid"
        );
        assert_eq!(
            err(r#"{"sample_rate":100}"#),
            "sample rate (100) is invalid"
        );
        assert_eq!(
            err(r#"{"msg_timeout":999}"#),
            "msg timeout (999) is invalid"
        );
        let off = s
            .identify(
                &opts,
                &data(r#"{"heartbeat_interval":-1,"output_buffer_size":-1}"#),
            )
            .unwrap();
        assert_eq!((off.heartbeat, off.output_buffer_size), (None, 1));
        assert_eq!(off.output_buffer_timeout, Duration::ZERO);
    }

    #[test]
    fn negotiates_compression_like_nsqd() {
        let opts = TestNsqd::builder().into_options();
        let both = data(r#"{"snappy":true,"deflate":true}"#);
        assert!(negotiate(&opts, &both)
            .unwrap_err()
            .contains("both deflate and snappy"));
        let (up, level) = negotiate(&opts, &data(r#"{"deflate":true,"deflate_level":9}"#)).unwrap();
        assert_eq!((up.deflate, level), (Some(6), 6));
        let (up, level) = negotiate(&opts, &data(r#"{"deflate":true,"deflate_level":2}"#)).unwrap();
        assert_eq!((up.deflate, level), (Some(2), 2));
        let (up, level) =
            negotiate(&opts, &data(r#"{"deflate":true,"deflate_level":-3}"#)).unwrap();
        assert_eq!((up.deflate, level), (Some(6), 6));
        let (up, _) = negotiate(&opts, &data(r#"{"snappy":true}"#)).unwrap();
        assert!(up.snappy && !up.tls && up.deflate.is_none());
    }

    #[test]
    fn a_disabled_compression_is_not_granted_and_not_a_conflict() {
        let opts = TestNsqd::builder().snappy(false).into_options();
        let both = data(r#"{"snappy":true,"deflate":true,"deflate_level":1}"#);
        let (up, level) = negotiate(&opts, &both).unwrap();
        assert_eq!((up.snappy, up.deflate, level), (false, Some(1), 1));
        let opts = TestNsqd::builder().deflate(false).into_options();
        let (up, level) = negotiate(&opts, &both).unwrap();
        // Without deflate nsqd reports its default level, whatever was asked for.
        assert_eq!((up.snappy, up.deflate, level), (true, None, 6));
    }

    #[test]
    fn the_level_is_clamped_to_max_deflate_level() {
        let opts = TestNsqd::builder().max_deflate_level(3).into_options();
        let (up, level) = negotiate(&opts, &data(r#"{"deflate":true,"deflate_level":9}"#)).unwrap();
        assert_eq!((up.deflate, level), (Some(3), 3));
        let (up, level) = negotiate(&opts, &data(r#"{"deflate":false}"#)).unwrap();
        assert_eq!((up.deflate, level), (None, 3));
    }

    #[test]
    fn tls_only_when_asked_for_and_configured() {
        let with_tls = TestNsqd::builder().tls(true).into_options();
        let without = TestNsqd::builder().into_options();
        let asked = data(r#"{"tls_v1":true}"#);
        assert!(negotiate(&with_tls, &asked).unwrap().0.tls);
        assert!(!negotiate(&with_tls, &data("{}")).unwrap().0.tls);
        assert!(!negotiate(&without, &asked).unwrap().0.tls);
    }
}
