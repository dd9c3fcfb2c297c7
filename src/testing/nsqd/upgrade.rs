//! Connection upgrades, as `nsqd/protocol_v2.go` (`IDENTIFY`) and `nsqd/client_v2.go`
//! (`UpgradeTLS`, `UpgradeSnappy`, `UpgradeDeflate`) perform them, with the transport
//! layer's stream wrappers; and the client TLS settings that trust the test server.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::{
    conn::BoxIo,
    identify::Upgrades,
    record::{ClientId, ClientInfo},
    server::Shared,
    TestNsqd,
};
use crate::{
    protocol::{Frame, Response},
    testing::certs,
    transport::{DeflateStream, Rewind, SnappyStream, TlsConfig},
};

/// How long the TLS handshake may take (`clientV2.UpgradeTLS` sets a 5 s deadline); the
/// `OK` after each upgrade gets as long.
const UPGRADE_DEADLINE: Duration = Duration::from_secs(5);

/// Upgrades the stream as nsqd's `IDENTIFY` does: TLS first, then snappy or deflate, each
/// followed by an `OK` frame written over the upgraded stream (so the `OK` after TLS is
/// encrypted but not compressed). `buffered` holds bytes the client sent after IDENTIFY
/// that were already read (a TLS ClientHello, or compressed commands) and are replayed to
/// the first new layer. Here the test server is kinder than nsqd, whose upgrades wrap the
/// bare `net.Conn` and so drop whatever its `bufio.Reader` had already read: a client must
/// not send before the reply, and one that does works here but hangs against nsqd.
///
/// Each upgrade shows in [`ClientInfo`] before its `OK` goes out, so a client that read the
/// `OK` finds it there.
pub(super) async fn upgrade_stream(
    io: BoxIo,
    buffered: BytesMut,
    upgrades: Upgrades,
    shared: &Shared,
    id: ClientId,
) -> Result<BoxIo, String> {
    let mut io: BoxIo = if buffered.is_empty() {
        io
    } else {
        Box::new(Rewind::new(buffered, io))
    };
    if upgrades.tls {
        let acceptor = shared
            .opts
            .tls_acceptor
            .as_ref()
            .ok_or("TLS is not configured")?;
        let tls = tokio::time::timeout(UPGRADE_DEADLINE, acceptor.accept(io))
            .await
            .map_err(|_| "TLS handshake timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let version = tls.get_ref().1.protocol_version();
        tracing::debug!(client = %id, ?version, "upgraded to TLS");
        io = Box::new(tls);
        update_info(shared, id, |info| info.tls = true);
        write_ok(&mut io).await?;
    }
    if upgrades.snappy {
        tracing::debug!(client = %id, "upgrading to snappy");
        io = Box::new(SnappyStream::new(io));
        update_info(shared, id, |info| info.snappy = true);
        write_ok(&mut io).await?;
    }
    if let Some(level) = upgrades.deflate {
        tracing::debug!(client = %id, level, "upgrading to deflate");
        io = Box::new(DeflateStream::new(io, level));
        update_info(shared, id, |info| {
            info.deflate = true;
            info.deflate_level = level;
        });
        write_ok(&mut io).await?;
    }
    Ok(io)
}

fn update_info(shared: &Shared, id: ClientId, update: impl FnOnce(&mut ClientInfo)) {
    if let Some(client) = shared.broker().client_mut(id) {
        update(&mut client.info);
    }
}

async fn write_ok(io: &mut BoxIo) -> Result<(), String> {
    let ok = Frame::Response(Response::Ok).to_bytes();
    let write = async {
        io.write_all(&ok).await?;
        io.flush().await
    };
    match tokio::time::timeout(UPGRADE_DEADLINE, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("write deadline".to_owned()),
    }
}

impl TestNsqd {
    /// TLS settings that trust the test server (started with
    /// [`tls(true)`](super::TestNsqdBuilder::tls)) and nothing else: the test CA
    /// ([`certs::CA_PEM`]) as the only root, the built-in roots off. The certificate is
    /// valid for `127.0.0.1`, `::1` and `localhost`, so [`addr`](Self::addr) verifies as is.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), actix_nsq::Error> {
    /// use actix_nsq::{testing::TestNsqd, ConnectionConfig};
    ///
    /// let nsqd = TestNsqd::builder().tls(true).start()?;
    /// let config = ConnectionConfig::new().tls(TestNsqd::tls_config()).snappy(true);
    /// // ... Producer::builder().nsqd(nsqd.addr().to_string()).connection(config) ...
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls_config() -> TlsConfig {
        let only_test_ca = TlsConfig::new().built_in_roots(false);
        // The CA is a constant checked by the tests; should it ever fail to parse, a config
        // trusting nothing fails every handshake, which is the safe way to be wrong.
        only_test_ca
            .clone()
            .add_root_certificate_pem(certs::CA_PEM)
            .unwrap_or(only_test_ca)
    }

    /// [`tls_config`](Self::tls_config) that also presents the test client certificate
    /// ([`certs::CLIENT_CERT_PEM`]), as a server with
    /// [`tls_client_auth(true)`](super::TestNsqdBuilder::tls_client_auth) requires.
    pub fn tls_config_with_client_cert() -> TlsConfig {
        let server_only = Self::tls_config();
        server_only
            .clone()
            .client_certificate_pem(certs::CLIENT_CERT_PEM, certs::CLIENT_KEY_PEM)
            .unwrap_or(server_only)
    }
}
