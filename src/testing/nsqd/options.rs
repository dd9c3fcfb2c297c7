//! The test nsqd's options: nsqd's flags with nsqd's defaults (`nsqd/options.go`).

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use tokio_rustls::TlsAcceptor;

use super::TestNsqd;
use crate::{
    error::Error,
    testing::{
        certs,
        lookupd::{LookupdLink, TestLookupd},
    },
    transport::server_acceptor,
};

/// The version the test nsqd reports in its IDENTIFY reply (`internal/version`).
pub const NSQD_VERSION: &str = "1.3.0";

/// What AUTH checks against, standing in for nsqd's `--auth-http-address` server.
#[derive(Clone)]
pub(crate) struct AuthConfig {
    pub(crate) secret: String,
    pub(crate) identity: String,
    pub(crate) identity_url: String,
}

/// The settled options, shared by every connection.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) tcp_address: SocketAddr,
    pub(crate) http_address: SocketAddr,
    pub(crate) lookupds: Vec<LookupdLink>,
    pub(crate) max_rdy_count: i64,
    pub(crate) max_msg_size: i64,
    pub(crate) max_body_size: i64,
    pub(crate) msg_timeout: Duration,
    pub(crate) max_msg_timeout: Duration,
    pub(crate) max_req_timeout: Duration,
    pub(crate) client_timeout: Duration,
    pub(crate) max_heartbeat_interval: Duration,
    pub(crate) max_output_buffer_size: i64,
    pub(crate) min_output_buffer_timeout: Duration,
    pub(crate) max_output_buffer_timeout: Duration,
    pub(crate) output_buffer_timeout: Duration,
    pub(crate) max_channel_consumers: usize,
    pub(crate) auth: Option<AuthConfig>,
    pub(crate) tls: bool,
    pub(crate) tls_required: bool,
    pub(crate) tls_client_auth: bool,
    /// Built from the test certificates when `tls` is on: nsqd's `tlsConfig`, whose presence
    /// is what IDENTIFY checks before offering `tls_v1`.
    pub(crate) tls_acceptor: Option<TlsAcceptor>,
    pub(crate) snappy: bool,
    pub(crate) deflate: bool,
    pub(crate) max_deflate_level: i64,
    pub(crate) queue_scan_interval: Duration,
    pub(crate) record_commands: bool,
}

impl Options {
    /// nsqd's defaults for a `MockNsqd` (see [`TestNsqdBuilder::into_mock_options`]).
    pub(in crate::testing) fn mock_defaults() -> Self {
        TestNsqdBuilder::new().opts.without_upgrades()
    }

    /// The pipes of a `MockNsqd` are plain: nothing to upgrade to, so IDENTIFY grants none
    /// (as an nsqd without `--tls-cert`, `--snappy` and `--deflate`).
    fn without_upgrades(mut self) -> Self {
        self.snappy = false;
        self.deflate = false;
        self.tls_acceptor = None;
        self
    }

    /// A client's heartbeat interval until it IDENTIFYs: nsqd uses half of `--client-timeout`
    /// (`newClientV2`).
    pub(crate) fn default_heartbeat(&self) -> Duration {
        self.client_timeout / 2
    }
}

