//! An OpenAI-compatible server for the tests and the benchmark: a real
//! HTTP server on a free port of 127.0.0.1 with `POST /v1/chat/completions`
//! and `POST /v1/embeddings`, per-key behaviour (answer, 429 with or
//! without `Retry-After`, 500, 401 quoting the key as OpenAI does), a
//! configurable latency, an injected burst of 429s, `usage` counts in every
//! answer, and a log of every request (key, time, status, inputs) for the
//! tests to check. Embeddings are the `local` embedder's vectors, so
//! searches over them mean something.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How the server answers a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 with a completion or embeddings and `usage`.
    Ok,
    /// 429, with `Retry-After: N` seconds when given.
    Throttle(Option<u64>),
    /// 500.
    Fail,
    /// 401 quoting the key.
    Unauthorized,
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The bearer key.
    pub key: String,
    /// When it arrived.
    pub at: Instant,
    /// What it was answered.
    pub status: u16,
    /// Inputs of an embeddings call (0 for a chat call).
    pub inputs: usize,
}

#[derive(Default)]
struct Shared {
    modes: Mutex<HashMap<String, Mode>>,
    hits: Mutex<Vec<Hit>>,
    latency_ms: AtomicU64,
    /// Tokens each completion reports using (prompt + this many).
    completion_tokens: AtomicU64,
    /// The next this-many requests, whatever their key, answer 429 with
    /// `Retry-After: 1`.
    throttle_next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running mock; it stops when the test's runtime ends.
#[derive(Clone)]
pub struct MockOpenAi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
}

impl MockOpenAi {
    /// Starts the server; every key answers [`Mode::Ok`] until told otherwise.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock server");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        shared.completion_tokens.store(10, Ordering::Relaxed);
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockOpenAi {
            url: format!("http://127.0.0.1:{port}"),
            shared,
        }
    }

    /// How `key` is answered from now on.
    pub fn set_mode(&self, key: &str, mode: Mode) {
        lock(&self.shared.modes).insert(key.to_owned(), mode);
    }

    /// Latency added to every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// The next `n` requests, whatever their key, answer 429 with
    /// `Retry-After: 1` (an injected burst of throttling).
    pub fn throttle_next(&self, n: u64) {
        self.shared.throttle_next.store(n, Ordering::Relaxed);
    }

    /// Embeddings calls answered 200 so far, and the inputs they carried.
    pub fn embedding_calls(&self) -> (usize, usize) {
        let hits = lock(&self.shared.hits);
        let ok = hits.iter().filter(|h| h.status == 200 && h.inputs > 0);
        ok.fold((0, 0), |(calls, inputs), h| (calls + 1, inputs + h.inputs))
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.shared.hits).clone()
    }

    /// Requests so far with `key`, answered `status` (any status when `None`).
    pub fn count(&self, key: &str, status: Option<u16>) -> usize {
        lock(&self.shared.hits)
            .iter()
            .filter(|h| h.key == key && status.is_none_or(|s| h.status == s))
            .count()
    }
}

/// The bearer key, the mode it gets, and the answer it would get if not
/// `Ok` (after the latency).
async fn gate(shared: &Shared, headers: &HeaderMap, inputs: usize) -> Result<String, Response> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let latency = shared.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let injected = shared
        .throttle_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    let mode = if injected {
        Mode::Throttle(Some(1))
    } else {
        lock(&shared.modes).get(&key).copied().unwrap_or(Mode::Ok)
    };
    let refusal = match mode {
        Mode::Ok => None,
        Mode::Throttle(after) => {
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"error": {"message": "Rate limit reached", "type": "requests"}})),
            )
                .into_response();
            if let Some(s) = after {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().expect("header"));
            }
            Some(r)
        }
        Mode::Fail => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"message": "The server had an error"}})),
            )
                .into_response(),
        ),
        Mode::Unauthorized => Some(
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": {
                    "message": format!("Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."),
                    "type": "invalid_request_error", "code": "invalid_api_key"
                }})),
            )
                .into_response(),
        ),
    };
    let status = refusal.as_ref().map_or(200, |r| r.status().as_u16());
    lock(&shared.hits).push(Hit {
        key: key.clone(),
        at: Instant::now(),
        status,
        inputs,
    });
    match refusal {
        Some(r) => Err(r),
        None => Ok(key),
    }
}

fn tokens_of(v: &Value) -> u64 {
    match v {
        Value::String(s) => (s.len() as u64).div_ceil(4),
        Value::Array(items) => items.iter().map(tokens_of).sum(),
        Value::Object(m) => m.get("content").map_or(0, tokens_of),
        _ => 0,
    }
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = gate(&shared, &headers, 0).await {
        return r;
    }
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let prompt = tokens_of(&request["messages"]).max(1);
    let completion = shared.completion_tokens.load(Ordering::Relaxed);
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    axum::Json(json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {last}")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    }))
    .into_response()
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let inputs: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("").to_owned())
            .collect(),
        _ => Vec::new(),
    };
    if let Err(r) = gate(&shared, &headers, inputs.len()).await {
        return r;
    }
    let tokens: u64 = inputs.iter().map(|s| (s.len() as u64).div_ceil(4)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": weir_shared::embed::embed_local(s)}))
        .collect();
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": request["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
    .into_response()
}
