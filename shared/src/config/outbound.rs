//! `[providers.NAME]` and `[mail]`: where tasks call out to, checked field
//! by field. Secrets come from the environment only: a provider's keys
//! from its `keys_env` variable (or `WEIR_PROVIDER_<NAME>_KEYS`), and the
//! SMTP password as `${VAR}` inside `[mail] url`. `Debug` prints neither.

use super::env::Env;
use super::file::{MailFile, ProviderFile};
use super::{Problem, parse_duration};
use crate::provider::{ApiKey, env_name};
use crate::secret::redact_url;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How long an embeddings batch waits for more inputs when
/// `batch_linger` is not set.
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(100);

/// One provider's pool: `[providers.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// Prepended to a call's `path`, e.g. `https://api.openai.com`.
    pub base_url: String,
    /// Its keys (printed masked).
    pub keys: Vec<ApiKey>,
    /// Requests per minute per key, across all workers.
    pub rpm: Option<u32>,
    /// Tokens per minute per key, across all workers.
    pub tpm: Option<u32>,
    /// How long a key cools after a 429 without `Retry-After`.
    pub cooldown: Duration,
    /// One call, connect to last byte.
    pub timeout: Duration,
    /// The model `document.index` embeds with.
    pub embedding_model: Option<String>,
    /// Inputs per embeddings call.
    pub max_batch: usize,
    /// How long an embeddings batch waits for more inputs after its first.
    pub batch_linger: Duration,
    /// How long a job waits, snoozing, for a key before it fails.
    pub max_wait: Duration,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// STARTTLS or nothing is sent (the default).
    Required,
    /// STARTTLS when the server offers it.
    Opportunistic,
    /// Plain text (a local relay).
    Off,
}

/// `[mail]`: how `mail.send` reaches its SMTP server.
#[derive(Clone, PartialEq)]
pub struct MailSettings {
    /// `smtp://user:pass@host:587` or `smtps://...` (implicit TLS), with
    /// `${VAR}` replaced from the environment.
    pub url: String,
    /// The sender, e.g. `Weir <noreply@example.com>`.
    pub from: String,
    /// STARTTLS policy for `smtp://`.
    pub starttls: StartTls,
    /// One message, connect to last reply.
    pub timeout: Duration,
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("url", &redact_url(&self.url))
            .field("from", &self.from)
            .field("starttls", &self.starttls)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn duration(
    text: Option<&str>,
    default: Duration,
    key: String,
    problems: &mut Vec<Problem>,
) -> Duration {
    match text.map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            problems.push(Problem {
                key,
                message: "must be longer than zero".into(),
            });
            default
        }
        Some(Err(message)) => {
            problems.push(Problem { key, message });
            default
        }
    }
}

pub(super) fn providers(
    raw: BTreeMap<String, ProviderFile>,
    env: Env<'_>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, ProviderSettings> {
    let mut out = BTreeMap::new();
    for (name, p) in raw {
        let key = |field: &str| format!("providers.{name}.{field}");
        match url::Url::parse(&p.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => problems.push(Problem {
                key: key("base_url"),
                message: format!(
                    "`{}` is not an http(s) URL, e.g. \"https://api.openai.com\"",
                    p.base_url
                ),
            }),
        }
        let override_var = format!("WEIR_PROVIDER_{}_KEYS", env_name(&name));
        let text = env(&override_var).or_else(|| p.keys_env.as_deref().and_then(env));
        if p.keys_env.is_none() && env(&override_var).is_none() {
            problems.push(Problem {
                key: key("keys_env"),
                message: format!(
                    "name the variable that holds its keys (keys_env = \"OPENAI_API_KEYS\") or set {override_var}"
                ),
            });
        }
        let keys: Vec<ApiKey> = text
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(ApiKey::new)
            .collect();
        for (field, value) in [("rpm", p.rpm), ("tpm", p.tpm)] {
            if value == Some(0) {
                problems.push(Problem {
                    key: key(field),
                    message: "must be at least 1 (leave it out for no limit)".into(),
                });
            }
        }
        if p.max_batch == Some(0) {
            problems.push(Problem {
                key: key("max_batch"),
                message: "must be at least 1".into(),
            });
        }
        let settings = ProviderSettings {
            base_url: p.base_url.trim_end_matches('/').to_owned(),
            keys,
            rpm: p.rpm.filter(|n| *n > 0),
            tpm: p.tpm.filter(|n| *n > 0),
            cooldown: duration(
                p.cooldown.as_deref(),
                Duration::from_secs(60),
                key("cooldown"),
                problems,
            ),
            timeout: duration(
                p.timeout.as_deref(),
                Duration::from_secs(60),
                key("timeout"),
                problems,
            ),
            embedding_model: p.embedding_model,
            max_batch: p.max_batch.unwrap_or(256).max(1),
            batch_linger: duration(
                p.batch_linger.as_deref(),
                DEFAULT_BATCH_LINGER,
                key("batch_linger"),
                problems,
            ),
            max_wait: duration(
                p.max_wait.as_deref(),
                Duration::from_secs(3600),
                key("max_wait"),
                problems,
            ),
        };
        out.insert(name, settings);
    }
    out
}

/// `text` with each `${VAR}` replaced by the variable's value; a variable
/// that is not set is a problem.
fn expand(text: &str, env: Env<'_>, key: &str, problems: &mut Vec<Problem>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let var = &rest[start + 2..start + len];
        match env(var) {
            Some(value) => out.push_str(&value),
            None => problems.push(Problem {
                key: key.to_owned(),
                message: format!("${{{var}}} is used but {var} is not set"),
            }),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

pub(super) fn mail(
    raw: Option<MailFile>,
    env: Env<'_>,
    problems: &mut Vec<Problem>,
) -> Option<MailSettings> {
    let raw = raw?;
    let url = expand(&raw.url, env, "mail.url", problems);
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some() => {}
        _ => problems.push(Problem {
            key: "mail.url".into(),
            message: format!(
                "`{}` is not an SMTP URL, e.g. \"smtp://user:${{WEIR_SMTP_PASSWORD}}@smtp.example.com:587\" or \"smtps://...:465\"",
                redact_url(&raw.url)
            ),
        }),
    }
    if !raw.from.contains('@') {
        problems.push(Problem {
            key: "mail.from".into(),
            message: format!(
                "`{}` is not an address, e.g. \"Weir <noreply@example.com>\"",
                raw.from
            ),
        });
    }
    let starttls = match raw.starttls.as_deref() {
        None | Some("required") => StartTls::Required,
        Some("opportunistic") => StartTls::Opportunistic,
        Some("off") => StartTls::Off,
        Some(other) => {
            problems.push(Problem {
                key: "mail.starttls".into(),
                message: format!("`{other}` is not one of required, opportunistic, off"),
            });
            StartTls::Required
        }
    };
    let timeout = duration(
        raw.timeout.as_deref(),
        Duration::from_secs(30),
        "mail.timeout".into(),
        problems,
    );
    Some(MailSettings {
        url,
        from: raw.from,
        starttls,
        timeout,
    })
}