/// Configures and starts a [`TestNsqd`]. Every option mirrors an nsqd flag and defaults to
/// nsqd's default, except the address (`127.0.0.1:0`) and the queue scan interval.
#[derive(Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct TestNsqdBuilder {
    opts: Options,
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl TestNsqdBuilder {
    /// `--max-rdy-count`.
    pub const DEFAULT_MAX_RDY_COUNT: i64 = 2_500;
    /// `--max-msg-size`: 1 MiB.
    pub const DEFAULT_MAX_MSG_SIZE: usize = 1024 * 1024;
    /// `--max-body-size`: 5 MiB.
    pub const DEFAULT_MAX_BODY_SIZE: usize = 5 * 1024 * 1024;
    /// `--msg-timeout`.
    pub const DEFAULT_MSG_TIMEOUT: Duration = Duration::from_secs(60);
    /// `--max-msg-timeout`.
    pub const DEFAULT_MAX_MSG_TIMEOUT: Duration = Duration::from_secs(15 * 60);
    /// `--max-req-timeout`.
    pub const DEFAULT_MAX_REQ_TIMEOUT: Duration = Duration::from_secs(60 * 60);
    /// nsqd's `ClientTimeout`: clients get heartbeats every half of it until they IDENTIFY.
    pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
    /// `--max-heartbeat-interval`.
    pub const DEFAULT_MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
    /// `--max-output-buffer-size`.
    pub const DEFAULT_MAX_OUTPUT_BUFFER_SIZE: usize = 64 * 1024;
    /// `--min-output-buffer-timeout`.
    pub const DEFAULT_MIN_OUTPUT_BUFFER_TIMEOUT: Duration = Duration::from_millis(25);
    /// `--max-output-buffer-timeout`.
    pub const DEFAULT_MAX_OUTPUT_BUFFER_TIMEOUT: Duration = Duration::from_secs(30);
    /// `--output-buffer-timeout`.
    pub const DEFAULT_OUTPUT_BUFFER_TIMEOUT: Duration = Duration::from_millis(250);
    /// `--max-deflate-level`.
    pub const DEFAULT_MAX_DEFLATE_LEVEL: i64 = 6;
    /// How often timed-out and deferred messages are looked for. nsqd scans every 100 ms;
    /// the test server scans more often so that tests with short timeouts stay fast.
    pub const DEFAULT_QUEUE_SCAN_INTERVAL: Duration = Duration::from_millis(20);

    /// nsqd's defaults, listening on `127.0.0.1:0`.
    pub fn new() -> Self {
        Self {
            opts: Options {
                tcp_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                http_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                lookupds: Vec::new(),
                max_rdy_count: Self::DEFAULT_MAX_RDY_COUNT,
                max_msg_size: to_i64(Self::DEFAULT_MAX_MSG_SIZE),
                max_body_size: to_i64(Self::DEFAULT_MAX_BODY_SIZE),
                msg_timeout: Self::DEFAULT_MSG_TIMEOUT,
                max_msg_timeout: Self::DEFAULT_MAX_MSG_TIMEOUT,
                max_req_timeout: Self::DEFAULT_MAX_REQ_TIMEOUT,
                client_timeout: Self::DEFAULT_CLIENT_TIMEOUT,
                max_heartbeat_interval: Self::DEFAULT_MAX_HEARTBEAT_INTERVAL,
                max_output_buffer_size: to_i64(Self::DEFAULT_MAX_OUTPUT_BUFFER_SIZE),
                min_output_buffer_timeout: Self::DEFAULT_MIN_OUTPUT_BUFFER_TIMEOUT,
                max_output_buffer_timeout: Self::DEFAULT_MAX_OUTPUT_BUFFER_TIMEOUT,
                output_buffer_timeout: Self::DEFAULT_OUTPUT_BUFFER_TIMEOUT,
                max_channel_consumers: 0,
                auth: None,
                tls: false,
                tls_required: false,
                tls_client_auth: false,
                tls_acceptor: None,
                snappy: true,
                deflate: true,
                max_deflate_level: Self::DEFAULT_MAX_DEFLATE_LEVEL,
                queue_scan_interval: Self::DEFAULT_QUEUE_SCAN_INTERVAL,
                record_commands: true,
            },
        }
    }

    /// `--tcp-address`: where to listen. Port 0 picks a free port; [`TestNsqd::restart`]
    /// reuses whatever port was picked.
    pub fn tcp_address(mut self, addr: SocketAddr) -> Self {
        self.opts.tcp_address = addr;
        self
    }

    /// `--http-address`: where the HTTP API listens (default `127.0.0.1:0`; restarts reuse
    /// the port picked).
    pub fn http_address(mut self, addr: SocketAddr) -> Self {
        self.opts.http_address = addr;
        self
    }

    /// `--lookupd-tcp-address`: registers with this test nsqlookupd (in process, no TCP)
    /// as nsqd does: broadcast address `127.0.0.1` with the TCP and HTTP ports, every topic
    /// and channel as they are created and deleted, a ping every 15 s, and gone when the
    /// server stops, is killed or dropped. Call it once per nsqlookupd.
    pub fn lookupd(mut self, lookupd: &TestLookupd) -> Self {
        self.opts.lookupds.push(lookupd.link());
        self
    }

    /// `--max-rdy-count`: the largest RDY a client may send.
    pub fn max_rdy_count(mut self, count: i64) -> Self {
        self.opts.max_rdy_count = count;
        self
    }

    /// `--max-msg-size`: the largest message, in bytes.
    pub fn max_msg_size(mut self, bytes: usize) -> Self {
        self.opts.max_msg_size = to_i64(bytes);
        self
    }

    /// `--max-body-size`: the largest MPUB (and IDENTIFY, AUTH) body, in bytes.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.opts.max_body_size = to_i64(bytes);
        self
    }

    /// `--msg-timeout`: how long a delivered message may go unanswered before it is requeued.
    /// Clients may ask for their own in IDENTIFY (at least 1 s, as nsqd enforces).
    pub fn msg_timeout(mut self, timeout: Duration) -> Self {
        self.opts.msg_timeout = timeout;
        self
    }

    /// `--max-msg-timeout`: the largest `msg_timeout` a client may ask for, and how far TOUCH
    /// may extend a message past its delivery.
    pub fn max_msg_timeout(mut self, timeout: Duration) -> Self {
        self.opts.max_msg_timeout = timeout;
        self
    }

    /// `--max-req-timeout`: the largest REQ delay (longer ones are clamped) and DPUB delay
    /// (longer ones are a fatal error).
    pub fn max_req_timeout(mut self, timeout: Duration) -> Self {
        self.opts.max_req_timeout = timeout;
        self
    }

    /// nsqd's `ClientTimeout`: until a client IDENTIFYs, it gets a heartbeat every half of
    /// this and is dropped after this long without a command.
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.opts.client_timeout = timeout;
        self
    }

    /// `--max-heartbeat-interval`: the largest `heartbeat_interval` a client may ask for.
    pub fn max_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.opts.max_heartbeat_interval = interval;
        self
    }

    /// `--max-output-buffer-size`: the largest `output_buffer_size` a client may ask for.
    pub fn max_output_buffer_size(mut self, bytes: usize) -> Self {
        self.opts.max_output_buffer_size = to_i64(bytes);
        self
    }

    /// `--min-output-buffer-timeout` and `--max-output-buffer-timeout`: the range of
    /// `output_buffer_timeout` a client may ask for. The test server accepts and reports the
    /// value but flushes as soon as it has nothing more to send.
    pub fn output_buffer_timeout_range(mut self, min: Duration, max: Duration) -> Self {
        self.opts.min_output_buffer_timeout = min;
        self.opts.max_output_buffer_timeout = max;
        self
    }

    /// `--output-buffer-timeout`: the value reported to clients that do not ask for one.
    pub fn output_buffer_timeout(mut self, timeout: Duration) -> Self {
        self.opts.output_buffer_timeout = timeout;
        self
    }

    /// `--max-channel-consumers`: 0 for no limit.
    pub fn max_channel_consumers(mut self, max: usize) -> Self {
        self.opts.max_channel_consumers = max;
        self
    }

    /// Requires AUTH with this secret before SUB, PUB, MPUB and DPUB, as nsqd does with an
    /// auth server that grants everything to this one secret. AUTH answers
    /// `{"identity":"test-identity","identity_url":"","permission_count":1}`.
    pub fn auth_secret(mut self, secret: impl Into<String>) -> Self {
        let identity = self.opts.auth.take().map(|a| (a.identity, a.identity_url));
        let (identity, identity_url) =
            identity.unwrap_or_else(|| ("test-identity".to_owned(), String::new()));
        self.opts.auth = Some(AuthConfig {
            secret: secret.into(),
            identity,
            identity_url,
        });
        self
    }

    /// The identity AUTH reports (only used with [`auth_secret`](Self::auth_secret)).
    pub fn auth_identity(mut self, identity: impl Into<String>, url: impl Into<String>) -> Self {
        if let Some(auth) = &mut self.opts.auth {
            auth.identity = identity.into();
            auth.identity_url = url.into();
        }
        self
    }

    /// Offer TLS to clients that ask for it in IDENTIFY (`--tls-cert`/`--tls-key` with
    /// [`certs::SERVER_CERT_PEM`] and [`certs::SERVER_KEY_PEM`]). Clients trust it with
    /// [`TestNsqd::tls_config`].
    pub fn tls(mut self, enabled: bool) -> Self {
        self.opts.tls = enabled;
        self
    }

    /// `--tls-required`: every command but IDENTIFY fails until the client upgraded to TLS.
    pub fn tls_required(mut self, required: bool) -> Self {
        self.opts.tls_required = required;
        self
    }

    /// `--tls-client-auth-policy=require-verify` with `--tls-root-ca-file` set to
    /// [`certs::CA_PEM`]: clients must present a certificate signed by the test CA, such as
    /// [`certs::CLIENT_CERT_PEM`] (see [`TestNsqd::tls_config_with_client_cert`]). Implies
    /// [`tls_required`](Self::tls_required), as in nsqd; needs [`tls`](Self::tls).
    pub fn tls_client_auth(mut self, required: bool) -> Self {
        self.opts.tls_client_auth = required;
        self
    }

    /// `--snappy` (on by default): grant snappy compression to clients that ask for it.
    pub fn snappy(mut self, enabled: bool) -> Self {
        self.opts.snappy = enabled;
        self
    }

    /// `--deflate` (on by default): grant deflate compression to clients that ask for it.
    pub fn deflate(mut self, enabled: bool) -> Self {
        self.opts.deflate = enabled;
        self
    }

    /// `--max-deflate-level`: 1..=9 (default 6). Clients asking for more get this level.
    pub fn max_deflate_level(mut self, level: i64) -> Self {
        self.opts.max_deflate_level = level;
        self
    }

    /// How often in-flight timeouts and deferred messages are checked.
    pub fn queue_scan_interval(mut self, interval: Duration) -> Self {
        self.opts.queue_scan_interval = interval;
        self
    }

    /// Whether to record every command for [`TestNsqd::commands`] (on by default). A
    /// long-running server can turn it off to keep its memory flat.
    pub fn record_commands(mut self, record: bool) -> Self {
        self.opts.record_commands = record;
        self
    }

    /// Starts the server on its own thread.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an option nsqd would refuse to start with, [`Error::Io`] when
    /// the address cannot be bound.
    pub fn start(self) -> Result<TestNsqd, Error> {
        let opts = self.validated()?;
        TestNsqd::spawn(opts)
    }

    /// The validated options for a `MockNsqd`, which has nothing to upgrade to and no auth
    /// server: snappy and deflate are not offered; TLS and AUTH are refused as settings.
    pub(in crate::testing) fn into_mock_options(self) -> Result<Options, Error> {
        if self.opts.tls {
            return Err(Error::config("tls", "MockNsqd offers no TLS"));
        }
        if self.opts.auth.is_some() {
            return Err(Error::config("auth_secret", "MockNsqd offers no AUTH"));
        }
        Ok(self.validated()?.without_upgrades())
    }

    #[cfg(test)]
    pub(crate) fn into_options(self) -> Options {
        self.validated().unwrap()
    }

    fn validated(mut self) -> Result<Options, Error> {
        let o = &mut self.opts;
        let positive = |field: &'static str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(Error::config(field, "must be greater than zero"))
            }
        };
        positive("max_rdy_count", o.max_rdy_count > 0)?;
        positive("max_msg_size", o.max_msg_size > 0)?;
        positive("max_body_size", o.max_body_size > 0)?;
        positive("msg_timeout", !o.msg_timeout.is_zero())?;
        positive("max_msg_timeout", !o.max_msg_timeout.is_zero())?;
        positive(
            "client_timeout",
            o.client_timeout >= Duration::from_millis(2),
        )?;
        positive("queue_scan_interval", !o.queue_scan_interval.is_zero())?;
        positive("max_output_buffer_size", o.max_output_buffer_size > 0)?;
        if o.min_output_buffer_timeout > o.max_output_buffer_timeout {
            return Err(Error::config(
                "output_buffer_timeout_range",
                "min is above max",
            ));
        }
        if !(1..=9).contains(&o.max_deflate_level) {
            // nsqd.New: "--max-deflate-level must be [1,9]".
            return Err(Error::config("max_deflate_level", "must be in 1..=9"));
        }
        if o.tls_client_auth {
            o.tls_required = true;
        }
        if o.tls_required && !o.tls {
            return Err(Error::config(
                "tls_required",
                "cannot require TLS client connections without TLS key and cert",
            ));
        }
        if o.tls {
            let client_ca = o.tls_client_auth.then_some(certs::CA_PEM);
            let acceptor =
                server_acceptor(certs::SERVER_CERT_PEM, certs::SERVER_KEY_PEM, client_ca)?;
            o.tls_acceptor = Some(acceptor);
        }
        Ok(self.opts)
    }
}

impl Default for TestNsqdBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TestNsqdBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.opts;
        f.debug_struct("TestNsqdBuilder")
            .field("tcp_address", &o.tcp_address)
            .field("http_address", &o.http_address)
            .field("lookupds", &o.lookupds.len())
            .field("max_rdy_count", &o.max_rdy_count)
            .field("max_msg_size", &o.max_msg_size)
            .field("max_body_size", &o.max_body_size)
            .field("msg_timeout", &o.msg_timeout)
            .field("max_msg_timeout", &o.max_msg_timeout)
            .field("max_req_timeout", &o.max_req_timeout)
            .field("client_timeout", &o.client_timeout)
            .field("max_heartbeat_interval", &o.max_heartbeat_interval)
            .field("auth_secret", &o.auth.as_ref().map(|_| "<redacted>"))
            .field("tls", &o.tls)
            .field("tls_required", &o.tls_required)
            .field("tls_client_auth", &o.tls_client_auth)
            .field("snappy", &o.snappy)
            .field("deflate", &o.deflate)
            .field("max_deflate_level", &o.max_deflate_level)
            .field("queue_scan_interval", &o.queue_scan_interval)
            .field("record_commands", &o.record_commands)
            .finish_non_exhaustive()
    }
}
