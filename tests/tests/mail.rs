//! `mail.send` end to end: the real binary delivers to an SMTP server the
//! test starts (`weir_tests::smtp_sink`). Messages arrive with their
//! headers; a refused recipient (550) fails at once; a busy mailbox (451)
//! is retried; the default STARTTLS policy refuses to send in the clear;
//! a missing password variable is a configuration error.

use serde_json::{Value, json};
use std::time::Duration;
use weir_tests::smtp_sink::SmtpSink;
use weir_tests::{Dev, Sandbox};

fn sandbox(port: u16, starttls: Option<&str>) -> Sandbox {
    let mut sandbox = Sandbox::new();
    let starttls = starttls.map_or(String::new(), |s| format!("starttls = \"{s}\""));
    sandbox.set("WEIR_AUTH", "disabled").config(&format!(
        "[tasks.\"mail.send\"]\nretry_delay = \"100ms\"\n\n[mail]\nurl = \"smtp://127.0.0.1:{port}\"\nfrom = \"Weir <noreply@example.com>\"\n{starttls}\n"
    ));
    sandbox
}

async fn send(api: &Dev, payload: Value, retries: u32, end: &str) -> Value {
    let (status, job) = api
        .post(
            "/v1/jobs",
            &json!({"task": "mail.send", "payload": payload, "max_retries": retries}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    api.wait_state(&id, end, Duration::from_secs(20)).await
}

#[tokio::test]
async fn messages_arrive_with_their_headers_and_refusals_are_classified() {
    let sink = SmtpSink::start().await;
    let sandbox = sandbox(sink.port, Some("off"));
    let api = sandbox.dev().await;

    let sent = send(
        &api,
        json!({"to": ["ana@example.com", "bo@example.com"], "subject": "Welcome to weir",
               "text": "Hello in plain text", "html": "<p>Hello in <b>HTML</b></p>"}),
        0,
        "succeeded",
    )
    .await;
    assert_eq!(
        sent["result"]["to"],
        json!(["ana@example.com", "bo@example.com"])
    );
    assert!(
        sent["result"]["response"]
            .as_str()
            .is_some_and(|r| r.starts_with("250")),
        "{sent}"
    );
    let got = sink.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let message = &got[0];
    assert_eq!(message.from, "noreply@example.com");
    assert_eq!(message.to, vec!["ana@example.com", "bo@example.com"]);
    for header in [
        "From: Weir <noreply@example.com>",
        "To: ana@example.com, bo@example.com",
        "Subject: Welcome to weir",
        "multipart/alternative",
        "Hello in plain text",
        "Hello in <b>HTML</b>",
    ] {
        assert!(message.data.contains(header), "{header}: {}", message.data);
    }

    let refused = send(
        &api,
        json!({"to": "nobody@example.com", "subject": "x", "text": "x"}),
        3,
        "failed",
    )
    .await;
    assert_eq!(refused["attempts"], 1, "a 5xx is not retried: {refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("550") || e.contains("No such user")),
        "{refused}"
    );

    let busy = send(
        &api,
        json!({"to": "busy@example.com", "subject": "x", "text": "x"}),
        1,
        "failed",
    )
    .await;
    assert_eq!(busy["attempts"], 2, "a 4xx is retried: {busy}");
    assert!(
        busy["error"]
            .as_str()
            .is_some_and(|e| e.contains("451") || e.contains("busy")),
        "{busy}"
    );
    assert_eq!(sink.received().len(), 1, "nothing else was delivered");
}

#[tokio::test]
async fn starttls_is_required_by_default_and_secrets_come_from_the_environment() {
    let sink = SmtpSink::start().await;
    let sandbox = sandbox(sink.port, None);
    let api = sandbox.dev().await;
    let plain = send(
        &api,
        json!({"to": "ana@example.com", "subject": "x", "text": "x"}),
        0,
        "failed",
    )
    .await;
    let error = plain["error"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        error.contains("tls"),
        "a server without STARTTLS gets nothing in the clear: {plain}"
    );
    assert!(sink.received().is_empty());

    let mut missing = Sandbox::new();
    missing.config(
        "[mail]\nurl = \"smtp://weir:${WEIR_SMTP_PASSWORD}@127.0.0.1:25\"\nfrom = \"noreply@example.com\"\n",
    );
    let out = missing.cli(&["queues"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mail.url") && stderr.contains("WEIR_SMTP_PASSWORD is not set"),
        "{stderr}"
    );
}
