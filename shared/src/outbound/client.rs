//! The HTTP client every outbound task uses: reqwest with the guard's
//! resolver (it connects only to the addresses that were checked, so a
//! name cannot answer public for the check and private for the connect),
//! no proxy from the environment, redirects re-checked (at most 5), a
//! bounded response body.

use super::guard::{Guard, Refusal};
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What the client is built with.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts that pass the guard as they are (exact, or `*.suffix`).
    pub allow_hosts: Vec<String>,
    /// The whole call, connect to last byte.
    pub timeout: Duration,
    /// The largest response body read; a larger one fails the call.
    pub max_response_bytes: usize,
    /// Follow redirects (each target checked again, at most 5); provider
    /// calls follow none.
    pub follow_redirects: bool,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, hop-by-hop ones and `set-cookie` left out.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (the first, by case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a call did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The guard refused the address (or a redirect's).
    #[error(transparent)]
    Refused(Refusal),
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The connection failed or broke (DNS, refused, reset).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The response body was over the limit.
    #[error("response over {0} bytes")]
    TooLarge(usize),
    /// The request itself cannot be sent (a bad URL, method or header).
    #[error("bad request: {0}")]
    Invalid(String),
}

/// The outbound client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    guard: Arc<Guard>,
    max_response_bytes: usize,
}

/// Resolves names and lets through only those whose every address passes.
struct GuardedResolver {
    guard: Arc<Guard>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
            guard
                .check_resolved(&host, &ips)
                .map_err(|r| Box::new(r) as Box<dyn StdError + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Headers a response keeps out of the job's result.
const DROPPED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
];

/// Installs the process's TLS crypto provider (ring) if none is: every
/// reqwest client in a process that links weir needs one before it is
/// built. Idempotent.
pub fn install_crypto_provider() {
    // Another part of the process may have installed one already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The guard's refusal somewhere in an error's chain.
fn refusal_in(e: &(dyn StdError + 'static)) -> Option<Refusal> {
    let mut at = Some(e);
    while let Some(err) = at {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return Some(r.clone());
        }
        at = err.source();
    }
    None
}

impl Client {
    /// Builds the client.
    pub fn new(options: &ClientOptions) -> Result<Self, String> {
        install_crypto_provider();
        let guard = Arc::new(Guard::new(&options.allow_hosts));
        let redirect_guard = guard.clone();
        let policy = if options.follow_redirects {
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    return attempt.error("more than 5 redirects");
                }
                match redirect_guard.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                }
            })
        } else {
            reqwest::redirect::Policy::none()
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
            }))
            .redirect(policy)
            .connect_timeout(Duration::from_secs(10).min(options.timeout))
            .timeout(options.timeout)
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Client {
            http,
            guard,
            max_response_bytes: options.max_response_bytes,
        })
    }

    /// Sends one request and reads its response, within the limits.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, CallError> {
        let parsed = url::Url::parse(url).map_err(|e| CallError::Invalid(format!("url: {e}")))?;
        self.guard.check_url(&parsed).map_err(CallError::Refused)?;
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| CallError::Invalid(format!("method `{method}`")))?;
        let mut request = self.http.request(method, parsed);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let classify = |e: reqwest::Error| -> CallError {
            if let Some(refusal) = refusal_in(&e) {
                CallError::Refused(refusal)
            } else if e.is_timeout() {
                CallError::Timeout(e.to_string())
            } else if e.is_builder() {
                CallError::Invalid(e.to_string())
            } else {
                let mut message = e.to_string();
                let mut at = e.source();
                while let Some(cause) = at {
                    message.push_str(": ");
                    message.push_str(&cause.to_string());
                    at = cause.source();
                }
                CallError::Connect(message)
            }
        };
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter(|(n, _)| !DROPPED.contains(&n.as_str()))
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(CallError::TooLarge(self.max_response_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}
