//! The test PKI: a CA, a server certificate signed by it (for `localhost`, `127.0.0.1` and
//! `::1`), a client certificate signed by it, and an unrelated CA. [`TestNsqd`] serves TLS
//! with the server certificate and, with client auth on, requires the client certificate.
//!
//! These keys are committed to the repository, so they protect nothing: use them in tests
//! only. How they were made is in `src/testing/certs/README.md`.
//!
//! ```
//! use actix_nsq::{testing::certs, TlsConfig};
//!
//! let tls = TlsConfig::new()
//!     .built_in_roots(false)
//!     .add_root_certificate_pem(certs::CA_PEM)?
//!     .client_certificate_pem(certs::CLIENT_CERT_PEM, certs::CLIENT_KEY_PEM)?;
//! # Ok::<(), actix_nsq::Error>(())
//! ```
//!
//! [`TestNsqd`]: super::TestNsqd

/// The test CA's certificate (PEM): the root that signed the server and client certificates.
pub const CA_PEM: &[u8] = include_bytes!("ca.pem");

/// The test nsqd's certificate (PEM), signed by [`CA_PEM`]; SANs `localhost`, `127.0.0.1`,
/// `::1`.
pub const SERVER_CERT_PEM: &[u8] = include_bytes!("server.pem");

/// The private key (PKCS#8 PEM) of [`SERVER_CERT_PEM`].
pub const SERVER_KEY_PEM: &[u8] = include_bytes!("server.key");

/// A client certificate (PEM, extended key usage `clientAuth`) signed by [`CA_PEM`], for
/// mutual TLS.
pub const CLIENT_CERT_PEM: &[u8] = include_bytes!("client.pem");

/// The private key (PKCS#8 PEM) of [`CLIENT_CERT_PEM`].
pub const CLIENT_KEY_PEM: &[u8] = include_bytes!("client.key");

/// An unrelated CA (PEM) that signed nothing here, for "wrong root" tests.
pub const OTHER_CA_PEM: &[u8] = include_bytes!("other-ca.pem");
