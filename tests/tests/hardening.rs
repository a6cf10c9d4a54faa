//! The API against clients that do not behave, with the real binary:
//! half-open connections by the thousand, a connection flood past the cap,
//! trickled bodies, oversized heads, thousands of event streams, and a
//! shutdown with streams open.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_tests::{Dev, Sandbox, wait_until};

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn addr(dev: &Dev) -> String {
    dev.base.trim_start_matches("http://").to_owned()
}

/// `/healthz` on a new connection, and how long it took.
async fn health(dev: &Dev) -> (u16, Duration) {
    let started = Instant::now();
    let client = weir_tests::http_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let status = client
        .get(format!("{}/healthz", dev.base))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    (status, started.elapsed())
}

/// Opens `n` connections that each send half a request head and stop.
async fn half_open(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await;
        held.push(s);
    }
    held
}

/// Reads until the server closes `s` or `within` passes; what was read, and
/// whether it closed.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into(), false),
        }
    }
}

/// One flood of `n` half-open connections: `/healthz` answers within a
/// second through it, and the header timeout closes every one of them.
/// Returns the RSS while they were held.
async fn flood(dev: &Dev, n: usize) -> f64 {
    let mut held = half_open(&addr(dev), n).await;
    for _ in 0..5 {
        let (status, took) = health(dev).await;
        assert_eq!(status, 200);
        assert!(
            took < Duration::from_secs(1),
            "/healthz took {took:?} with {n} half-open connections"
        );
    }
    let during = rss_mib(dev.proc.pid());
    let started = Instant::now();
    let mut closed = 0;
    for s in &mut held {
        let (_, was_closed) = read_to_close(s, Duration::from_secs(10)).await;
        closed += usize::from(was_closed);
    }
    assert_eq!(
        closed, n,
        "every half-open connection is closed by the server"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    during
}

/// Memory is bounded while a flood is held, and what a flood took is
/// reused by the next one rather than held on top. The allocator keeps
/// freed pages in the heap of the thread that served them until that
/// thread allocates again, and which threads serve a flood varies, so up to
/// about one flood's footprint may be left behind after any flood (seen:
/// 63 to 95 MiB after floods of the same size). That is bounded; a leak is
/// not: it grows with every flood. So eight floods are run, and the least
/// left after the last two may exceed the least left after the first two by
/// less than one flood's footprint: a leak of a sixth of what a connection
/// takes already adds more than that over the six floods between.
#[tokio::test]
async fn thousands_of_half_open_connections_neither_block_health_nor_stay_open() {
    const FLOODS: usize = 8;
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_HTTP_HEADER_TIMEOUT", "2s")
        .set("MIMALLOC_PURGE_DELAY", "0");
    let dev = sandbox.dev().await;
    let pid = dev.proc.pid();
    let before = rss_mib(pid);
    let mut held = Vec::new();
    let mut after = Vec::new();
    for _ in 0..FLOODS {
        held.push(flood(&dev, 3000).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
        after.push(rss_mib(pid));
    }
    eprintln!(
        "RSS: {before:.1} MiB before; held during each flood {held:.1?}; after each {after:.1?}"
    );
    // One flood's footprint: the most any flood held above the start.
    let footprint = held.iter().copied().fold(0.0, f64::max) - before;
    assert!(
        footprint < 150.0,
        "3000 half-open connections grew RSS from {before:.1} MiB by {footprint:.1} MiB"
    );
    let early = after[0].min(after[1]);
    let late = after[FLOODS - 2].min(after[FLOODS - 1]);
    assert!(
        late - early < footprint.max(20.0),
        "memory grew flood after flood: {early:.1} MiB after the first two, {late:.1} after the \
         last two (a flood held takes up to {footprint:.1} MiB)"
    );
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_with_503_and_the_server_recovers() {
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_HTTP_HEADER_TIMEOUT", "2s")
        .set("WEIR_HTTP_MAX_CONNECTIONS", "200");
    let dev = sandbox.dev().await;
    let address = addr(&dev);
    let mut held = half_open(&address, 200).await;
    // The cap is full: the next connection is told so and closed at once.
    let mut extra = TcpStream::connect(&address).await.expect("connect");
    let (answer, closed) = read_to_close(&mut extra, Duration::from_secs(2)).await;
    assert!(closed, "a connection past the cap is closed at once");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let envelope: Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(envelope["error"]["code"], "unavailable");

    // The held ones time out, their places come back, and the API answers.
    for s in &mut held {
        read_to_close(s, Duration::from_secs(6)).await;
    }
    assert!(
        wait_until(Duration::from_secs(5), || async {
            health(&dev).await.0 == 200
        })
        .await,
        "the API answers again once the flood is gone: {}",
        dev.proc.log()
    );
    assert!(
        dev.proc.log().contains("WEIR_HTTP_MAX_CONNECTIONS"),
        "the refusal is logged"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_HTTP_HEADER_TIMEOUT", "1s");
    let dev = sandbox.dev().await;
    let mut s = TcpStream::connect(addr(&dev)).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let (answer, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle connection is not kept forever");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_trickled_body_is_408_and_oversized_heads_get_the_json_envelope() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_HTTP_REQUEST_TIMEOUT", "1s");
    let dev = sandbox.dev().await;

    let mut s = TcpStream::connect(addr(&dev)).await.expect("connect");
    s.write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"task\":")
        .await
        .expect("write");
    let (answer, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");

    let client = weir_tests::http_client();
    let long = format!("{}/v1/jobs?task={}", dev.base, "a".repeat(20_000));
    let r = client.get(long).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 414);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "uri_too_long");

    let mut request = client.get(format!("{}/healthz", dev.base));
    for i in 0..150 {
        request = request.header(format!("x-h{i}"), "v");
    }
    let r = request.send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 431);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "headers_too_large");
}

