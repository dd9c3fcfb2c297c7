//! Settings every connection to nsqd shares, consumer or producer.

use std::{fmt, time::Duration};

use crate::{
    error::Error,
    protocol::{IdentifyRequest, PublishLimits, DEFAULT_MAX_FRAME_LEN},
    retry::ReconnectPolicy,
    transport::{Compression, Dialer, HandshakeConfig, Secret, TlsConfig},
};

/// How a connection to nsqd is set up: IDENTIFY fields, TLS, compression, AUTH, timeouts and
/// reconnection. Defaults follow go-nsq's `Config` where go-nsq has the setting.
///
/// ```
/// use std::time::Duration;
/// use actix_nsq::ConnectionConfig;
///
/// let config = ConnectionConfig::new()
///     .heartbeat_interval(Some(Duration::from_secs(10)))
///     .msg_timeout(Some(Duration::from_secs(120)))
///     .snappy(true);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until it is used"]
pub struct ConnectionConfig {
    pub(crate) identify: IdentifyRequest,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) compression: Compression,
    pub(crate) auth_secret: Option<Secret>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_frame_len: usize,
    pub(crate) publish_limits: PublishLimits,
    pub(crate) reconnect: ReconnectPolicy,
    /// Opens connections instead of TCP: set by `testing::MockNsqd::connection_config`.
    pub(crate) dialer: Option<Dialer>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self::new()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl ConnectionConfig {
    /// Covers dialing, TLS and the whole IDENTIFY/AUTH/SUB exchange.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// go-nsq `heartbeat_interval`.
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
    /// go-nsq `output_buffer_size`.
    pub const DEFAULT_OUTPUT_BUFFER_SIZE: u32 = 16_384;
    /// go-nsq `output_buffer_timeout`.
    pub const DEFAULT_OUTPUT_BUFFER_TIMEOUT: Duration = Duration::from_millis(250);

    /// The defaults: heartbeats every 30 s, nsqd's default output buffering and message
    /// timeout, no TLS, no compression.
    pub fn new() -> Self {
        Self {
            identify: IdentifyRequest::default(),
            tls: None,
            compression: Compression::None,
            auth_secret: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            publish_limits: PublishLimits::NSQD_DEFAULT,
            reconnect: ReconnectPolicy::default(),
            dialer: None,
        }
    }

    /// IDENTIFY `client_id` (default: the short hostname).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.identify.client_id = client_id.into();
        self
    }

    /// IDENTIFY `hostname` (default: the hostname).
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.identify.hostname = hostname.into();
        self
    }

    /// IDENTIFY `user_agent` (default: `actix-nsq/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.identify.user_agent = user_agent.into();
        self
    }

    /// How often nsqd sends `_heartbeat_` (1 s..=60 s). `None` turns heartbeats off, which nsqd
    /// only allows on connections that never SUB (producers). A connection that hears nothing
    /// for two intervals is considered dead and re-established.
    pub fn heartbeat_interval(mut self, interval: Option<Duration>) -> Self {
        self.identify.heartbeat_interval = interval.map_or(-1, millis);
        self
    }

    /// nsqd's write buffer for this client, in bytes (64..=65536); `None` disables buffering.
    pub fn output_buffer_size(mut self, size: Option<u32>) -> Self {
        self.identify.output_buffer_size = size.map_or(-1, i64::from);
        self
    }

    /// How long nsqd may hold buffered messages before flushing (25 ms..=30 s); `None`
    /// disables the timer. Lower means less latency and more CPU on nsqd.
    pub fn output_buffer_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.identify.output_buffer_timeout = timeout.map_or(-1, millis);
        self
    }

    /// How long nsqd waits for FIN/REQ/TOUCH before requeueing a message (1 s..=15 min);
    /// `None` uses the server's `--msg-timeout` (60 s by default).
    pub fn msg_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.identify.msg_timeout = timeout.map_or(0, millis);
        self
    }

    /// Deliver only this percentage of the channel's messages to this client (0..=99, 0 = all).
    pub fn sample_rate(mut self, percent: u8) -> Self {
        self.identify.sample_rate = i64::from(percent);
        self
    }

    /// Topology hints for nsqd's `topology-aware-consumption` experiment.
    pub fn topology(mut self, region: impl Into<String>, zone: impl Into<String>) -> Self {
        self.identify.topology_region = region.into();
        self.identify.topology_zone = zone.into();
        self
    }

    /// Upgrade to TLS. The connection fails if nsqd does not offer TLS: it never falls back to
    /// plaintext.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Snappy compression (framing format). Replaces deflate if both are set.
    pub fn snappy(mut self, enabled: bool) -> Self {
        self.compression = if enabled {
            Compression::Snappy
        } else {
            Compression::None
        };
        self
    }

    /// Raw deflate at `level` (1..=9; nsqd clamps it to its `--max-deflate-level`). Replaces
    /// snappy if both are set.
    pub fn deflate(mut self, level: u32) -> Self {
        self.compression = Compression::Deflate { level };
        self
    }

    /// The AUTH secret, sent only when nsqd says `auth_required`.
    pub fn auth_secret(mut self, secret: impl Into<String>) -> Self {
        self.auth_secret = Some(Secret::new(secret.into()));
        self
    }

    /// Bound on dialing plus the whole handshake (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest frame accepted from nsqd (default 16 MiB, at most 256 MiB). Bigger frames
    /// drop the connection before anything is allocated for them.
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes;
        self
    }

    /// nsqd's `--max-msg-size` and `--max-body-size` (defaults 1 MiB and 5 MiB). Publishes
    /// over them fail locally instead of drawing a fatal error that would drop the connection
    /// and every publish pending on it.
    pub fn publish_limits(mut self, max_msg_size: usize, max_body_size: usize) -> Self {
        self.publish_limits = PublishLimits {
            max_msg_size,
            max_body_size,
        };
        self
    }

    /// How lost connections are re-established.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Checks every setting against the ranges nsqd accepts.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first invalid setting.
    pub fn validate(&self) -> Result<(), Error> {
        let mut identify = self.identify.clone();
        self.apply_features(&mut identify);
        identify.validate()?;
        if self.connect_timeout.is_zero() {
            return Err(Error::config(
                "connect_timeout",
                "must be greater than zero",
            ));
        }
        // nsqd's size field is an int32, and its largest frame is a message of
        // --max-msg-size (default 1 MiB) or an MPUB answer; 256 MiB is far past any real
        // setting yet keeps a typo like usize::MAX from inviting a 2 GiB frame.
        if !(1024..=256 * 1024 * 1024).contains(&self.max_frame_len) {
            return Err(Error::config(
                "max_frame_len",
                "must be between 1024 bytes and 256 MiB",
            ));
        }
        Self::validate_publish_limits(self.publish_limits)?;
        let max_body_size = self.publish_limits.max_body_size;
        Self::check_body_sizes(&identify, self.auth_secret.as_ref(), max_body_size)?;
        self.reconnect.validate()?;
        Ok(())
    }

    /// nsqd refuses an IDENTIFY or AUTH body larger than its `--max-body-size` with a fatal
    /// `E_BAD_BODY` (nsqd v1.3.0 `protocol_v2.go:361` "IDENTIFY body too big", `:505` "AUTH
    /// body too big"), and an empty AUTH body with "AUTH invalid body size 0" (`:510`).
    /// Either would fail every connection attempt forever, so they are refused up front;
    /// `max_body_size` is what [`publish_limits`](Self::publish_limits) says nsqd allows.
    fn check_body_sizes(
        identify: &IdentifyRequest,
        secret: Option<&Secret>,
        max_body_size: usize,
    ) -> Result<(), Error> {
        let body =
            serde_json::to_vec(identify).map_err(|e| Error::config("identify", e.to_string()))?;
        if body.len() > max_body_size {
            let fields = [
                ("client_id", &identify.client_id),
                ("hostname", &identify.hostname),
                ("user_agent", &identify.user_agent),
                ("topology", &identify.topology_region),
                ("topology", &identify.topology_zone),
            ];
            let (field, value) = fields
                .into_iter()
                .max_by_key(|(_, v)| v.len())
                .unwrap_or(("client_id", &identify.client_id));
            return Err(Error::config(
                field,
                format!(
                    "is {} bytes: the IDENTIFY body would be {} bytes, over nsqd's \
                     --max-body-size of {max_body_size} (publish_limits)",
                    value.len(),
                    body.len()
                ),
            ));
        }
        match secret.map(|s| s.expose().len()) {
            Some(0) => Err(Error::config("auth_secret", "must not be empty")),
            Some(len) if len > max_body_size => Err(Error::config(
                "auth_secret",
                format!(
                    "is {len} bytes, over nsqd's --max-body-size of {max_body_size} \
                     (publish_limits)"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Checks publish limits: both set, and the message limit within the body limit (swapped
    /// arguments, most likely: nsqd's defaults are 1 MiB and 5 MiB, and a message it accepts
    /// must also fit in an MPUB body).
    pub(crate) fn validate_publish_limits(limits: PublishLimits) -> Result<(), Error> {
        let PublishLimits {
            max_msg_size,
            max_body_size,
        } = limits;
        if max_msg_size == 0 || max_body_size == 0 {
            return Err(Error::config(
                "publish_limits",
                "limits must be greater than zero",
            ));
        }
        if max_msg_size > max_body_size {
            return Err(Error::config(
                "publish_limits",
                format!(
                    "max_msg_size ({max_msg_size}) must not exceed max_body_size ({max_body_size})"
                ),
            ));
        }
        Ok(())
    }

    /// Checks a DPUB/`defer` bound: nsqd reads the delay as int64 milliseconds and multiplies it
    /// into int64 nanoseconds (v1.3.0 `protocol_v2.go:882-888`, `http.go:236-244`); past that it
    /// overflows.
    pub(crate) fn validate_max_defer(max_defer: Duration) -> Result<(), Error> {
        if max_defer > Duration::from_nanos(i64::MAX.unsigned_abs()) {
            return Err(Error::config(
                "max_defer",
                "must be at most 292 years (nsqd computes the delay in int64 nanoseconds)",
            ));
        }
        Ok(())
    }

    fn apply_features(&self, identify: &mut IdentifyRequest) {
        identify.tls_v1 = self.tls.is_some();
        identify.snappy = self.compression == Compression::Snappy;
        if let Compression::Deflate { level } = self.compression {
            identify.deflate = true;
            identify.deflate_level = i64::from(level);
        } else {
            identify.deflate = false;
        }
    }

    /// The heartbeat interval asked for, `None` when disabled. `0` (server default) is 30 s.
    pub(crate) fn heartbeat(&self) -> Option<Duration> {
        match self.identify.heartbeat_interval {
            i if i < 0 => None,
            0 => Some(Self::DEFAULT_HEARTBEAT_INTERVAL),
            ms => Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        }
    }

    pub(crate) fn handshake(
        &self,
        subscribe: Option<(crate::Topic, crate::Channel)>,
    ) -> HandshakeConfig {
        let mut identify = self.identify.clone();
        self.apply_features(&mut identify);
        HandshakeConfig {
            identify,
            tls: self.tls.clone(),
            auth_secret: self.auth_secret.clone(),
            subscribe,
            timeout: self.connect_timeout,
            max_frame_len: self.max_frame_len,
            dialer: self.dialer.clone(),
        }
    }
}

/// Checks an nsqd TCP address: `host:port` with a non-empty host and a valid port.
pub(crate) fn validate_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{addr:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{addr:?} has no valid port")),
    }
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here (and never prints secrets).
        let Self {
            identify,
            tls,
            compression,
            auth_secret,
            connect_timeout,
            max_frame_len,
            publish_limits,
            reconnect,
            dialer,
        } = self;
        f.debug_struct("ConnectionConfig")
            .field("identify", identify)
            .field("tls", tls)
            .field("compression", compression)
            .field("auth_secret", &auth_secret.as_ref().map(|_| "***"))
            .field("connect_timeout", connect_timeout)
            .field("max_frame_len", max_frame_len)
            .field("publish_limits", publish_limits)
            .field("reconnect", reconnect)
            .field("dialer", dialer)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        ConnectionConfig::new().validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                ConnectionConfig::new().heartbeat_interval(Some(Duration::from_millis(10))),
                "heartbeat_interval",
            ),
            (
                ConnectionConfig::new().msg_timeout(Some(Duration::from_secs(3600))),
                "msg_timeout",
            ),
            (ConnectionConfig::new().sample_rate(100), "sample_rate"),
            (ConnectionConfig::new().deflate(10), "deflate_level"),
            (
                ConnectionConfig::new().output_buffer_size(Some(10)),
                "output_buffer_size",
            ),
            (
                ConnectionConfig::new().connect_timeout(Duration::ZERO),
                "connect_timeout",
            ),
            (
                ConnectionConfig::new().publish_limits(5 << 20, 1 << 20),
                "publish_limits",
            ),
            (
                // Every IDENTIFY would draw a fatal "IDENTIFY body too big" forever.
                ConnectionConfig::new().client_id("x".repeat(10 << 20)),
                "client_id",
            ),
            (
                ConnectionConfig::new()
                    .publish_limits(100, 1000)
                    .user_agent("u".repeat(1000)),
                "user_agent",
            ),
            (
                ConnectionConfig::new().auth_secret("s".repeat((5 << 20) + 1)),
                "auth_secret",
            ),
            (ConnectionConfig::new().auth_secret(""), "auth_secret"),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn sizes_at_nsqds_limits_are_fine() {
        ConnectionConfig::new()
            .publish_limits(5 << 20, 5 << 20)
            .client_id("x".repeat(4 << 20))
            .auth_secret("s".repeat(5 << 20))
            .validate()
            .unwrap();
    }

    #[test]
    fn addresses_are_checked() {
        for ok in [
            "127.0.0.1:4150",
            "localhost:4150",
            "[::1]:4150",
            "nsqd-1.example:1",
        ] {
            assert!(validate_addr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "4150",
            "host:",
            ":4150",
            "host:0",
            "host:99999",
            "ho st:1",
        ] {
            assert!(validate_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", ConnectionConfig::new().auth_secret("hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn features_reach_identify() {
        let hs = ConnectionConfig::new().deflate(3).handshake(None);
        assert!(hs.identify.deflate && !hs.identify.snappy);
        assert_eq!(hs.identify.deflate_level, 3);
        let hs = ConnectionConfig::new()
            .deflate(3)
            .snappy(true)
            .handshake(None);
        assert!(hs.identify.snappy && !hs.identify.deflate);
    }
}
