//! SIGINT and SIGTERM as a future, for the examples that stop gracefully.

use std::io;

/// Listens for SIGINT (Ctrl-C) and SIGTERM (what `kill`, systemd and Kubernetes send).
///
/// The handlers are installed when this is created, not when it is first awaited: a signal
/// that arrives between start-up and the first await is not lost, and never kills the process
/// with the default action.
pub(crate) struct Shutdown {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers. Needs a running tokio runtime (actix's is one).
    ///
    /// # Errors
    ///
    /// When the operating system refuses the handlers.
    pub(crate) fn listen() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves with the signal's name when one arrives.
    pub(crate) async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}
