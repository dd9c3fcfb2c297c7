//! TLS for nsqd connections: rustls with the ring provider.
//!
//! nsqd upgrades to TLS right after its IDENTIFY reply when both sides asked for `tls_v1`
//! (`nsqd/protocol_v2.go`, `IDENTIFY`). The client verifies the server certificate by default
//! (against webpki-roots plus any roots added), unlike tokio-nsq whose default skips it.

use std::{
    fmt,
    path::Path,
    sync::{Arc, OnceLock},
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    sign::{CertifiedKey, SingleCertAndKey},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_rustls::TlsConnector;

use crate::error::{Error, Result};

fn provider() -> Arc<CryptoProvider> {
    // Explicit rather than the process default: an application may install another provider,
    // or none at all.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::tls_caused(context, e)
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&format!("{what} PEM"), e))?;
    if certs.is_empty() {
        return Err(Error::tls(format!("{what} PEM holds no CERTIFICATE block")));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>> {
    // The PEM error names the problem, never the key's bytes.
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| tls_error(&format!("{what} PEM"), e))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| tls_error(&format!("reading {what} {}", path.display()), e))
}

fn root_store(certs: &[CertificateDer<'static>], built_in: bool) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if built_in {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(|e| tls_error("root certificate", e))?;
    }
    Ok(roots)
}

/// TLS settings for connections to nsqd.
///
/// By default the server certificate is verified against the Mozilla roots shipped in
/// `webpki-roots`, for the host part of the nsqd address. A private CA is added with
/// [`add_root_certificate_pem`](Self::add_root_certificate_pem); mutual TLS is set up with
/// [`client_certificate_pem`](Self::client_certificate_pem).
///
/// Asking for TLS makes the connection fail closed: when nsqd does not offer TLS, the
/// handshake fails with [`Error::Tls`] instead of going on in plaintext.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let ca_pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/src/testing/certs/ca.pem"))?;
/// use actix_nsq::TlsConfig;
///
/// let tls = TlsConfig::new()
///     .add_root_certificate_pem(ca_pem)?
///     .server_name("nsqd.internal")?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use = "settings do nothing until passed on"]
pub struct TlsConfig {
    roots: Vec<CertificateDer<'static>>,
    built_in_roots: bool,
    client_identity: Option<Arc<CertifiedKey>>,
    accept_invalid_certs: bool,
    server_name: Option<ServerName<'static>>,
    /// Built once and shared by clones, so reconnects can resume TLS sessions.
    client_config: Arc<OnceLock<Arc<ClientConfig>>>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl TlsConfig {
    /// Verifies the server against the built-in (webpki-roots) trust anchors, sends no client
    /// certificate, and checks the certificate against the host nsqd was dialled by.
    pub fn new() -> Self {
        Self {
            roots: Vec::new(),
            built_in_roots: true,
            client_identity: None,
            accept_invalid_certs: false,
            server_name: None,
            client_config: Arc::default(),
        }
    }

    fn changed(mut self) -> Self {
        self.client_config = Arc::default();
        self
    }

    /// Trusts the CA certificate(s) in `pem` as well as the built-in roots.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when `pem` holds no certificate or one that cannot be a trust anchor.
    pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Result<Self> {
        let certs = parse_certs(pem.as_ref(), "root certificate")?;
        root_store(&certs, false)?;
        self.roots.extend(certs);
        Ok(self.changed())
    }

    /// Reads a PEM file and trusts the CA certificate(s) in it, as
    /// [`add_root_certificate_pem`](Self::add_root_certificate_pem).
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when the file cannot be read or holds no usable certificate.
    pub fn add_root_certificate_pem_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let pem = read_file(path.as_ref(), "root certificate")?;
        self.add_root_certificate_pem(pem)
    }

    /// Whether to trust the built-in webpki-roots (default `true`). Turn it off to trust
    /// only the roots added with [`add_root_certificate_pem`](Self::add_root_certificate_pem).
    pub fn built_in_roots(mut self, enabled: bool) -> Self {
        self.built_in_roots = enabled;
        self.changed()
    }

