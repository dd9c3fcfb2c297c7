//! Where a connection's byte stream comes from: a TCP dial by default, or a [`Dialer`] that
//! opens something else (the in-memory pipes of `testing::MockNsqd`). Everything above the
//! stream (handshake, codec, connection actor) runs unchanged either way.

use std::{fmt, io, sync::Arc};

use futures_util::future::BoxFuture;

use super::BoxedStream;

type DialFn = dyn Fn(&str) -> BoxFuture<'static, io::Result<BoxedStream>> + Send + Sync;

/// Opens the stream to an nsqd address in place of the TCP dial.
#[derive(Clone)]
pub(crate) struct Dialer(Arc<DialFn>);

impl Dialer {
    // Only the testing feature opens anything but TCP today.
    #[cfg(feature = "testing")]
    pub(crate) fn new<F>(dial: F) -> Self
    where
        F: Fn(&str) -> BoxFuture<'static, io::Result<BoxedStream>> + Send + Sync + 'static,
    {
        Self(Arc::new(dial))
    }

    pub(crate) fn dial(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxedStream>> {
        (self.0)(addr)
    }
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dialer(custom)")
    }
}
