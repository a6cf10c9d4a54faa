//! The CLI as scripts use it: exit codes 0/1/2, messages that say what to
//! fix, and `--json` documents.

use serde_json::json;
use weir_tests::Sandbox;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2_and_say_what_to_fix() {
    let sandbox = Sandbox::new();
    let cases: [(&[&str], &str); 8] = [
        (&["enqueue", "no.such.task"], "unknown task `no.such.task`"),
        (
            &["enqueue", "weir.noop", "--queue", "nowhere"],
            "unknown queue `nowhere`",
        ),
        (
            &["enqueue", "weir.echo", "--payload", "{oops"],
            "--payload is not valid JSON",
        ),
        (
            &["enqueue", "weir.noop", "--priority", "11"],
            "priority must be 0 to 9",
        ),
        (&["enqueue", "weir.noop", "--delay", "soon"], "--delay"),
        (&["jobs", "show", "not-an-id"], "is not a job id"),
        (&["queues", "purge", "default"], "--yes"),
        (&["jobs", "list", "--state", "done"], "unknown state `done`"),
    ];
    for (args, message) in cases {
        let out = sandbox.cli(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "weir {args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(message),
            "weir {args:?}: {}",
            stderr(&out)
        );
    }
    // Nothing was enqueued by any of them: not even the database was made.
    assert!(!sandbox.dir.path().join("weir.db").exists());
}

