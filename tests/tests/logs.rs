//! `WEIR_LOG_FORMAT=json`: one JSON object per line, a job's lines carry
//! its id, queue, task, attempt and node, and neither an API key nor a
//! provider key is ever written.

use serde_json::{Value, json};
use std::time::Duration;
use weir_tests::Sandbox;
use weir_tests::mock_openai::{MockOpenAi, Mode};

const ADMIN_KEY: &str = "weir_logsAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const PROVIDER_KEY: &str = "sk-logs-provider-key-0007";

#[tokio::test]
async fn json_lines_carry_the_job_and_no_secret() {
    let mock = MockOpenAi::start().await;
    mock.set_mode(PROVIDER_KEY, Mode::Unauthorized);
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_LOG_FORMAT", "json")
        .set("WEIR_API_KEYS", &format!("ops:{ADMIN_KEY}:admin"))
        .set("WEIR_HTTP_ALLOW_HOSTS", "127.0.0.1")
        .set("LOG_KEYS", PROVIDER_KEY)
        .config(&format!(
            "[providers.mock]\nbase_url = \"{}\"\nkeys_env = \"LOG_KEYS\"\n",
            mock.url
        ));
    let api = sandbox.dev().await;
    let http = weir_tests::http_client();
    let post = |body: Value| {
        let http = http.clone();
        let url = format!("{}/v1/jobs", api.base);
        async move {
            let r = http
                .post(url)
                .bearer_auth(ADMIN_KEY)
                .json(&body)
                .send()
                .await
                .expect("POST");
            assert_eq!(r.status().as_u16(), 201);
            r.json::<Value>().await.expect("job")["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };
    let failing = post(json!({"task": "weir.fail", "max_retries": 0, "queue": "mail"})).await;
    let revoked = post(
        json!({"task": "http.request", "max_retries": 0, "payload": {
        "provider": "mock", "path": "/v1/chat/completions", "body": {"messages": []}}}),
    )
    .await;
    let ended = |id: String| {
        let http = http.clone();
        let url = format!("{}/v1/jobs/{id}", api.base);
        async move {
            weir_tests::wait_until(Duration::from_secs(20), || async {
                let job: Value = http
                    .get(&url)
                    .bearer_auth(ADMIN_KEY)
                    .send()
                    .await
                    .expect("GET")
                    .json()
                    .await
                    .expect("job");
                job["state"] == "failed"
            })
            .await
        }
    };
    assert!(ended(failing.clone()).await && ended(revoked).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let log = api.proc.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{log}");
    for l in &lines {
        assert!(
            l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string(),
            "{l}"
        );
    }
    let failed = lines
        .iter()
        .find(|l| l["message"] == "Attempt failed" && l["span"]["job_id"] == failing.as_str())
        .unwrap_or_else(|| panic!("the failed attempt's line: {log}"));
    let span = &failed["span"];
    assert_eq!(span["queue"], "mail", "{failed}");
    assert_eq!(span["task"], "weir.fail", "{failed}");
    assert_eq!(span["attempt"], 1, "{failed}");
    assert!(
        span["node"].as_str().is_some_and(|n| !n.is_empty()),
        "{failed}"
    );
    assert!(
        lines.iter().any(|l| l["target"] == "weir::access"),
        "requests are logged too: {log}"
    );
    for secret in [ADMIN_KEY, PROVIDER_KEY] {
        assert!(!log.contains(secret), "the log holds {secret}");
    }
    assert!(
        log.contains("...0007"),
        "the refused key is named by its mask: {log}"
    );
}
