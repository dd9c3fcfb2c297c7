//! The connection flags of the `tail` and `to_nsq` examples: TLS, compression and AUTH, named
//! after the `tls_*`, `snappy`, `deflate` and `auth_secret` options of nsq's own tools.

use std::path::PathBuf;

use actix_nsq::{ConnectionConfig, Error, TlsConfig};
use clap::Args;

/// go-nsq's default `deflate_level`.
const DEFAULT_DEFLATE_LEVEL: &str = "6";

/// How to talk to nsqd: TLS, compression, AUTH.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectionArgs {
    /// Upgrade connections to TLS, verifying nsqd's certificate against the built-in roots
    /// (implied by the other --tls-* flags). Fails if nsqd does not offer TLS.
    #[arg(long)]
    tls: bool,
    /// A PEM file of CA certificates to trust besides the built-in roots.
    #[arg(long, value_name = "PATH")]
    tls_root_ca_file: Option<PathBuf>,
    /// A PEM client certificate chain to present to nsqd (mutual TLS; needs --tls-key).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Accept any server certificate. Anyone on the path can then read and change the
    /// traffic: for tests only.
    #[arg(long)]
    tls_insecure_skip_verify: bool,
    /// Snappy compression.
    #[arg(long, conflicts_with = "deflate")]
    snappy: bool,
    /// Deflate compression at LEVEL (1-9; 6 when no level is given).
    #[arg(
        long,
        value_name = "LEVEL",
        num_args = 0..=1,
        default_missing_value = DEFAULT_DEFLATE_LEVEL,
        value_parser = clap::value_parser!(u32).range(1..=9),
    )]
    deflate: Option<u32>,
    /// The AUTH secret, sent when nsqd requires AUTH. Prefer the environment variable: command
    /// lines are visible to every user of the machine.
    #[arg(long, env = "NSQ_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
}

impl ConnectionArgs {
    /// The connection settings these flags describe, with `user_agent` in IDENTIFY.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when a certificate or key file cannot be read or used.
    pub(crate) fn config(&self, user_agent: &str) -> Result<ConnectionConfig, Error> {
        let mut config = ConnectionConfig::new().user_agent(user_agent);
        if let Some(tls) = self.tls()? {
            config = config.tls(tls);
        }
        if self.snappy {
            config = config.snappy(true);
        }
        if let Some(level) = self.deflate {
            config = config.deflate(level);
        }
        if let Some(secret) = &self.auth_secret {
            config = config.auth_secret(secret.clone());
        }
        Ok(config)
    }

    fn tls(&self) -> Result<Option<TlsConfig>, Error> {
        let wanted = self.tls
            || self.tls_root_ca_file.is_some()
            || self.tls_cert.is_some()
            || self.tls_insecure_skip_verify;
        if !wanted {
            return Ok(None);
        }
        let mut tls = TlsConfig::new();
        if let Some(ca) = &self.tls_root_ca_file {
            tls = tls.add_root_certificate_pem_file(ca)?;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.client_certificate_pem_file(cert, key)?;
        }
        if self.tls_insecure_skip_verify {
            tls = tls.danger_accept_invalid_certs();
        }
        Ok(Some(tls))
    }
}
