//! `weir top` in a real terminal (tmux, 80x24): the queues and their counts
//! appear; `p` pauses the selected queue in the broker; `tab` then `r`
//! retries a failed job; `q` exits with status 0.

use serde_json::json;
use std::process::Command;
use std::time::Duration;
use weir_tests::{Sandbox, wait_until};

fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux").args(args).output().expect("run tmux")
}

fn screen(session: &str) -> String {
    String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", session]).stdout).into_owned()
}

async fn shows(session: &str, what: &str) -> bool {
    wait_until(Duration::from_secs(8), || async {
        screen(session).contains(what)
    })
    .await
}

#[tokio::test]
async fn weir_top_shows_queues_and_steers_them_from_a_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(std::env::var("CI").is_err(), "tmux is needed in CI");
        eprintln!("skipped: no tmux");
        return;
    }
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_AUTH", "disabled");
    let api = sandbox.dev().await;
    // One failed job (a worker ran it), then the first queue paused-free with
    // 3 waiting jobs in a paused `pipeline` so the counts hold still.
    let (_, failed) = api
        .post("/v1/jobs", &json!({"task": "weir.fail", "max_retries": 0}))
        .await;
    let failed = failed["id"].as_str().expect("id").to_owned();
    api.wait_state(&failed, "failed", Duration::from_secs(20))
        .await;
    api.post("/v1/queues/pipeline/pause", &json!({})).await;
    for _ in 0..3 {
        api.post(
            "/v1/jobs",
            &json!({"task": "weir.noop", "queue": "pipeline"}),
        )
        .await;
    }

    let session = format!("weir-top-{}", std::process::id());
    let done = sandbox.dir.path().join("top.exit");
    let env: Vec<String> = sandbox
        .env
        .iter()
        .map(|(k, v)| format!("{k}='{v}'"))
        .collect();
    let command = format!(
        "env {} {} top; echo $? > {}",
        env.join(" "),
        weir_tests::weir_bin().display(),
        done.display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        &command,
    ]);
    assert!(started.status.success(), "{:?}", started);
    assert!(shows(&session, "pipeline").await, "{}", screen(&session));
    assert!(
        wait_until(Duration::from_secs(8), || async {
            screen(&session)
                .lines()
                .any(|l| l.starts_with("pipeline") && l.contains(" 3 ") && l.contains("paused"))
        })
        .await,
        "the pipeline row with 3 queued, paused: {}",
        screen(&session)
    );

    // The first row is selected: `p` pauses it.
    let first = weir_shared::config::DEFAULT_QUEUES[0];
    tmux(&["send-keys", "-t", &session, "p"]);
    assert!(
        shows(&session, &format!("paused {first}")).await,
        "{}",
        screen(&session)
    );
    let queues = sandbox.cli_json(&["queues", "--json"]);
    let row = queues["data"]
        .as_array()
        .and_then(|d| d.iter().find(|q| q["name"] == first))
        .cloned()
        .expect("the first queue");
    assert_eq!(row["paused"], true, "the broker has it paused: {row}");

    // The failed pane: the job is there; `r` retries it.
    tmux(&["send-keys", "-t", &session, "Tab"]);
    assert!(shows(&session, &failed[..8]).await, "{}", screen(&session));
    tmux(&["send-keys", "-t", &session, "r"]);
    assert!(
        shows(&session, &format!("retried {failed}")).await,
        "{}",
        screen(&session)
    );
    // Queued again with a fresh budget: the worker runs it a second time.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            api.get(&format!("/v1/jobs/{failed}")).await.1["attempts"] == 2
        })
        .await,
        "the retried job ran again: {}",
        api.get(&format!("/v1/jobs/{failed}")).await.1
    );

    tmux(&["send-keys", "-t", &session, "q"]);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            std::fs::read_to_string(&done).is_ok_and(|s| s.trim() == "0")
        })
        .await,
        "q exits with status 0: {:?}",
        std::fs::read_to_string(&done)
    );
    let _ = tmux(&["kill-session", "-t", &session]);
}