    /// Presents this certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or
    /// SEC1 PEM) when nsqd asks for a client certificate (`--tls-client-auth-policy`).
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when either PEM cannot be parsed, the key type is not supported, or the
    /// key does not belong to the certificate.
    pub fn client_certificate_pem(
        mut self,
        cert_chain: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Result<Self> {
        let chain = parse_certs(cert_chain.as_ref(), "client certificate")?;
        let key = parse_key(key.as_ref(), "client key")?;
        let certified = CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| tls_error("client certificate and key", e))?;
        self.client_identity = Some(Arc::new(certified));
        Ok(self.changed())
    }

    /// Reads the client certificate chain and key from PEM files, as
    /// [`client_certificate_pem`](Self::client_certificate_pem).
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when a file cannot be read or its contents are not usable.
    pub fn client_certificate_pem_file(
        self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self> {
        let chain = read_file(cert_chain.as_ref(), "client certificate")?;
        let key = read_file(key.as_ref(), "client key")?;
        self.client_certificate_pem(chain, key)
    }

    /// Accepts any server certificate: expired, self-signed, for another name. The handshake
    /// signatures are still checked, so the peer holds the key of the certificate it shows,
    /// but nothing says who that peer is. Anyone on the path can read and change the traffic.
    /// For tests and short-lived experiments only.
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.accept_invalid_certs = true;
        self.changed()
    }

    /// The name to verify the certificate against (and to send as SNI), instead of the host
    /// part of the nsqd address. IP addresses are accepted and checked as IP SANs.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when `name` is neither a DNS name nor an IP address.
    pub fn server_name(mut self, name: impl Into<String>) -> Result<Self> {
        self.server_name = Some(parse_server_name(name.into())?);
        Ok(self)
    }

    /// The name the certificate of `host` is checked against.
    pub(crate) fn server_name_for(&self, host: &str) -> Result<ServerName<'static>> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => parse_server_name(host.to_owned()),
        }
    }

    /// A connector for these settings; the rustls config is built on first use and shared.
    pub(crate) fn connector(&self) -> Result<TlsConnector> {
        if let Some(config) = self.client_config.get() {
            return Ok(TlsConnector::from(Arc::clone(config)));
        }
        let config = Arc::new(self.build_client_config()?);
        let config = self.client_config.get_or_init(|| config);
        Ok(TlsConnector::from(Arc::clone(config)))
    }

    fn build_client_config(&self) -> Result<ClientConfig> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("protocol versions", e))?;
        let builder = if self.accept_invalid_certs {
            let verifier = AcceptAnyServerCert(provider.signature_verification_algorithms);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        } else {
            builder.with_root_certificates(root_store(&self.roots, self.built_in_roots)?)
        };
        Ok(match &self.client_identity {
            Some(identity) => builder
                .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(identity)))),
            None => builder.with_no_client_auth(),
        })
    }
}

impl TlsConfig {
    /// A rustls config for HTTPS to nsqd's and nsqlookupd's HTTP APIs (ALPN `http/1.1`).
    pub(crate) fn http_client_config(&self) -> Result<Arc<ClientConfig>> {
        let mut config = self.build_client_config()?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn parse_server_name(name: String) -> Result<ServerName<'static>> {
    ServerName::try_from(name.clone())
        .map_err(|e| Error::tls_caused(format!("{name:?} is not a valid server name"), e))
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            roots,
            built_in_roots,
            client_identity,
            accept_invalid_certs,
            server_name,
            client_config: _,
        } = self;
        f.debug_struct("TlsConfig")
            .field("added_roots", &roots.len())
            .field("built_in_roots", built_in_roots)
            .field("client_certificate", &client_identity.is_some())
            .field("accept_invalid_certs", accept_invalid_certs)
            .field(
                "server_name",
                &server_name.as_ref().map(|n| n.to_str().into_owned()),
            )
            .finish()
    }
}

/// Trusts any certificate but still verifies the handshake signatures with the provider's
/// algorithms, so a malformed or mismatched signature fails the handshake.
#[derive(Debug)]
struct AcceptAnyServerCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The server side, for the in-process test nsqd: an acceptor presenting `cert_chain_pem`
/// with `key_pem`, and, when `client_ca_pem` is given, requiring a client certificate signed
/// by it (nsqd `--tls-client-auth-policy=require-verify`).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn server_acceptor(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::{server::WebPkiClientVerifier, ServerConfig};

    let provider = provider();
    let chain = parse_certs(cert_chain_pem, "server certificate")?;
    let key = parse_key(key_pem, "server key")?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let roots = root_store(&parse_certs(pem, "client CA")?, false)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| tls_error("client verifier", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("server certificate", e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
