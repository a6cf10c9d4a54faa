//! `http.request` end to end with the real binary (`weir dev`) against a
//! small HTTP server of the test's own on 127.0.0.1: a webhook that
//! answers, one that fails for good, one that is busy once; and the
//! guard, which refuses loopback, private and metadata addresses (as IP
//! literals, as a name that resolves to one, and behind a redirect) unless
//! the host is allowed.

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_tests::{Dev, Sandbox};

/// Answers by path: /ok (JSON), /gone (404), /busy-once (503 with
/// Retry-After 1, then 200), /to-metadata (302 to 169.254.169.254).
async fn serve() -> (u16, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let busy = Arc::new(AtomicU32::new(0));
    let hits = busy.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let hits = hits.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, extra, body) = match path.as_str() {
                    "/ok" => (
                        "200 OK",
                        "Content-Type: application/json\r\n".to_owned(),
                        format!(
                            "{{\"hello\":\"world\",\"got\":{}}}",
                            head.contains("\"n\":1")
                        ),
                    ),
                    "/gone" => ("404 Not Found", String::new(), "no such hook".to_owned()),
                    "/busy-once" if hits.fetch_add(1, Ordering::SeqCst) == 0 => (
                        "503 Service Unavailable",
                        "Retry-After: 1\r\n".to_owned(),
                        "busy".to_owned(),
                    ),
                    "/busy-once" => ("200 OK", String::new(), "done".to_owned()),
                    "/to-metadata" => (
                        "302 Found",
                        "Location: http://169.254.169.254/latest/meta-data/\r\n".to_owned(),
                        String::new(),
                    ),
                    _ => ("404 Not Found", String::new(), String::new()),
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, busy)
}

async fn run(api: &Dev, payload: Value, end: &str) -> Value {
    let (status, job) = api
        .post(
            "/v1/jobs",
            &json!({"task": "http.request", "payload": payload}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    api.wait_state(&id, end, Duration::from_secs(20)).await
}

#[tokio::test]
async fn webhooks_and_their_outcomes_on_an_allowed_host() {
    let (port, busy) = serve().await;
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_HTTP_ALLOW_HOSTS", "127.0.0.1");
    let api = sandbox.dev().await;
    let base = format!("http://127.0.0.1:{port}");

    let ok = run(
        &api,
        json!({"url": format!("{base}/ok"), "body": {"n": 1}}),
        "succeeded",
    )
    .await;
    assert_eq!(ok["result"]["status"], 200, "{ok}");
    assert_eq!(ok["result"]["body"]["hello"], "world");
    assert_eq!(ok["result"]["body"]["got"], true, "the JSON body was sent");

    let gone = run(&api, json!({"url": format!("{base}/gone")}), "failed").await;
    assert_eq!(gone["attempts"], 1, "a 404 is not retried: {gone}");
    assert!(
        gone["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("HTTP 404: no such hook")),
        "{gone}"
    );

    let again = run(
        &api,
        json!({"url": format!("{base}/busy-once")}),
        "succeeded",
    )
    .await;
    assert_eq!(again["attempts"], 2, "a 503 is retried: {again}");
    assert_eq!(again["result"]["body"], "done");
    assert_eq!(busy.load(Ordering::SeqCst), 2);

    let redirected = run(
        &api,
        json!({"url": format!("{base}/to-metadata")}),
        "failed",
    )
    .await;
    assert_eq!(redirected["attempts"], 1, "{redirected}");
    assert!(
        redirected["error"]
            .as_str()
            .is_some_and(|e| e.contains("not allowed") && e.contains("169.254.169.254")),
        "a redirect to the metadata address is refused: {redirected}"
    );
}

#[tokio::test]
async fn the_guard_refuses_local_and_private_addresses_at_once() {
    let (port, _) = serve().await;
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_AUTH", "disabled");
    let api = sandbox.dev().await;
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://localhost:{port}/ok"),
        format!("http://[::1]:{port}/ok"),
        format!("http://0x7f.1:{port}/ok"),
        "http://10.0.0.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let job = run(&api, json!({"url": url}), "failed").await;
        assert_eq!(job["attempts"], 1, "{url}: no retry: {job}");
        assert!(
            job["error"]
                .as_str()
                .is_some_and(|e| e.contains("not allowed")),
            "{url}: {job}"
        );
    }
    let provider = run(
        &api,
        json!({"provider": "openai", "path": "/v1/embeddings", "body": {}}),
        "failed",
    )
    .await;
    assert!(
        provider["error"]
            .as_str()
            .is_some_and(|e| e.contains("[providers.openai]")),
        "{provider}"
    );
}
