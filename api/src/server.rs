//! The HTTP server under the router, built to stay up when clients do not
//! behave: a client that opens connections and sends nothing (or a header
//! a byte at a time) is cut off after `WEIR_HTTP_HEADER_TIMEOUT`; an idle
//! kept-alive connection the same; a request that takes longer than
//! `WEIR_HTTP_REQUEST_TIMEOUT` (a body trickled in) is 408; and no more
//! than `WEIR_HTTP_MAX_CONNECTIONS` are served at once, below the
//! open-file limit, so the process never runs out of descriptors and its
//! memory stays bounded: a connection beyond the cap is answered 503 and
//! closed at once.
//!
//! On shutdown the listener closes, open event streams end (`closing`),
//! and the requests in flight finish, within the shutdown timeout.

use crate::{AppState, router};
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use weir_shared::config::DEFAULT_MAX_CONNECTIONS;

/// The largest request head (request line and headers) hyper buffers;
/// the router answers 414 and 431 with the JSON envelope below this, and
/// hyper closes with a bare status above it.
const MAX_HEAD_BUFFER: usize = 64 * 1024;

/// Descriptors kept back from the connection cap for the broker's
/// connections, the database files and the log.
const RESERVED_FDS: u64 = 256;

/// What a connection beyond the cap is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 97\r\n\r\n\
{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections are open; try again in a second\"}}";

/// The connection cap in force: the setting, or three quarters of the
/// open-file limit (raised to its hard ceiling first), at most
/// [`DEFAULT_MAX_CONNECTIONS`]. Never above what the descriptors allow.
pub fn connection_cap(configured: Option<usize>) -> usize {
    let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let usable = usize::try_from(files.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
    match configured {
        Some(n) => n.min(usable),
        None => (usable / 4 * 3).clamp(16, DEFAULT_MAX_CONNECTIONS),
    }
}

/// Serves the API on `listener` until `shutdown` completes, then ends the
/// event streams and finishes the requests in flight, waiting at most
/// `drain` for them.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let settings = state.settings.clone();
    let closing = state.closing.clone();
    let app = router(state);
    serve_app(listener, app, &settings.http, closing, shutdown, drain).await
}

/// Serves `app` as [`serve`] does (the same timeouts, cap and draining);
/// `closing` is cancelled when shutdown begins.
pub async fn serve_app(
    listener: TcpListener,
    app: axum::Router,
    http: &weir_shared::config::HttpSettings,
    closing: tokio_util::sync::CancellationToken,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let cap = connection_cap(http.max_connections);
    tracing::debug!(connections = cap, "HTTP connection cap");
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        .max_headers(2 * crate::limits::MAX_HEADERS);
    let permits = Arc::new(Semaphore::new(cap));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), request)
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away or times out is not the server's error.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    closing.cancel();
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(after = ?drain, "Requests still open at shutdown were cut off");
    }
    Ok(())
}

/// Answers a connection beyond the cap without reading from it, and closes it.
fn refuse(stream: TcpStream) {
    metrics::counter!("weir_http_connections_refused_total").increment(1);
    if let Some(suppressed) = crate::error::REFUSAL_LOG.admit() {
        tracing::warn!(
            suppressed,
            "HTTP connection cap reached; refusing new connections (WEIR_HTTP_MAX_CONNECTIONS)"
        );
    }
    // The socket's send buffer is empty: the whole answer fits without waiting.
    let _ = stream.try_write(REFUSAL);
}

/// An accept that failed: a connection reset before it was accepted is
/// nothing; out of descriptors or memory, back off briefly so the loop
/// does not spin, and let connections close.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    if let Some(suppressed) = crate::error::REFUSAL_LOG.admit() {
        tracing::warn!(error = %e, suppressed, "Cannot accept connections");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_declares_its_exact_length() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let parsed: serde_json::Value = serde_json::from_str(body).expect("json body");
        assert_eq!(parsed["error"]["code"], "unavailable");
    }

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        let files = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .expect("limit")
            .1;
        let cap = connection_cap(Some(usize::MAX));
        assert!((cap as u64) < files, "cap {cap} with {files} descriptors");
        assert!(connection_cap(None) <= DEFAULT_MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(5)), 5);
    }
}
