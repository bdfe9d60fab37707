//! The `/metrics` endpoint: a small HTTP/1.1 responder on its own listener. A request is
//! read with a size bound and a time bound, and the reply is written under a time bound too
//! (a scraper that stops reading cannot hold one of the few slots for ever); only `GET
//! /metrics` is answered. It is read-only, and when the coordinator has a token (required off
//! loopback) a scrape must present it as `Authorization: Bearer TOKEN` (Prometheus:
//! `authorization: { credentials_file: ... }`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::auth::Token;

/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a scraper may take to take the reply: one that stops reading gives its slot
/// back after this (a live Prometheus takes a reply in milliseconds).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most scrapes answered at once; connections beyond it are closed at once (a scraper
/// retries at its next interval), so a flood cannot take the process's file descriptors.
pub const MAX_CONCURRENT: usize = 16;

/// Serves `GET /metrics` on `addr` until `shutdown`; returns the bound address. With a
/// `token`, each scrape must present it.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    token: Option<Token>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot serve metrics on {addr}: {e}"))
    })?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving /metrics");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(cause = %e, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let (metrics, token) = (metrics.clone(), token.clone());
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = answer(stream, &metrics, token.as_ref()).await {
                    tracing::debug!(cause = %e, "metrics request failed");
                }
            });
        }
    });
    Ok(bound)
}

/// Reads one request head (bounded in size and time) and answers it.
async fn answer(
    mut stream: tokio::net::TcpStream,
    metrics: &Metrics,
    token: Option<&Token>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_REQUEST {
                return Err(std::io::Error::other("request too large or cut short"));
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::other("request timed out"))??;
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or_default();
    // The token's own constant-time check, over the header as gRPC metadata.
    let authorized = token.is_none_or(|t| {
        let mut meta = tonic::metadata::MetadataMap::new();
        for (k, v) in lines.filter_map(|l| l.split_once(':')) {
            if k.trim().eq_ignore_ascii_case("authorization")
                && let Ok(v) = v.trim().parse()
            {
                meta.insert("authorization", v);
            }
        }
        t.check(&meta).is_ok()
    });
    let (status, ctype, body) = match request.split_whitespace().collect::<Vec<_>>()[..] {
        _ if !authorized => (
            "401 Unauthorized",
            "text/plain",
            "a bearer token is required\n".to_owned(),
        ),
        ["GET", "/metrics", _] => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        ["GET", _, _] => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n".to_owned(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(REPLY_TIMEOUT, write)
        .await
        .map_err(|_| std::io::Error::other("the scraper did not take the reply in time"))?
}
