//! Calls to a provider with pooled keys: a 429 (or a 503 with
//! `Retry-After`) cools that key for every node and the call moves to the
//! next key at once; a 401 or 403 sets the key aside for 15 minutes and
//! moves on too. When no key may take the call, a short wait happens here
//! and a longer one is handed to the caller ([`SendError::Wait`]): a job
//! snoozes, an API request answers 503.

use super::{KeyPool, Pick, PoolError, Report, scrub_keys};
use crate::broker::SharedBroker;
use crate::config::{ProviderSettings, Settings};
use crate::job::now_ms;
use crate::outbound::{CallError, Client, ClientOptions, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// One provider: its settings, its client and its pool (made at the first
/// call, on the broker of that call).
pub struct Provider {
    name: String,
    settings: ProviderSettings,
    client: Result<Client, String>,
    pool: OnceLock<Arc<KeyPool>>,
}

/// Every configured provider, by name.
pub type Providers = Arc<HashMap<String, Provider>>;

/// The providers of `settings`, each with its own guarded client.
pub fn providers(settings: &Settings) -> Providers {
    Arc::new(
        settings
            .providers
            .iter()
            .map(|(name, p)| {
                let client = Client::new(&ClientOptions {
                    allow_hosts: settings.outbound.allow_hosts.clone(),
                    timeout: p.timeout,
                    max_response_bytes: settings.outbound.max_response_bytes,
                    follow_redirects: false,
                });
                let provider = Provider {
                    name: name.clone(),
                    settings: p.clone(),
                    client,
                    pool: OnceLock::new(),
                };
                (name.clone(), provider)
            })
            .collect(),
    )
}

/// A call: path under the base URL, method, headers, JSON body.
pub struct Call<'a> {
    /// Appended to `base_url`; starts with `/`.
    pub path: &'a str,
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// Extra headers (an `Authorization` among them is replaced).
    pub headers: &'a [(String, String)],
    /// The JSON body.
    pub body: Option<&'a Value>,
}

/// Why a call gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// It cannot succeed as it is (a bad path, every key refused, a
    /// refused address).
    Fatal(String),
    /// It may succeed later (a timeout, a broken connection, the pool's
    /// state unavailable).
    Retry(String),
    /// No key may take it for longer than the caller waits inline.
    Wait {
        /// Until the first key is free.
        after: Duration,
        /// What holds the keys.
        why: String,
    },
}

impl Provider {
    /// Its name (`[providers.NAME]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    fn pool(&self, broker: &SharedBroker) -> &Arc<KeyPool> {
        self.pool.get_or_init(|| {
            Arc::new(KeyPool::new(
                &self.name,
                self.settings.keys.clone(),
                self.settings.rpm,
                self.settings.tpm,
                self.settings.cooldown,
                broker.clone(),
            ))
        })
    }

    /// `text` with the provider's keys masked.
    pub fn scrub(&self, text: &str) -> String {
        scrub_keys(text, &self.settings.keys)
    }

    /// Sends `call` with pooled keys until a key answers something other
    /// than "too many requests" or "unauthorized". Waits for a key here
    /// when the wait is at most `inline_wait`.
    pub async fn send(
        &self,
        broker: &SharedBroker,
        call: Call<'_>,
        inline_wait: Duration,
    ) -> Result<Response, SendError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| SendError::Fatal(e.clone()))?;
        if !call.path.starts_with('/') {
            return Err(SendError::Fatal(format!(
                "`path` must start with `/` (it is appended to the base URL of `{}`), got `{}`",
                self.name, call.path
            )));
        }
        let url = format!("{}{}", self.settings.base_url, call.path);
        let estimate = estimate_tokens(call.body);
        let body = call.body.map(|b| b.to_string().into_bytes());
        let pool = self.pool(broker);
        let keys = pool.keys().len();
        let mut refused = 0usize;
        loop {
            let (index, key) = match pool.pick(estimate).await {
                Ok(Pick::Key(index, key)) => (index, key),
                Ok(Pick::Wait { after, why }) => {
                    metrics::counter!("weir_limit_waits_total", "limit" => format!("provider:{}", self.name))
                        .increment(1);
                    let after = after.max(Duration::from_millis(10));
                    if after > inline_wait {
                        return Err(SendError::Wait { after, why });
                    }
                    tokio::time::sleep(after).await;
                    continue;
                }
                Err(e @ PoolError::NoKeys(..)) => return Err(SendError::Fatal(e.to_string())),
                Err(e) => return Err(SendError::Retry(e.to_string())),
            };
            let mut headers: Vec<(String, String)> = call
                .headers
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("authorization"))
                .cloned()
                .collect();
            headers.push(("authorization".into(), format!("Bearer {}", key.expose())));
            if body.is_some()
                && !headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("content-type".into(), "application/json".into()));
            }
            let sent = client.send(call.method, &url, &headers, body.clone()).await;
            let status_label = match &sent {
                Ok(r) => r.status.to_string(),
                Err(CallError::Timeout(_)) => "timeout".into(),
                Err(_) => "connect".into(),
            };
            metrics::counter!("weir_provider_requests_total", "provider" => self.name.clone(), "status" => status_label).increment(1);
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    let report = Report {
                        estimated_tokens: estimate,
                        ..Report::default()
                    };
                    self.record(pool, index, report).await;
                    let message = self.scrub(&e.to_string());
                    return Err(match e {
                        CallError::Timeout(_) | CallError::Connect(_) => SendError::Retry(message),
                        CallError::Refused(_) | CallError::TooLarge(_) | CallError::Invalid(_) => {
                            SendError::Fatal(message)
                        }
                    });
                }
            };
            let retry_after = retry_after(&response);
            let used = used_tokens(&response);
            let report = Report {
                status: Some(response.status),
                retry_after,
                estimated_tokens: estimate,
                used_tokens: used,
            };
            self.record(pool, index, report).await;
            let throttled =
                response.status == 429 || (response.status == 503 && retry_after.is_some());
            if throttled {
                tracing::info!(provider = %self.name, key = %key, "Key throttled; moving to the next key");
                continue;
            }
            if response.status == 401 || response.status == 403 {
                refused += 1;
                tracing::warn!(provider = %self.name, key = %key, status = response.status, "Key refused; set aside for 15 minutes");
                if refused < keys {
                    continue;
                }
                return Err(SendError::Fatal(self.scrub(&format!(
                    "every key of `{}` was refused: {}",
                    self.name,
                    head(&response)
                ))));
            }
            return Ok(response);
        }
    }

    /// Records how a call went in the pool; the call's outcome stands
    /// whether or not the pool's state could be written.
    async fn record(&self, pool: &KeyPool, index: usize, report: Report) {
        if let Err(e) = pool.report(index, report).await {
            tracing::warn!(provider = %self.name, error = %e, "Key pool state not updated");
        }
    }
}

