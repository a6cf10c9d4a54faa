//! Credentials never reach a log line, a printed message or an error
//! answer: a URL is shown with its password as `***`
//! ([`redact_url`]), and a message that may quote a URL (a driver's error
//! text) is scrubbed of the passwords of the URLs it could quote
//! ([`scrub`]).

/// `url` with its password (if any) replaced by `***`, e.g.
/// `redis://:***@127.0.0.1:6379/0`. Text that is not a URL but holds an
/// `@` after a scheme loses everything between the scheme and the `@`.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) if parsed.password().is_some() => {
            if parsed.set_password(Some("***")).is_ok() {
                return parsed.to_string();
            }
            fallback(text)
        }
        Ok(_) => text.to_owned(),
        Err(_) => fallback(text),
    }
}

fn fallback(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &text[..s], &text[at + 1..]),
        _ => text.to_owned(),
    }
}

/// `message` with every password of `urls` replaced by `***`, whether the
/// message quotes the whole URL or only the password (decoded or not).
pub fn scrub(message: &str, urls: &[&str]) -> String {
    let mut out = message.to_owned();
    for url in urls {
        let Ok(parsed) = url::Url::parse(url) else {
            continue;
        };
        let Some(password) = parsed.password().filter(|p| !p.is_empty()) else {
            continue;
        };
        let decoded = percent_decode(password);
        for secret in [password, decoded.as_str()] {
            if !secret.is_empty() {
                out = out.replace(secret, "***");
            }
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("redis://user:s3cret@127.0.0.1:6379/2"),
            "redis://user:***@127.0.0.1:6379/2"
        );
        assert_eq!(
            redact_url("postgres://weir:p%40ss@db:5432/weir?sslmode=require"),
            "postgres://weir:***@db:5432/weir?sslmode=require"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("sqlite://./weir.db"), "sqlite://./weir.db");
        assert_eq!(redact_url("bad://u:pw@[host"), "bad://***@[host");
    }

    #[test]
    fn messages_lose_the_passwords_they_quote() {
        let url = "postgres://weir:p%40ss@db:5432/weir";
        let said = "cannot connect to postgres://weir:p%40ss@db/weir: password p@ss rejected";
        let clean = scrub(said, &[url, "redis://127.0.0.1"]);
        assert!(
            !clean.contains("p%40ss") && !clean.contains("p@ss"),
            "{clean}"
        );
    }
}