/// Opens an event stream on a raw connection and reads its status line.
async fn open_stream(address: &str, id: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(address).await.expect("connect");
    s.write_all(format!("GET /v1/jobs/{id}/events HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    (s, head)
}

async fn scheduled_job(dev: &Dev) -> String {
    let (status, job) = dev
        .post(
            "/v1/jobs",
            &json!({"task": "weir.echo", "payload": {}, "delay_ms": 86_400_000}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().expect("id").to_owned()
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn five_thousand_streams_share_one_poller_and_the_cap_holds() {
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_HTTP_MAX_STREAMS", "5000")
        .set("WEIR_HTTP_MAX_STREAMS_PER_KEY", "10000");
    let dev = sandbox.dev().await;
    let id = scheduled_job(&dev).await;
    let address = addr(&dev);
    let mut streams = Vec::new();
    for _ in 0..5000 {
        let (s, head) = open_stream(&address, &id).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        streams.push(s);
    }
    let (_, head) = open_stream(&address, &id).await;
    assert!(head.starts_with("HTTP/1.1 429"), "stream 5001: {head}");
    assert!(head.contains("too_many_streams"), "{head}");

    let metrics = dev
        .http
        .get(format!("{}/metrics", dev.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(gauge(&metrics, "weir_http_streams_open"), 5000.0);
    // Every request is counted by route template, with a latency histogram.
    assert!(
        metrics.contains("weir_http_requests_total{route=\"/v1/jobs/{id}/events\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_http_request_duration_seconds_bucket{route=\"/v1/jobs\""),
        "a histogram, so replicas aggregate: {metrics}"
    );
    assert!(metrics.contains("weir_build_info{version=\""), "{metrics}");
    assert_eq!(
        gauge(&metrics, "weir_http_streams_jobs_followed"),
        1.0,
        "5000 streams of one job are one poller"
    );
    // Closing streams gives their places back.
    streams.truncate(4000);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            open_stream(&address, &id)
                .await
                .1
                .starts_with("HTTP/1.1 200")
        })
        .await
    );
}

#[tokio::test]
async fn a_stream_per_key_cap_is_429() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_HTTP_MAX_STREAMS_PER_KEY", "3");
    let dev = sandbox.dev().await;
    let id = scheduled_job(&dev).await;
    let address = addr(&dev);
    let mut open = Vec::new();
    for _ in 0..3 {
        let (s, head) = open_stream(&address, &id).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        open.push(s);
    }
    let (_, head) = open_stream(&address, &id).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
}

#[tokio::test]
async fn sigterm_with_open_streams_exits_within_the_shutdown_timeout() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_SHUTDOWN_TIMEOUT", "5s");
    let mut dev = sandbox.dev().await;
    let id = scheduled_job(&dev).await;
    let address = addr(&dev);
    let mut streams = Vec::new();
    for _ in 0..20 {
        let (s, head) = open_stream(&address, &id).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        streams.push(s);
    }
    let started = Instant::now();
    dev.proc.signal("TERM");
    let status = dev.proc.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "weir dev still runs 10 s after SIGTERM with streams open: {}",
        dev.proc.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    for s in &mut streams {
        let (_, closed) = read_to_close(s, Duration::from_secs(2)).await;
        assert!(closed, "the stream ended");
    }
}