/// Reading commands on the SQLite default do not create an empty database
/// from the wrong directory: they name the path they looked at (exit 2);
/// `enqueue` creates it and says where.
#[test]
fn inspection_refuses_a_missing_database_and_names_it() {
    let sandbox = Sandbox::new();
    let db = sandbox.dir.path().join("weir.db");
    for args in [
        &["queues"][..],
        &["jobs", "list"],
        &["workers"],
        &["limits"],
        &["schedules"],
    ] {
        let out = sandbox.cli(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "weir {args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(&format!("no weir database at {}", db.display())),
            "weir {args:?}: {}",
            stderr(&out)
        );
        assert!(!db.exists(), "weir {args:?} created the database");
    }
    let out = sandbox.cli(&["enqueue", "weir.noop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("created a new weir database at {}", db.display())),
        "{}",
        stderr(&out)
    );
    assert!(sandbox.cli(&["queues"]).status.success());
}

/// `WEIR_API_KEYS_FILE` is read by the roles that authenticate only: a
/// missing file stops `weir api`, never a worker or the CLI.
#[test]
fn only_the_api_reads_the_keys_file() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_API_KEYS_FILE", "/etc/weir/not-written-yet");
    let out = sandbox.cli(&["enqueue", "weir.noop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sandbox.cli(&["queues"]).status.success());
    let out = sandbox.cli(&["api"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("WEIR_API_KEYS_FILE: cannot read /etc/weir/not-written-yet"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_CONCURRENCY", "lots");
    let out = sandbox.cli(&["queues"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("WEIR_CONCURRENCY: `lots` is not a whole number"),
        "{}",
        stderr(&out)
    );

    let mut sandbox = Sandbox::new();
    sandbox.config("[tasks.\"x\"]\nretry_delay = \"often\"\n");
    let out = sandbox.cli(&["queues"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("tasks.\"x\".retry_delay"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_broker_exits_1() {
    let mut sandbox = Sandbox::new();
    sandbox.set(
        "WEIR_BROKER_URL",
        "sqlite:///proc/weir-cannot-be-here/weir.db",
    );
    let out = sandbox.cli(&["enqueue", "weir.noop"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_BROKER_URL", "redis://127.0.0.1:1/0");
    let out = sandbox.cli(&["queues"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_BROKER_URL", "kafka://nowhere");
    let out = sandbox.cli(&["queues"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unsupported scheme is a usage error: {}",
        stderr(&out)
    );
}

#[test]
fn api_refuses_to_start_without_keys() {
    let sandbox = Sandbox::new();
    let out = sandbox.cli(&["api"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("WEIR_AUTH=disabled"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bulk_enqueue_and_queue_steering() {
    let sandbox = Sandbox::new();
    let out = sandbox.cli_json(&[
        "enqueue",
        "weir.noop",
        "--queue",
        "dataset",
        "--count",
        "2500",
        "--json",
    ]);
    assert_eq!(out["ids"].as_array().map(Vec::len), Some(2500));
    let queues = sandbox.cli_json(&["queues", "--json"]);
    let dataset = queues["data"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == "dataset"))
        .cloned()
        .expect("dataset listed");
    assert_eq!(dataset["counts"]["queued"], 2500);
    assert_eq!(dataset["paused"], false);

    assert!(
        sandbox
            .cli(&["queues", "pause", "dataset"])
            .status
            .success()
    );
    let queues = sandbox.cli_json(&["queues", "--json"]);
    assert!(queues["data"].as_array().is_some_and(|qs| {
        qs.iter()
            .any(|q| q["name"] == "dataset" && q["paused"] == true)
    }));
    let purged = sandbox.cli_json(&["queues", "purge", "dataset", "--yes", "--json"]);
    assert_eq!(purged["purged"], 2500);

    let table = sandbox.cli(&["queues"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines().next().is_some_and(|h| h.starts_with("QUEUE")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("dataset") && l.contains("yes")),
        "{text}"
    );
}

#[test]
fn unique_keys_from_the_cli() {
    let sandbox = Sandbox::new();
    let a = sandbox.cli_json(&[
        "enqueue",
        "weir.noop",
        "--unique-key",
        "k",
        "--delay",
        "1m",
        "--json",
    ]);
    let b = sandbox.cli_json(&["enqueue", "weir.noop", "--unique-key", "k", "--json"]);
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["state"], "scheduled");
    assert_eq!(
        (&a["created"], &b["created"]),
        (&json!(true), &json!(false)),
        "--json says which"
    );
}

#[tokio::test]
async fn a_created_key_opens_the_api_and_nothing_else_does() {
    let mut sandbox = Sandbox::new();
    let out = sandbox.cli(&["keys", "create", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let key = lines.next().expect("the key").to_owned();
    let line = lines.next().expect("the keys-file line").to_owned();
    assert!(key.starts_with("weir_"));
    assert!(
        line.starts_with("acme:") && !line.contains(&key),
        "the file holds a digest, not the key"
    );
    let file = sandbox.dir.path().join("keys");
    std::fs::write(&file, format!("{line}\n")).expect("write keys file");
    let file = file.display().to_string();
    sandbox.set("WEIR_API_KEYS_FILE", &file);
    let api = sandbox.api().await;
    let url = format!("{}/v1/jobs", api.base);
    let body = serde_json::json!({"task": "weir.noop"});
    let denied = api
        .http
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(denied.status().as_u16(), 401);
    let allowed = api
        .http
        .post(&url)
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(allowed.status().as_u16(), 201);
    let job: serde_json::Value = allowed.json().await.expect("job");
    assert_eq!(job["tenant"], "acme");
    assert!(
        !api.proc.log().contains(&key[5..]),
        "the key never appears in the log"
    );
}

/// `weir enqueue --count` killed mid-run has printed the ids of every
/// committed batch; run again with the same `--unique-key-prefix`, it adds
/// only the copies that are not in, so the total is exact.
#[test]
fn a_killed_bulk_enqueue_resumes_without_duplicates() {
    let sandbox = Sandbox::new();
    let total = 30_000;
    let args = [
        "enqueue",
        "weir.noop",
        "--count",
        "30000",
        "--unique-key-prefix",
        "import-7",
    ];
    let mut first = sandbox.spawn("bulk", &args);
    let printed = |p: &weir_tests::Proc| {
        p.log()
            .lines()
            .filter(|l| l.len() == 36 && l.chars().filter(|c| *c == '-').count() == 4)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while printed(&first).len() < 2000 {
        assert!(std::time::Instant::now() < deadline, "{}", first.log());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    first.signal("KILL");
    first.wait_exit(std::time::Duration::from_secs(5));
    let before = printed(&first);
    assert!(
        before.len() < total,
        "killed before the end ({})",
        before.len()
    );

    let out = sandbox.cli_json(&[&args[..], &["--json"]].concat());
    let added = out["ids"].as_array().map_or(0, Vec::len);
    let skipped = out["skipped"].as_u64().unwrap_or(0);
    assert_eq!(added as u64 + skipped, total as u64);
    assert!(skipped as usize >= before.len(), "every printed job was in");

    let jobs = sandbox.all_jobs();
    assert_eq!(jobs.len(), total, "no copy twice, none missing");
    let ids: std::collections::HashSet<&str> =
        jobs.iter().filter_map(|j| j["id"].as_str()).collect();
    assert!(before.iter().all(|id| ids.contains(id.as_str())));
}

/// `weir jobs bulk`: counts with --dry-run, works in steps of --batch,
/// and a delete needs --yes.
#[test]
fn bulk_actions_from_the_cli() {
    let sandbox = Sandbox::new();
    sandbox.cli_json(&[
        "enqueue",
        "weir.noop",
        "--queue",
        "dataset",
        "--count",
        "5",
        "--json",
    ]);
    let dry = sandbox.cli_json(&[
        "jobs",
        "bulk",
        "cancel",
        "--queue",
        "dataset",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(
        (dry["matched"].as_u64(), dry["done"].as_u64()),
        (Some(5), Some(0))
    );
    let done = sandbox.cli_json(&[
        "jobs", "bulk", "cancel", "--queue", "dataset", "--batch", "2", "--json",
    ]);
    assert_eq!(done["done"], 5, "{done}");
    let refused = sandbox.cli(&[
        "jobs",
        "bulk",
        "delete",
        "--queue",
        "dataset",
        "--state",
        "cancelled",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    let out = sandbox.cli(&[
        "jobs",
        "bulk",
        "delete",
        "--queue",
        "dataset",
        "--state",
        "cancelled",
        "--yes",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("5 jobs deleted of 5 matching"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(sandbox.all_jobs().is_empty());
    let wrong = sandbox.cli(&[
        "jobs", "bulk", "retry", "--queue", "dataset", "--state", "queued",
    ]);
    assert_eq!(wrong.status.code(), Some(2));
}

/// Global --broker and --config, shell completions, and `jobs list`
/// filtered by tenant and creation time.
#[test]
fn global_flags_completions_and_list_filters() {
    let sandbox = Sandbox::new();
    let other = sandbox.dir.path().join("other.db");
    let broker = format!("sqlite://{}", other.display());
    let out = sandbox.cli(&[
        "--broker",
        &broker,
        "enqueue",
        "weir.noop",
        "--tenant",
        "acme",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(other.exists(), "--broker wins over WEIR_BROKER_URL");
    assert!(!sandbox.dir.path().join("weir.db").exists());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cut = sandbox.cli(&[
        "--broker",
        &broker,
        "enqueue",
        "weir.noop",
        "--tenant",
        "globex",
    ]);
    assert!(cut.status.success());
    let listed = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["--broker", broker.as_str(), "jobs", "list", "--json"];
        args.extend_from_slice(extra);
        sandbox.cli_json(&args)["data"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|j| j["tenant"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(listed(&[]), ["globex", "acme"]);
    assert_eq!(listed(&["--tenant", "acme"]), ["acme"]);
    let jobs = sandbox.cli_json(&["--broker", &broker, "jobs", "list", "--json"]);
    let newest = jobs["data"][0]["created_at"]
        .as_str()
        .expect("time")
        .to_owned();
    assert_eq!(listed(&["--before", &newest]), ["acme"]);
    assert_eq!(listed(&["--after", &newest]), ["globex"]);
    assert_eq!(listed(&["--after", "1h"]).len(), 2);

    let config = sandbox.dir.path().join("custom.toml");
    std::fs::write(&config, "[queues]\ndeclared = [\"only\", \"default\"]\n").expect("config");
    let queues = sandbox.cli_json(&[
        "--broker",
        &broker,
        "--config",
        &config.display().to_string(),
        "queues",
        "--json",
    ]);
    let names: Vec<&str> = queues["data"]
        .as_array()
        .map(|q| q.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"only"), "--config is read: {names:?}");

    let completions = sandbox.cli(&["completions", "bash"]);
    assert!(completions.status.success());
    assert!(String::from_utf8_lossy(&completions.stdout).contains("_weir()"));
}
