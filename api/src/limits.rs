//! What bounds one request and one client, so no caller, with or without
//! a key, can take more than its part of the process:
//!
//! - [`bound_request`]: a request line or headers too large for the API
//!   (414, 431), a body that is declared as something other than JSON
//!   (415), a write sent by a web page of another site (403), and a
//!   request that takes too long, body read included (408), all with the
//!   JSON error envelope.
//! - [`AuthFailures`]: failed authentications per client address. Past the
//!   limit the address is answered 429 with `Retry-After` before its key is
//!   even checked, so guessing keys gets no faster by trying harder. It is
//!   counted in this process (an unauthenticated caller must not be able to
//!   make the broker write), so N replicas allow N times the rate.
//! - [`Streams`]: event streams open at once, in the process and per key.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weir_shared::limit::{KeyedRate, Rate};

/// The longest path and query string the API reads.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) the API reads.
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The most headers the API reads.
pub(crate) const MAX_HEADERS: usize = 100;
/// Addresses tracked for failed logins before stale ones are dropped;
/// beyond it (after dropping), new addresses are not tracked.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Middleware around every route: head sizes first, then the request's
/// time limit (408, and the connection is closed).
pub(crate) async fn bound_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the path and query are {uri_bytes} bytes; at most {MAX_URI_BYTES} are read"),
        )
        .into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES || headers.len() > MAX_HEADERS {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{} headers of {header_bytes} bytes; at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes are read",
                headers.len()
            ),
        )
        .into_response();
    }
    if let Some(refusal) = refuse_body_or_origin(&request) {
        return refusal.into_response();
    }
    let limit = state.settings.http.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request took longer than {} (WEIR_HTTP_REQUEST_TIMEOUT); nothing is known to have changed unless it says so when read again",
                    humanize(limit)
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// 415 for a body declared as something other than JSON; 403 for a write
/// from a browser page of another origin.
///
/// A body is read as JSON when its `Content-Type` is JSON (or `+json`),
/// absent, or `application/x-www-form-urlencoded`, the type `curl -d`
/// sends unless told otherwise. A page on another site can send a write
/// without a preflight (a form, `fetch` in `no-cors` mode) but not hide
/// its `Origin`: such a write is refused, so a page open in a browser
/// cannot enqueue jobs on a `weir dev` listening on the same machine.
fn refuse_body_or_origin(request: &Request) -> Option<ApiError> {
    use axum::http::Method;
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return None;
    }
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        if host.is_none() || origin_host != host {
            return Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_site",
                "a write from a web page of another origin is refused",
            ));
        }
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v != "0");
    let declared = headers.get(header::CONTENT_TYPE).filter(|_| has_body)?;
    let essence = declared
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
        || essence == "application/x-www-form-urlencoded";
    (!json).then(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body is declared as `{}`; send JSON with Content-Type: application/json",
                weir_shared::input::shown(&essence)
            ),
        )
    })
}

