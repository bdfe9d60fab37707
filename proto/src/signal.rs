//! Shutdown on SIGINT or SIGTERM, the same way in every binary: the first of either cancels
//! a token, and the log says which one arrived. Only `main` decides the exit code.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGINT or SIGTERM and returns its name. If the handlers
/// cannot be installed it logs why and waits for `shutdown` instead (stop with --duration).
pub async fn cancel_on_signal(shutdown: CancellationToken) -> Option<&'static str> {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install SIGINT/SIGTERM handlers");
        return None;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = shutdown.cancelled() => return None,
    };
    tracing::warn!(signal = name, "shutting down");
    shutdown.cancel();
    Some(name)
}
