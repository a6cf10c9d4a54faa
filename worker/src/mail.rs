//! `mail.send`: one message over SMTP with lettre, to the server of
//! `[mail]` (`smtp://` with STARTTLS required by default, or `smtps://`
//! for implicit TLS; certificates checked against the system's roots and
//! `SSL_CERT_FILE`).
//!
//! Payload: `{"to": [...], "subject", "text", "html"}` (`to` may be one
//! address; `text`, `html` or both). A 5xx reply (a refused recipient, a
//! refused sender) fails the job at once; a 4xx reply, a lost connection
//! or a timeout retries.

use crate::task::{Context, Registry, TaskError};
use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use weir_shared::config::{MailSettings, Settings, StartTls};
use weir_shared::secret::redact_url;

#[derive(Deserialize)]
#[serde(untagged)]
enum Recipients {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mail {
    to: Recipients,
    subject: String,
    text: Option<String>,
    html: Option<String>,
}

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Registers `mail.send` with the `[mail]` settings of `settings`.
pub(crate) fn register(registry: &mut Registry, settings: &Arc<Settings>) {
    let mailer: Arc<Result<(Transport, Mailbox), String>> =
        Arc::new(match &settings.mail {
            Some(mail) => transport(mail),
            None => Err("mail.send needs an SMTP server: add [mail] with url and from to the file WEIR_CONFIG names".into()),
        });
    registry.register("mail.send", move |ctx: Context, mail: Mail| {
        let mailer = mailer.clone();
        async move {
            let (transport, from) = mailer
                .as_ref()
                .as_ref()
                .map_err(|e| TaskError::fatal(e.clone()))?;
            let message = message(from, mail)?;
            let to: Vec<String> = message
                .envelope()
                .to()
                .iter()
                .map(ToString::to_string)
                .collect();
            tokio::select! {
                sent = transport.send(message) => match sent {
                    Ok(response) => Ok(json!({
                        "to": to,
                        "response": format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" ")),
                    })),
                    Err(e) => Err(classify(&e)),
                },
                () = ctx.cancelled() => Err(TaskError::retry("interrupted")),
            }
        }
    });
}

fn transport(mail: &MailSettings) -> Result<(Transport, Mailbox), String> {
    weir_shared::outbound::install_crypto_provider();
    let shown = redact_url(&mail.url);
    let url = url::Url::parse(&mail.url).map_err(|e| format!("[mail] url `{shown}`: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("[mail] url `{shown}` has no host"))?
        .to_owned();
    let implicit = url.scheme() == "smtps";
    let tls_params =
        || TlsParameters::new(host.clone()).map_err(|e| format!("TLS for {host}: {e}"));
    let (tls, default_port) = if implicit {
        (Tls::Wrapper(tls_params()?), 465)
    } else {
        match mail.starttls {
            StartTls::Required => (Tls::Required(tls_params()?), 587),
            StartTls::Opportunistic => (Tls::Opportunistic(tls_params()?), 587),
            StartTls::Off => (Tls::None, 25),
        }
    };
    let mut builder = Transport::builder_dangerous(host.clone())
        .port(url.port().unwrap_or(default_port))
        .tls(tls)
        .timeout(Some(mail.timeout));
    if !url.username().is_empty() {
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        builder = builder.credentials(Credentials::new(
            decode(url.username()),
            decode(url.password().unwrap_or("")),
        ));
    }
    let from: Mailbox = mail
        .from
        .parse()
        .map_err(|e| format!("[mail] from `{}`: {e}", mail.from))?;
    Ok((builder.build(), from))
}

fn message(from: &Mailbox, mail: Mail) -> Result<Message, TaskError> {
    let to = match mail.to {
        Recipients::One(one) => vec![one],
        Recipients::Many(many) => many,
    };
    if to.is_empty() {
        return Err(TaskError::fatal("`to` names no recipient"));
    }
    let mut builder = Message::builder().from(from.clone()).subject(mail.subject);
    for address in &to {
        let mailbox: Mailbox = address
            .parse()
            .map_err(|e| TaskError::fatal(format!("`to`: `{address}` is not an address: {e}")))?;
        builder = builder.to(mailbox);
    }
    let built = match (mail.text, mail.html) {
        (Some(text), Some(html)) => {
            builder.multipart(MultiPart::alternative_plain_html(text, html))
        }
        (Some(text), None) => builder.singlepart(SinglePart::plain(text)),
        (None, Some(html)) => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html),
        ),
        (None, None) => return Err(TaskError::fatal("the payload needs `text`, `html` or both")),
    };
    built.map_err(|e| TaskError::fatal(format!("the message cannot be built: {e}")))
}

/// A 5xx reply is permanent: no retry changes it. Anything else (a 4xx
/// reply, a connection lost or refused, a timeout) may pass later.
fn classify(e: &lettre::transport::smtp::Error) -> TaskError {
    let message = format!("SMTP: {e}");
    if e.is_permanent() {
        TaskError::fatal(message)
    } else {
        TaskError::retry(message)
    }
}

/// The message a payload makes, for tests.
#[cfg(test)]
fn formatted(payload: serde_json::Value) -> Result<String, TaskError> {
    let mail: Mail =
        serde_json::from_value(payload).map_err(|e| TaskError::fatal(e.to_string()))?;
    let from: Mailbox = "Weir <noreply@example.com>"
        .parse()
        .map_err(|_| TaskError::fatal("from"))?;
    Ok(String::from_utf8_lossy(&message(&from, mail)?.formatted()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_messages_or_clear_errors() {
        let both = formatted(json!({"to": ["a@example.com", "b@example.com"], "subject": "Hi", "text": "plain", "html": "<b>bold</b>"}))
            .expect("a message");
        assert!(both.contains("To: a@example.com, b@example.com"), "{both}");
        assert!(
            both.contains("Subject: Hi") && both.contains("multipart/alternative"),
            "{both}"
        );
        let html = formatted(json!({"to": "a@example.com", "subject": "Hi", "html": "<p>x</p>"}))
            .expect("html");
        assert!(html.contains("Content-Type: text/html"), "{html}");
        assert!(matches!(
            formatted(json!({"to": "not an address", "subject": "Hi", "text": "x"})),
            Err(TaskError::Fatal(m)) if m.contains("not an address")
        ));
        assert!(matches!(
            formatted(json!({"to": [], "subject": "Hi", "text": "x"})),
            Err(TaskError::Fatal(m)) if m.contains("no recipient")
        ));
        assert!(matches!(
            formatted(json!({"to": "a@example.com", "subject": "Hi"})),
            Err(TaskError::Fatal(m)) if m.contains("`text`, `html`")
        ));
    }
}
