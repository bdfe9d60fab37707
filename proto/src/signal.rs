//! Shutdown on SIGINT or SIGTERM, the same way in every binary: the first of either cancels
//! a token, and the log says which one arrived. Only `main` decides the exit code.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives a moment later is
/// never handled by the default action, which would kill the process without its report),
/// and spawns a task that cancels `shutdown` on the first of them. Call it inside the
/// runtime, before anything else.
pub fn cancel_on_signal(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = shutdown.cancelled() => return,
        };
        tracing::warn!(signal = name, "shutting down");
        shutdown.cancel();
    });
    Ok(())
}
