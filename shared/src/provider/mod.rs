//! Provider key pools: several API keys of one provider (an LLM or
//! embedding API) shared by every worker, round robin over the healthy
//! ones, a key that answers 429 cooling for every node at once, and each
//! key's requests and tokens per minute held to its `rpm` and `tpm` across
//! all workers, all through the broker's [`Coordination`] store.
//!
//! A key is known everywhere by its fingerprint (the first 16 hex digits
//! of its SHA-256) and shown masked (`...a1b2`); the key itself stays in
//! the memory of the processes that read it from their environment.
//!
//! [`Coordination`]: crate::broker::Coordination

mod caller;
mod pool;

pub use caller::{
    Call, Provider, Providers, SendError, estimate_tokens, head, providers, retry_after,
};

pub use pool::{
    KeyPool, KeyStats, MAX_COOLDOWN, Pick, PoolError, Report, UNAUTHORIZED_COOLDOWN, env_name,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// One API key. `Debug` and `Display` print it masked.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    secret: String,
    fingerprint: String,
}

impl ApiKey {
    /// Wraps a key as read from the environment.
    pub fn new(secret: impl Into<String>) -> Self {
        let secret = secret.into();
        let digest = Sha256::digest(secret.as_bytes());
        let fingerprint = hex::encode(&digest[..8]);
        ApiKey {
            secret,
            fingerprint,
        }
    }

    /// The key itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// The first 16 hex digits of the key's SHA-256: its name in the
    /// broker, in metrics and in `weir providers`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `...` and the last 4 characters.
    pub fn masked(&self) -> String {
        mask(&self.secret)
    }
}

/// `...` and the last 4 characters of `secret` (all of it hidden when it
/// is shorter than 12 characters).
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "...".into();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("...{tail}")
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.masked())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// `text` with every key of `keys` replaced by its mask: for response
/// bodies that quote the key they refused, before they become a job's
/// error.
pub fn scrub_keys<'a>(text: &str, keys: impl IntoIterator<Item = &'a ApiKey>) -> String {
    let mut out = text.to_owned();
    for key in keys {
        if !key.secret.is_empty() && out.contains(&key.secret) {
            out = out.replace(&key.secret, &key.masked());
        }
    }
    out
}

/// A key as a worker node announces it in its heartbeat: never the key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The provider's name (`[providers.NAME]`).
    pub provider: String,
    /// [`ApiKey::fingerprint`].
    pub fingerprint: String,
    /// [`ApiKey::masked`].
    pub masked: String,
}

/// The keys' names in the coordination store.
pub(crate) fn coord_key(provider: &str, what: &str, fingerprint: &str) -> String {
    format!("provider:{provider}:{what}:{fingerprint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_masked_and_are_scrubbed() {
        let key = ApiKey::new("sk-test-0123456789abcd");
        assert_eq!(key.masked(), "...abcd");
        assert_eq!(format!("{key}"), "...abcd");
        assert_eq!(format!("{key:?}"), "ApiKey(...abcd)");
        assert_eq!(key.fingerprint().len(), 16);
        assert_eq!(mask("short"), "...");
        let body = "Incorrect API key provided: sk-test-0123456789abcd.";
        assert_eq!(
            scrub_keys(body, [&key]),
            "Incorrect API key provided: ...abcd."
        );
    }
}
