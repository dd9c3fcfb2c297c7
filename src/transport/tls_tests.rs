use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

use super::*;

pub(crate) const CA: &[u8] = include_bytes!("../testing/certs/ca.pem");
pub(crate) const OTHER_CA: &[u8] = include_bytes!("../testing/certs/other-ca.pem");
pub(crate) const SERVER_CERT: &[u8] = include_bytes!("../testing/certs/server.pem");
pub(crate) const SERVER_KEY: &[u8] = include_bytes!("../testing/certs/server.key");
pub(crate) const CLIENT_CERT: &[u8] = include_bytes!("../testing/certs/client.pem");
pub(crate) const CLIENT_KEY: &[u8] = include_bytes!("../testing/certs/client.key");

fn trusting_test_ca() -> TlsConfig {
    TlsConfig::new().add_root_certificate_pem(CA).unwrap()
}

/// Runs a TLS handshake over an in-memory pipe, then a ping from the client and a pong back.
async fn exchange(config: &TlsConfig, host: &str, require_client_cert: bool) -> Result<()> {
    let client_ca = require_client_cert.then_some(CA);
    let acceptor = server_acceptor(SERVER_CERT, SERVER_KEY, client_ca).unwrap();
    let (client_io, server_io) = duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let mut tls = acceptor.accept(server_io).await?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await?;
        tls.write_all(b"pong").await?;
        tls.flush().await?;
        std::io::Result::Ok(ping)
    });
    let connector = config.connector()?;
    let name = config.server_name_for(host)?;
    let mut tls = connector
        .connect(name, client_io)
        .await
        .map_err(|e| tls_error("handshake", e))?;
    tls.write_all(b"ping").await?;
    tls.flush().await?;
    let mut pong = [0u8; 4];
    // With TLS 1.3 a refused client certificate shows up here, at the first read.
    tls.read_exact(&mut pong)
        .await
        .map_err(|e| tls_error("read", e))?;
    assert_eq!(&pong, b"pong");
    assert_eq!(&server.await.unwrap().unwrap(), b"ping");
    Ok(())
}

#[tokio::test]
async fn verifies_against_an_added_root_for_dns_and_ip_names() {
    exchange(&trusting_test_ca(), "localhost", false)
        .await
        .unwrap();
    exchange(&trusting_test_ca(), "127.0.0.1", false)
        .await
        .unwrap();
    exchange(&trusting_test_ca(), "::1", false).await.unwrap();
    let only_ours = trusting_test_ca().built_in_roots(false);
    exchange(&only_ours, "localhost", false).await.unwrap();
}

#[tokio::test]
async fn refuses_an_unknown_issuer_or_the_wrong_name() {
    let err = exchange(&TlsConfig::new(), "localhost", false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message: m, .. } if m.contains("UnknownIssuer")),
        "{err}"
    );

    let wrong_root = TlsConfig::new().add_root_certificate_pem(OTHER_CA).unwrap();
    let err = exchange(&wrong_root, "localhost", false).await.unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message: m, .. } if m.contains("UnknownIssuer")),
        "{err}"
    );

    let err = exchange(&trusting_test_ca(), "nsqd.example.com", false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message: m, .. } if m.contains("not valid for name")),
        "{err}"
    );
}

#[tokio::test]
async fn the_server_name_override_replaces_the_host() {
    let config = trusting_test_ca().server_name("localhost").unwrap();
    exchange(&config, "10.1.2.3", false).await.unwrap();
    let config = trusting_test_ca().server_name("nsqd.example.com").unwrap();
    assert!(exchange(&config, "localhost", false).await.is_err());
}

#[tokio::test]
async fn danger_accept_invalid_certs_accepts_an_unknown_issuer() {
    let config = TlsConfig::new()
        .built_in_roots(false)
        .danger_accept_invalid_certs();
    exchange(&config, "nsqd.example.com", false).await.unwrap();
}

#[tokio::test]
async fn presents_a_client_certificate_when_the_server_requires_one() {
    let with_cert = trusting_test_ca()
        .client_certificate_pem(CLIENT_CERT, CLIENT_KEY)
        .unwrap();
    exchange(&with_cert, "localhost", true).await.unwrap();

    let err = exchange(&trusting_test_ca(), "localhost", true)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message: m, .. } if m.contains("CertificateRequired")),
        "{err}"
    );
}

#[test]
fn bad_pem_is_a_clear_tls_error() {
    let err = TlsConfig::new()
        .add_root_certificate_pem(b"not a pem")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tls: root certificate PEM holds no CERTIFICATE block"
    );

    let err = TlsConfig::new()
        .client_certificate_pem(CLIENT_CERT, b"nothing")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message: m, .. } if m.starts_with("client key PEM")),
        "{err}"
    );

    let err = TlsConfig::new()
        .client_certificate_pem(CLIENT_CERT, SERVER_KEY)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message: m, .. } if m.starts_with("client certificate and key")),
        "{err}"
    );

    let err = TlsConfig::new().server_name("not a host!").unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message: m, .. } if m.contains("not a valid server name")),
        "{err}"
    );
}

#[test]
fn reads_pem_files_and_names_the_missing_one() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testing/certs/");
    let _loaded = TlsConfig::new()
        .add_root_certificate_pem_file(format!("{dir}ca.pem"))
        .unwrap()
        .client_certificate_pem_file(format!("{dir}client.pem"), format!("{dir}client.key"))
        .unwrap();
    let err = TlsConfig::new()
        .add_root_certificate_pem_file("/nonexistent/ca.pem")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message: m, .. } if m.contains("/nonexistent/ca.pem")),
        "{err}"
    );
}

#[test]
fn debug_shows_settings_but_no_key_material() {
    let config = trusting_test_ca()
        .client_certificate_pem(CLIENT_CERT, CLIENT_KEY)
        .unwrap()
        .server_name("localhost")
        .unwrap();
    let debug = format!("{config:?}");
    assert_eq!(
        debug,
        "TlsConfig { added_roots: 1, built_in_roots: true, client_certificate: true, \
         accept_invalid_certs: false, server_name: Some(\"localhost\") }"
    );
}

#[test]
fn clones_share_the_built_client_config() {
    let config = trusting_test_ca();
    let clone = config.clone();
    config.connector().unwrap();
    assert!(clone.client_config.get().is_some());
    // Changing a setting starts over.
    assert!(clone.built_in_roots(false).client_config.get().is_none());
}
