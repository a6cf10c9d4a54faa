//! API keys and the API's rate limits.
//!
//! Keys are random secrets (`weir_` + 40 base62 characters, about 238 bits)
//! kept only as SHA-256 digests: a fast hash is right for high-entropy
//! secrets, and the digest file leaks nothing usable. Verification hashes
//! the presented key and compares it with every configured digest in
//! constant time, so timing tells nothing about which keys exist.

use super::Problem;
use crate::limit::Rate;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One accepted API key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The tenant the key acts for.
    pub tenant: String,
    /// SHA-256 of the key.
    pub digest: [u8; 32],
    /// May use admin routes and see every tenant's jobs.
    pub admin: bool,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even the digest.
        f.debug_struct("ApiKey")
            .field("tenant", &self.tenant)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// Authentication and API rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// `WEIR_AUTH=disabled`: every caller is the operator of tenant `default`.
    pub disabled: bool,
    /// Keys from `WEIR_API_KEYS`, and from `WEIR_API_KEYS_FILE` once
    /// [`AuthSettings::read_keys_file`] has run.
    pub keys: Vec<ApiKey>,
    /// `WEIR_API_KEYS_FILE`: read only by the roles that authenticate
    /// (`weir api`, `weir dev`), so a worker or the CLI never needs it.
    pub keys_file: Option<String>,
    /// Per tenant (`WEIR_RATE_LIMIT_TENANT`).
    pub rate_limit_tenant: Rate,
    /// Per key (`WEIR_RATE_LIMIT_KEY`).
    pub rate_limit_key: Rate,
}

impl AuthSettings {
    /// Adds the keys of `WEIR_API_KEYS_FILE`, if set; the error names the
    /// variable and what is wrong with the file.
    pub fn read_keys_file(&mut self) -> Result<(), String> {
        let Some(path) = self.keys_file.take() else {
            return Ok(());
        };
        let mut problems = Vec::new();
        let keys = parse_key_file(&path, &mut problems);
        if !problems.is_empty() {
            let messages: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect();
            return Err(messages.join("; "));
        }
        self.keys.extend(keys);
        Ok(())
    }

    /// True when requests must carry a key.
    pub fn required(&self) -> bool {
        !self.disabled && !self.keys.is_empty()
    }

    /// The configured key matching `presented`, if any.
    pub fn verify(&self, presented: &str) -> Option<&ApiKey> {
        let digest = digest(presented);
        let mut found = None;
        for key in &self.keys {
            // Every key is compared, whatever matched before.
            if bool::from(key.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(key);
            }
        }
        found
    }
}

/// SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A short public name for a key (a digest prefix): for limiter keys and
/// logs, where the key itself must never go.
pub fn digest_id(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..8])
}

/// A new random API key.
pub fn generate_key() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let secret: String = (0..40)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("weir_{secret}")
}

/// The `WEIR_API_KEYS_FILE` line for a key.
pub fn file_line(tenant: &str, key: &str, admin: bool) -> String {
    let mut line = format!("{tenant}:{}", hex::encode(digest(key)));
    if admin {
        line.push_str(":admin");
    }
    line
}

/// Checks a tenant name: 1-64 of letters, digits, `_`, `.`, `-`.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    if !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Ok(())
    } else {
        Err(format!(
            "tenant `{tenant}` must be 1-64 letters, digits, `_`, `.` or `-`"
        ))
    }
}

fn admin_flag(flag: Option<&str>) -> Result<bool, String> {
    match flag {
        None => Ok(false),
        Some("admin") => Ok(true),
        Some(other) => Err(format!("`{other}` is not `admin`")),
    }
}

/// Parses `WEIR_API_KEYS`: `TENANT:KEY` or `TENANT:KEY:admin`, comma-separated.
pub(super) fn parse_env_keys(value: &str, problems: &mut Vec<Problem>) -> Vec<ApiKey> {
    let mut keys = Vec::new();
    for (i, entry) in value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        let mut parts = entry.splitn(3, ':');
        let (tenant, key, flag) = (parts.next().unwrap_or(""), parts.next(), parts.next());
        let parsed = validate_tenant(tenant).and_then(|()| {
            let key = key.filter(|k| k.len() >= 16).ok_or_else(|| {
                "the key must be at least 16 characters (use `weir keys create`)".to_owned()
            })?;
            Ok(ApiKey {
                tenant: tenant.to_owned(),
                digest: digest(key),
                admin: admin_flag(flag)?,
            })
        });
        match parsed {
            Ok(k) => keys.push(k),
            // The message names the entry by position: never echo a key.
            Err(message) => problems.push(Problem {
                key: "WEIR_API_KEYS".into(),
                message: format!("entry {}: {message}", i + 1),
            }),
        }
    }
    keys
}

/// Parses a `WEIR_API_KEYS_FILE`: `TENANT:SHA256HEX[:admin]` per line.
pub(super) fn parse_key_file(path: &str, problems: &mut Vec<Problem>) -> Vec<ApiKey> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem {
                key: "WEIR_API_KEYS_FILE".into(),
                message: format!("cannot read {path}: {e}"),
            });
            return Vec::new();
        }
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (tenant, hash, flag) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next(),
        );
        let parsed = validate_tenant(tenant).and_then(|()| {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hash, &mut digest).map_err(|_| {
                "the second field must be a SHA-256 digest in hex (64 characters)".to_owned()
            })?;
            Ok(ApiKey {
                tenant: tenant.to_owned(),
                digest,
                admin: admin_flag(flag)?,
            })
        });
        match parsed {
            Ok(k) => keys.push(k),
            Err(message) => problems.push(Problem {
                key: format!("WEIR_API_KEYS_FILE ({path}:{})", n + 1),
                message,
            }),
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_by_digest() {
        let mut problems = Vec::new();
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with("weir_") && a.len() == 45);
        let mut keys = parse_env_keys(&format!("acme:{a},ops:{b}:admin"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("keys");
        let c = generate_key();
        std::fs::write(
            &file,
            format!("# keys\n{}\n", file_line("globex", &c, false)),
        )
        .expect("write");
        keys.extend(parse_key_file(file.to_str().expect("utf-8"), &mut problems));
        assert!(problems.is_empty(), "{problems:?}");
        let auth = AuthSettings {
            disabled: false,
            keys,
            keys_file: None,
            rate_limit_tenant: "1000/m".parse().expect("rate"),
            rate_limit_key: "100/s".parse().expect("rate"),
        };
        assert_eq!(
            auth.verify(&a).map(|k| (k.tenant.as_str(), k.admin)),
            Some(("acme", false))
        );
        assert_eq!(
            auth.verify(&b).map(|k| (k.tenant.as_str(), k.admin)),
            Some(("ops", true))
        );
        assert_eq!(auth.verify(&c).map(|k| k.tenant.as_str()), Some("globex"));
        assert!(auth.verify("weir_wrong").is_none());
        assert!(
            !format!("{auth:?}").contains(&a[5..]),
            "keys never appear in debug output"
        );
    }

    #[test]
    fn bad_entries_are_reported_without_the_key() {
        let mut problems = Vec::new();
        parse_env_keys(
            "acme:short,bad tenant:0123456789abcdef0123,x:0123456789abcdefXYZ:root",
            &mut problems,
        );
        assert_eq!(problems.len(), 3);
        assert!(
            problems
                .iter()
                .all(|p| !p.message.contains("0123456789abcdef"))
        );
    }
}