/// The first part of a response body, for errors.
pub fn head(response: &Response) -> String {
    let end = response.body.len().min(2048);
    String::from_utf8_lossy(&response.body[..end]).into_owned()
}

/// `Retry-After` (seconds or an HTTP date), else OpenAI's
/// `x-ratelimit-reset-requests` / `-tokens` durations (`1s`, `6m0s`).
pub fn retry_after(response: &Response) -> Option<Duration> {
    if let Some(v) = response.header("retry-after") {
        let v = v.trim();
        if let Ok(secs) = v.parse::<f64>() {
            return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(v) {
            let ms = at.timestamp_millis() - now_ms().0;
            return Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        }
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| response.header(h))
        .filter_map(|v| crate::config::parse_duration(v).ok())
        .max()
}

/// `usage.total_tokens` of a JSON response.
fn used_tokens(response: &Response) -> Option<u32> {
    let body: Value = serde_json::from_slice(&response.body).ok()?;
    let total = body.get("usage")?.get("total_tokens")?.as_u64()?;
    u32::try_from(total).ok()
}

/// Tokens a call will likely use, charged to the key's `tpm` before it is
/// sent: about one per 4 bytes of its input (`input` of an embeddings
/// call, the messages' `content` of a chat call, or `prompt`) plus the
/// completion it allows (`max_tokens` / `max_completion_tokens`). The
/// response's `usage` corrects it.
pub fn estimate_tokens(body: Option<&Value>) -> u32 {
    let Some(body) = body else { return 1 };
    fn text_len(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(text_len).sum(),
            Value::Object(map) => map
                .get("content")
                .or_else(|| map.get("text"))
                .map_or(0, text_len),
            _ => 0,
        }
    }
    let input: usize = ["input", "messages", "prompt"]
        .iter()
        .filter_map(|f| body.get(f))
        .map(text_len)
        .sum();
    let completion = ["max_tokens", "max_completion_tokens"]
        .iter()
        .filter_map(|f| body.get(f).and_then(Value::as_u64))
        .max()
        .unwrap_or(0);
    let total = (input as u64).div_ceil(4) + completion;
    u32::try_from(total.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(headers: &[(&str, &str)]) -> Response {
        Response {
            status: 429,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_reset_headers() {
        assert_eq!(
            retry_after(&response(&[("retry-after", "7")])),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&response(&[("retry-after", "0.5")])),
            Some(Duration::from_millis(500))
        );
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = retry_after(&response(&[("retry-after", &soon)])).expect("a date");
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            retry_after(&response(&[
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-reset-tokens", "6m0s")
            ])),
            Some(Duration::from_secs(360))
        );
        assert_eq!(retry_after(&response(&[])), None);
    }

    #[test]
    fn estimates_count_inputs_and_the_completion_allowed() {
        assert_eq!(estimate_tokens(None), 1);
        assert_eq!(
            estimate_tokens(Some(&json!({"input": ["abcd", "abcdefgh"]}))),
            3
        );
        assert_eq!(
            estimate_tokens(Some(&json!({
                "messages": [{"role": "user", "content": "abcdefgh"}],
                "max_tokens": 100
            }))),
            102
        );
    }
}
