//! `http.request`: one outbound HTTP call, through the guarded client of
//! `weir_shared::outbound` (loopback, private and link-local addresses are
//! refused unless `[http] allow_hosts` allows the host).
//!
//! Payload: `{"url", "method", "headers", "body"}` (a webhook; `method`
//! defaults to POST with a body, GET without; a JSON `body` is sent as JSON,
//! a string as text). The provider form (`{"provider", "path", ...}`) needs
//! a `[providers.NAME]` pool. Result: `{"status", "headers", "body"}`, the
//! body as JSON when the response says JSON and parses, else as text, else
//! `{"base64": ...}`. 2xx succeeds; 408, 429 and 5xx retry (after
//! `Retry-After` when the server gives one); timeouts and broken
//! connections retry; any other 4xx, a refused address or a response over
//! the limit fails at once.

use crate::provider::{self, Providers};
use crate::task::{Context, Registry, TaskError};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use weir_shared::config::Settings;
use weir_shared::outbound::{CallError, Client, ClientOptions, Response};

/// The first part of an error body kept in the job's `error`.
const ERROR_BODY_BYTES: usize = 2048;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    url: Option<String>,
    provider: Option<String>,
    path: Option<String>,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<Value>,
}

/// Registers `http.request` with the outbound settings of `settings`.
pub(crate) fn register(registry: &mut Registry, settings: &Arc<Settings>) {
    let client = Client::new(&ClientOptions {
        allow_hosts: settings.outbound.allow_hosts.clone(),
        timeout: settings.outbound.timeout,
        max_response_bytes: settings.outbound.max_response_bytes,
        follow_redirects: true,
    });
    let client = Arc::new(client);
    let providers = provider::providers(settings);
    registry.register("http.request", move |ctx: Context, request: Request| {
        let client = client.clone();
        let providers = providers.clone();
        async move {
            let client = client
                .as_ref()
                .as_ref()
                .map_err(|e| TaskError::fatal(e.clone()))?;
            tokio::select! {
                out = call(&ctx, client, &providers, request) => out,
                () = ctx.cancelled() => Err(TaskError::retry("interrupted")),
            }
        }
    });
}

/// Registers every configured task whose body is an HTTP endpoint
/// (`[tasks."NAME"] url = "..."`) and that no handler of the same name
/// runs: its payload is POSTed as JSON (with `x-weir-job-id` and
/// `x-weir-attempt`), through the guarded client; a 2xx answer's body is
/// the result, and other answers fail or retry as `http.request`'s do.
pub(crate) fn register_endpoints(registry: &mut Registry, settings: &Arc<Settings>) {
    let endpoints: Vec<(String, String)> = settings
        .tasks
        .iter()
        .filter_map(|(name, task)| match &task.body {
            weir_shared::config::TaskBody::Http(url) if registry.get(name).is_none() => {
                Some((name.clone(), url.clone()))
            }
            _ => None,
        })
        .collect();
    if endpoints.is_empty() {
        return;
    }
    let client = Arc::new(Client::new(&ClientOptions {
        allow_hosts: settings.outbound.allow_hosts.clone(),
        timeout: settings.outbound.timeout,
        max_response_bytes: settings.outbound.max_response_bytes,
        follow_redirects: false,
    }));
    for (name, url) in endpoints {
        let client = client.clone();
        registry.register(&name, move |ctx: Context, payload: Value| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let client = client
                    .as_ref()
                    .as_ref()
                    .map_err(|e| TaskError::fatal(e.clone()))?;
                let headers = vec![
                    ("content-type".to_owned(), "application/json".to_owned()),
                    ("x-weir-job-id".to_owned(), ctx.job_id().to_string()),
                    ("x-weir-attempt".to_owned(), ctx.attempt().to_string()),
                ];
                let sent = tokio::select! {
                    sent = client.send("POST", &url, &headers, Some(payload.to_string().into_bytes())) => sent,
                    () = ctx.cancelled() => return Err(TaskError::retry("interrupted")),
                };
                let response = sent.map_err(|e| match e {
                    CallError::Timeout(_) | CallError::Connect(_) => TaskError::retry(e.to_string()),
                    other => TaskError::fatal(other.to_string()),
                })?;
                classify(response).map(|r| r["body"].clone())
            }
        });
    }
}