fn humanize(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Failed authentications per client address (IPv6 per /64, the block a
/// single host usually holds), on the GCRA of [`KeyedRate`].
pub(crate) struct AuthFailures {
    rate: KeyedRate,
    start: Instant,
    tats: Mutex<HashMap<IpAddr, i64>>,
}

impl AuthFailures {
    /// A limiter allowing `rate` failures (its whole count at once).
    pub(crate) fn new(rate: Rate) -> Self {
        AuthFailures {
            rate: KeyedRate::with_full_burst(rate),
            start: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        }
    }

    fn now(&self) -> i64 {
        weir_shared::job::duration_us(self.start.elapsed())
    }

    fn tats(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, i64>> {
        self.tats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `address` must wait, if it has used up its failures.
    pub(crate) fn blocked(&self, address: IpAddr) -> Option<Duration> {
        let now = self.now();
        let tat = self.tats().get(&bucket(address)).copied()?;
        let step = self.rate.step(tat, now, 1);
        (!step.allowed).then(|| step.decision().retry_after)
    }

    /// Counts one failure of `address`.
    pub(crate) fn record(&self, address: IpAddr) {
        let now = self.now();
        let mut tats = self.tats();
        if tats.len() >= MAX_TRACKED_ADDRESSES {
            // An address whose budget is whole again carries no state.
            tats.retain(|_, tat| *tat > now);
        }
        let key = bucket(address);
        if tats.len() >= MAX_TRACKED_ADDRESSES && !tats.contains_key(&key) {
            return;
        }
        let step = self.rate.step(tats.get(&key).copied().unwrap_or(0), now, 1);
        if step.allowed {
            tats.insert(key, step.tat);
        }
    }

    /// The 429 a blocked address gets.
    pub(crate) fn refusal(&self, wait: Duration) -> Response {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failed_logins",
            format!(
                "more than {} failed authentications from this address; retry after the Retry-After seconds",
                self.rate.rate
            ),
        )
        .into_response();
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        response
    }
}

/// The address a failure counts against: IPv4 as is (and IPv4-mapped IPv6
/// as IPv4), IPv6 by its /64.
fn bucket(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Event streams open at once: in all, and per caller.
pub(crate) struct Streams {
    max: usize,
    max_per_caller: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One open stream; dropping it (the stream ended or the client left)
/// gives its place back.
pub(crate) struct StreamPlace {
    streams: std::sync::Arc<Streams>,
    caller: String,
}

impl Streams {
    /// Room for `max` streams, `max_per_caller` of them one caller's.
    pub(crate) fn new(max: usize, max_per_caller: usize) -> Self {
        Streams {
            max,
            max_per_caller,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<String, usize>)> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for one more stream of `caller`, or 429.
    pub(crate) fn take(self: &std::sync::Arc<Self>, caller: &str) -> Result<StreamPlace, ApiError> {
        let mut open = self.open();
        let mine = open.1.get(caller).copied().unwrap_or(0);
        let refusal = if open.0 >= self.max {
            Some(format!(
                "{} event streams are open in this process (WEIR_HTTP_MAX_STREAMS); close one or retry later",
                self.max
            ))
        } else if mine >= self.max_per_caller {
            Some(format!(
                "this key has {mine} event streams open (WEIR_HTTP_MAX_STREAMS_PER_KEY); close one first"
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                message,
            ));
        }
        open.0 += 1;
        *open.1.entry(caller.to_owned()).or_default() += 1;
        Ok(StreamPlace {
            streams: self.clone(),
            caller: caller.to_owned(),
        })
    }

    /// Streams open now.
    pub(crate) fn count(&self) -> usize {
        self.open().0
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = self.streams.open();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_address_is_blocked_after_its_failures_and_others_are_not() {
        let limiter = AuthFailures::new("3/m".parse().expect("rate"));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert_eq!(limiter.blocked(a), None);
            limiter.record(a);
        }
        let wait = limiter.blocked(a).expect("blocked after 3 failures");
        assert!(wait <= Duration::from_secs(20), "{wait:?}");
        assert_eq!(limiter.blocked(b), None);
    }

    #[test]
    fn ipv6_counts_per_slash_64_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        assert_eq!(bucket(one), bucket(two));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("mapped");
        assert_eq!(bucket(mapped), IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn streams_are_capped_in_all_and_per_caller_and_places_come_back() {
        let streams = Arc::new(Streams::new(3, 2));
        let a1 = streams.take("a").expect("first");
        let _a2 = streams.take("a").expect("second");
        assert_eq!(
            streams.take("a").err().map(|e| e.status()),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        let _b1 = streams.take("b").expect("b's first");
        assert!(streams.take("c").is_err(), "the process cap is 3");
        drop(a1);
        assert_eq!(streams.count(), 2);
        streams.take("c").expect("a place came back");
    }
}
