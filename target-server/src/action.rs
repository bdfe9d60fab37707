//! What happens to a connection once accepted (`--on-accept`).
//!
//! The cheap actions (greeting bytes, close, reset) run inline in the accept loop so they
//! cost no task; only connections that must stay open get a task, tracked so that shutdown
//! waits for them and closes them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::OnAccept;

/// Nanoseconds since the Unix epoch, the greeting's payload.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Applies `action` to a freshly accepted connection.
pub(crate) fn start(
    stream: TcpStream,
    action: OnAccept,
    conns: &TaskTracker,
    cancel: &CancellationToken,
) {
    match action {
        OnAccept::Greet => {
            let greeting = unix_nanos().to_be_bytes();
            // A fresh socket's send buffer is empty, so 8 bytes always go out at once; the
            // fallback only guards against a kernel that says otherwise.
            let sent = matches!(stream.try_write(&greeting), Ok(8));
            let cancel = cancel.clone();
            conns.spawn(async move {
                let mut stream = stream;
                if !sent && stream.write_all(&greeting).await.is_err() {
                    return;
                }
                hold_until_peer_closes(&mut stream, &cancel).await;
            });
        }
        OnAccept::Echo => {
            let cancel = cancel.clone();
            conns.spawn(async move { echo(stream, &cancel).await });
        }
        OnAccept::Close => drop(stream),
        OnAccept::Reset => {
            // SO_LINGER 0: close() sends RST and frees the socket at once, no TIME_WAIT.
            let _ = stream.set_zero_linger();
            drop(stream);
        }
        OnAccept::Hold(d) => {
            let cancel = cancel.clone();
            conns.spawn(async move { hold_for(stream, d, &cancel).await });
        }
    }
}

/// Reads and discards until the peer closes, an error, or shutdown.
async fn hold_until_peer_closes(stream: &mut TcpStream, cancel: &CancellationToken) {
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

async fn echo(mut stream: TcpStream, cancel: &CancellationToken) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn hold_for(mut stream: TcpStream, d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
        _ = hold_until_peer_closes(&mut stream, cancel) => {}
    }
}