async fn call(
    ctx: &Context,
    client: &Client,
    providers: &Providers,
    request: Request,
) -> Result<Value, TaskError> {
    if let Some(name) = &request.provider {
        let Some(provider) = providers.get(name) else {
            return Err(TaskError::fatal(format!(
                "provider `{name}` is not configured: add [providers.{name}] with base_url and keys_env"
            )));
        };
        let headers: Vec<(String, String)> = request.headers.into_iter().collect();
        let method = request.method.unwrap_or_else(|| {
            if request.body.is_some() {
                "POST"
            } else {
                "GET"
            }
            .into()
        });
        let response = provider::send(
            ctx,
            provider,
            weir_shared::provider::Call {
                path: request.path.as_deref().unwrap_or(""),
                method: &method,
                headers: &headers,
                body: request.body.as_ref().filter(|b| !b.is_null()),
            },
        )
        .await?;
        return classify(response).map_err(|e| e.map_message(|m| provider.scrub(m)));
    }
    let url = request
        .url
        .as_deref()
        .ok_or_else(|| TaskError::fatal("the payload needs `url` (or `provider` and `path`)"))?;
    let mut headers: Vec<(String, String)> = request.headers.into_iter().collect();
    let has_type = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    let body = match request.body {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.into_bytes()),
        Some(json) => {
            if !has_type {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Some(json.to_string().into_bytes())
        }
    };
    let method = request
        .method
        .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into());
    let response = client
        .send(&method, url, &headers, body)
        .await
        .map_err(|e| match e {
            CallError::Refused(r) => TaskError::fatal(r.to_string()),
            CallError::TooLarge(_) | CallError::Invalid(_) => TaskError::fatal(e.to_string()),
            CallError::Timeout(_) | CallError::Connect(_) => TaskError::retry(e.to_string()),
        })?;
    classify(response)
}

/// The result of a response, or the error its status calls for.
fn classify(response: Response) -> Result<Value, TaskError> {
    let status = response.status;
    if (200..300).contains(&status) {
        return Ok(result(&response));
    }
    let head = String::from_utf8_lossy(&response.body[..response.body.len().min(ERROR_BODY_BYTES)])
        .into_owned();
    let message = format!("HTTP {status}: {head}");
    if status == 408 || status == 429 || status >= 500 {
        let after = response
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(match after {
            Some(delay) => TaskError::RetryAfter(message, delay),
            None => TaskError::retry(message),
        });
    }
    Err(TaskError::fatal(message))
}

fn result(response: &Response) -> Value {
    let is_json = response.header("content-type").is_some_and(|t| {
        let t = t
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        t == "application/json" || t.ends_with("+json")
    });
    let body = if response.body.is_empty() {
        Value::Null
    } else if let Some(v) = is_json
        .then(|| serde_json::from_slice::<Value>(&response.body).ok())
        .flatten()
    {
        v
    } else {
        match std::str::from_utf8(&response.body) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => json!({
                "base64": base64::engine::general_purpose::STANDARD.encode(&response.body)
            }),
        }
    };
    let headers: Map<String, Value> = response
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    json!({"status": response.status, "headers": headers, "body": body})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let ok = classify(response(
            200,
            &[("content-type", "application/json")],
            b"{\"a\":1}",
        ))
        .expect("2xx");
        assert_eq!(ok["body"]["a"], 1);
        assert_eq!(ok["status"], 200);
        let text = classify(response(201, &[], b"plain")).expect("2xx");
        assert_eq!(text["body"], "plain");
        let binary = classify(response(200, &[], &[0xff, 0xfe])).expect("2xx");
        assert_eq!(binary["body"]["base64"], "//4=");
        assert!(matches!(
            classify(response(503, &[("retry-after", "7")], b"busy")),
            Err(TaskError::RetryAfter(_, d)) if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify(response(429, &[], b"")),
            Err(TaskError::Retry(_))
        ));
        assert!(matches!(
            classify(response(408, &[], b"")),
            Err(TaskError::Retry(_))
        ));
        match classify(response(404, &[], b"no such hook")) {
            Err(TaskError::Fatal(m)) => assert_eq!(m, "HTTP 404: no such hook"),
            other => panic!("{other:?}"),
        }
    }
}
