//! `/metrics` under scrapers that misbehave: a scraper that sends its request and then never
//! reads the reply holds one of the endpoint's few slots only for the reply's time bound, so
//! with every slot taken by such readers another scraper is still answered.
//!
//! The reply must be larger than what the kernel buffers for a reader that does not read
//! (the server's send buffer, at most `net.ipv4.tcp_wmem`'s maximum, plus the reader's small
//! receive buffer): the metrics here carry long entry names, so the reply is several times
//! that; a stuck reader is known to hold its slot once the first bytes of its reply arrived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stampede::history::{Entry, Kind, Ran};
use stampede::metrics::{self, MAX_CONCURRENT, Metrics, REPLY_TIMEOUT};
use stampede::report::Report;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

const REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

/// The largest send buffer the kernel lets a socket grow to (`tcp_wmem`'s third field).
fn max_send_buffer() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// Metrics whose reply is at least `bytes` long: entries with 8 KiB names.
fn big_metrics(bytes: usize) -> Arc<Metrics> {
    let m = Arc::new(Metrics::new());
    let mut i = 0;
    // Encoding is checked every 16 entries: each adds the same amount.
    while i % 16 != 0 || m.encode().len() < bytes {
        let entry = Entry {
            name: format!("{i:04}-{}", "e".repeat(8 * 1024)),
            kind: Kind::Run,
            scenario_name: "s".into(),
            scenario: serde_json::json!({}),
        };
        let report = Report {
            run_id: format!("r{i}"),
            ..Report::default()
        };
        m.record(
            &entry.record("b", "2026-11-27T03:00:00Z", Ran::Run(&report)),
            None,
        );
        i += 1;
        assert!(i < 10_000, "the reply never grew");
    }
    m
}

/// A scraper that sends its request and never reads: connected with a small receive
/// buffer, it returns once its reply has begun to arrive (its slot is taken).
async fn stuck_reader(addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(REQUEST).await.unwrap();
    let mut one = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(30), s.peek(&mut one))
        .await
        .expect("the reply began within 30 s")
        .unwrap();
    assert_eq!(n, 1, "the endpoint answered instead of closing");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_do_not_block_the_next_scraper() {
    let m = big_metrics(2 * max_send_buffer() + (1 << 20));
    let want = m.encode().len();
    let stop = CancellationToken::new();
    let addr = metrics::serve("127.0.0.1:0".parse().unwrap(), m, None, stop.clone())
        .await
        .unwrap();
    let mut stuck = Vec::new();
    for _ in 0..MAX_CONCURRENT {
        stuck.push(stuck_reader(addr).await);
    }
    // Every slot is held by a reader that never reads. The next scraper retries (as
    // Prometheus does at its interval) and must be answered once the reply bound frees a
    // slot: bounded well beyond it.
    let started = Instant::now();
    let bound = REPLY_TIMEOUT * 6 + Duration::from_secs(30);
    let body = loop {
        assert!(
            started.elapsed() < bound,
            "no answer within {bound:?}: the stuck readers hold every slot"
        );
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(REQUEST).await.unwrap();
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut reply)).await;
        if let Ok(Ok(_)) = read
            && !reply.is_empty()
        {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        &text[..80.min(text.len())]
    );
    let (_, payload) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(payload.len(), want, "the whole reply");
    drop(stuck);
    stop.cancel();
}
