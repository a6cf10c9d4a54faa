use super::*;
use std::collections::HashMap;
use std::io::Write;

fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load(&|k| map.get(k).cloned())
}

#[test]
fn defaults_need_no_environment() {
    let s = load(&[]).expect("defaults load");
    assert_eq!(s.broker.display_url(), DEFAULT_BROKER_URL);
    assert_eq!(s.declared_queues.len(), 10);
    assert_eq!(s.worker.concurrency, cpu_cores());
    assert_eq!(s.worker.processes, cpu_cores());
    assert_eq!(s.worker.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(s.http.addr.to_string(), "127.0.0.1:8080");
    assert_eq!(s.http.max_payload_bytes, 1 << 20);
    assert_eq!(s.worker_queues().names().count(), 10);
}

#[test]
fn weir_names_win_over_celery_names() {
    let s = load(&[("CELERY_WORKER_AMOUNT", "7")]).expect("loads");
    assert_eq!(s.worker.concurrency, 7);
    let s = load(&[("CELERY_WORKER_AMOUNT", "7"), ("WEIR_CONCURRENCY", "3")]).expect("loads");
    assert_eq!(s.worker.concurrency, 3);
}

#[test]
fn every_problem_is_reported_by_key() {
    let err = load(&[
        ("WEIR_CONCURRENCY", "many"),
        ("WEIR_PROCESSES", "0"),
        ("WEIR_SHUTDOWN_TIMEOUT", "soon"),
        ("WEIR_QUEUES", "nosuch"),
        ("WEIR_HTTP_ADDR", "here"),
        ("WEIR_LOG_FORMAT", "xml"),
    ])
    .expect_err("invalid");
    let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "WEIR_QUEUES",
            "WEIR_CONCURRENCY",
            "WEIR_PROCESSES",
            "WEIR_SHUTDOWN_TIMEOUT",
            "WEIR_HTTP_ADDR",
            "WEIR_LOG_FORMAT"
        ]
    );
    assert!(err.to_string().contains("`many` is not a whole number"));
}

#[test]
fn file_declares_queues_and_tasks() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        r#"
[queues]
declared = ["dataset", "default"]

[tasks."document.index"]
queue = "dataset"
max_retries = 5
retry_delay = "60s"
timeout = "10m"
"#
    )
    .expect("write");
    let path = file.path().to_str().expect("utf-8").to_owned();
    let s = load(&[
        ("WEIR_CONFIG", &path),
        ("WEIR_QUEUES", "dataset=3,default=1"),
    ])
    .expect("loads");
    assert_eq!(s.declared_queues, ["dataset", "default"]);
    let t = s.task("document.index");
    assert_eq!(t.queue.as_deref(), Some("dataset"));
    assert_eq!(t.max_retries, Some(5));
    assert_eq!(t.retry_delay, Duration::from_secs(60));
    assert_eq!(t.timeout, Some(Duration::from_secs(600)));
    assert!(s.knows_task("document.index"));
    assert!(s.knows_task("weir.echo"));
    assert!(!s.knows_task("nope"));
    assert!(s.worker_queues().is_weighted());
}

#[test]
fn file_errors_name_the_file_and_key() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        "[tasks.\"x\"]\nqueue = \"nowhere\"\nretry_delay = \"often\"\ntypo = 1\n"
    )
    .expect("write");
    let path = file.path().to_str().expect("utf-8").to_owned();
    let err = load(&[("WEIR_CONFIG", &path)]).expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("unknown field `typo`"), "{text}");

    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        "[tasks.\"x\"]\nqueue = \"nowhere\"\nretry_delay = \"often\"\n"
    )
    .expect("write");
    let path = file.path().to_str().expect("utf-8").to_owned();
    let err = load(&[("WEIR_CONFIG", &path)]).expect_err("invalid");
    let keys: Vec<_> = err.problems.iter().map(|p| p.key.clone()).collect();
    assert_eq!(
        keys,
        [
            format!("{path} tasks.\"x\".retry_delay"),
            format!("{path} tasks.\"x\".queue")
        ]
    );
}

#[test]
fn backoff_doubles_and_is_capped() {
    let t = TaskSettings::default();
    assert_eq!(t.backoff(2, 0.0), Duration::from_secs(1));
    assert_eq!(t.backoff(3, 0.0), Duration::from_secs(2));
    assert_eq!(t.backoff(4, 0.0), Duration::from_secs(4));
    assert_eq!(t.backoff(40, 0.0), MAX_RETRY_DELAY);
    assert_eq!(t.backoff(2, 1.0), Duration::from_millis(1100));
    let flat = TaskSettings {
        retry_backoff: false,
        ..TaskSettings::default()
    };
    assert_eq!(flat.backoff(5, 0.0), Duration::from_secs(1));
}

#[test]
fn worker_names_take_precedence_and_sources_are_recorded() {
    let s = load(&[]).expect("defaults");
    assert_eq!(s.worker.max_tasks_per_child, 0);
    assert_eq!(s.worker.max_memory_per_child, None);
    assert_eq!(s.worker.sources["concurrency"], "default (CPU cores)");
    assert_eq!(s.worker.sources["max_tasks_per_child"], "default (never)");

    let s = load(&[("MAX_TASKS_PER_CHILD", "50"), ("CELERY_WORKER_AMOUNT", "6")])
        .expect("celery names");
    assert_eq!(s.worker.max_tasks_per_child, 50);
    assert_eq!(s.worker.concurrency, 6);
    assert_eq!(
        s.worker.sources["max_tasks_per_child"],
        "MAX_TASKS_PER_CHILD"
    );
    assert_eq!(s.worker.sources["concurrency"], "CELERY_WORKER_AMOUNT");

    let s = load(&[
        ("MAX_TASKS_PER_CHILD", "50"),
        ("WEIR_MAX_TASKS_PER_CHILD", "7"),
        ("CELERY_WORKER_AMOUNT", "6"),
        ("WEIR_CONCURRENCY", "3"),
        ("WEIR_MAX_MEMORY_PER_CHILD", "512MiB"),
    ])
    .expect("weir names");
    assert_eq!(s.worker.max_tasks_per_child, 7);
    assert_eq!(s.worker.concurrency, 3);
    assert_eq!(s.worker.max_memory_per_child, Some(512 << 20));
    assert_eq!(
        s.worker.sources["max_tasks_per_child"],
        "WEIR_MAX_TASKS_PER_CHILD"
    );
    assert_eq!(
        s.worker.sources["max_memory_per_child"],
        "WEIR_MAX_MEMORY_PER_CHILD"
    );
}

#[test]
fn autoscale_settings_follow_the_precedence() {
    let s = load(&[]).expect("defaults");
    assert!(!s.worker.autoscale);
    assert_eq!(
        (s.worker.max_workers, s.worker.min_workers),
        (cpu_cores(), 1)
    );
    let s = load(&[
        ("CELERY_AUTO_SCALE", "true"),
        ("CELERY_MAX_WORKERS", "8"),
        ("CELERY_MIN_WORKERS", "2"),
    ])
    .expect("celery");
    assert!(s.worker.autoscale);
    assert_eq!((s.worker.max_workers, s.worker.min_workers), (8, 2));
    assert_eq!(s.worker.sources["max_workers"], "CELERY_MAX_WORKERS");
    let s = load(&[
        ("CELERY_AUTO_SCALE", "true"),
        ("WEIR_AUTOSCALE", "false"),
        ("CELERY_MAX_WORKERS", "8"),
        ("WEIR_MAX_WORKERS", "4"),
    ])
    .expect("weir");
    assert!(!s.worker.autoscale);
    assert_eq!(s.worker.max_workers, 4);
    assert_eq!(s.worker.sources["autoscale"], "WEIR_AUTOSCALE");
    let err = load(&[("WEIR_MIN_WORKERS", "9"), ("WEIR_MAX_WORKERS", "4")])
        .expect_err("floor above ceiling");
    assert_eq!(err.problems[0].key, "WEIR_MIN_WORKERS");
    assert!(load(&[("WEIR_AUTOSCALE", "maybe")]).is_err());
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
    assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
    assert_eq!(parse_bytes("100MB"), Ok(100_000_000));
    assert_eq!(parse_bytes("4096"), Ok(4096));
    assert!(parse_bytes("lots").is_err());
    assert!(parse_bytes("5PB").is_err());
    assert!(parse_bytes("0").is_err());
}

#[test]
fn core_count_falls_back_to_one() {
    use std::num::NonZeroUsize;
    assert_eq!(cores_from(Ok(NonZeroUsize::MIN.saturating_add(3))), 4);
    assert_eq!(
        cores_from(Err(std::io::Error::other("no cgroup answer"))),
        1
    );
    assert!(cpu_cores() >= 1);
}

#[test]
fn limits_come_from_the_file_and_the_environment_wins() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        r#"
[tasks."document.index"]
rate_limit = "10/m"
rate_burst = 2
concurrency_limit = 5
tenant_concurrency_limit = 1

[tasks."mail.send"]
concurrency_limit = 4
"#
    )
    .expect("write");
    let path = file.path().to_str().expect("utf-8").to_owned();
    let s = load(&[
        ("WEIR_CONFIG", &path),
        ("WEIR_CONCURRENCY_LIMITS", "mail.send=2,weir.sleep=3"),
        ("WEIR_RATE_LIMITS", "weir.noop=10/s"),
    ])
    .expect("loads");
    let doc = s.limits.get("document.index").expect("limited");
    assert_eq!(doc.concurrency, Some(5));
    assert_eq!(doc.tenant_concurrency, Some(1));
    let rate = doc.rate.expect("rate");
    assert_eq!((rate.rate.to_string(), rate.burst), ("10/m".to_owned(), 2));
    assert_eq!(
        s.limits.get("mail.send").and_then(|l| l.concurrency),
        Some(2)
    );
    assert_eq!(
        s.limits.get("weir.sleep").and_then(|l| l.concurrency),
        Some(3)
    );
    assert!(s.limits.get("weir.noop").and_then(|l| l.rate).is_some());
    assert!(s.limits.get("weir.echo").is_none());

    let err = load(&[
        ("WEIR_CONCURRENCY_LIMITS", "mail.send=lots"),
        ("WEIR_RATE_LIMITS", "mail.send"),
    ])
    .expect_err("bad values");
    let text = err.to_string();
    assert!(
        text.contains("WEIR_CONCURRENCY_LIMITS: mail.send: `lots` is not a whole number"),
        "{text}"
    );
    assert!(
        text.contains("WEIR_RATE_LIMITS: `mail.send` is not TASK=VALUE"),
        "{text}"
    );
}

#[test]
fn schedules_and_warmups_are_checked_at_start() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        r#"
[[schedules]]
name = "app-config-warmup"
cron = "*/10 * * * *"
tz = "Asia/Shanghai"
task = "cache.warmup"
payload = {{ target = "app_config" }}
misfire = "catch_up"
grace = "10m"

[warmup.app_config]
database_url = "postgres://localhost/dify"
query = "SELECT id, name FROM apps"
key = "app_config:{{id}}"
ttl = "1h"
"#
    )
    .expect("write");
    let path = file.path().to_str().expect("utf-8").to_owned();
    let s = load(&[("WEIR_CONFIG", &path)]).expect("loads");
    assert_eq!(s.schedules.len(), 1);
    assert_eq!(s.schedules[0].tz.name(), "Asia/Shanghai");
    assert_eq!(
        s.schedules[0].misfire,
        crate::schedule::Misfire::CatchUp {
            grace: Duration::from_secs(600)
        }
    );
    let w = &s.warmup["app_config"];
    assert_eq!(
        (w.ttl, w.batch, w.jitter),
        (Duration::from_secs(3600), 500, 0.1)
    );

    let mut bad = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        bad,
        r#"
[[schedules]]
name = "a"
cron = "*/10 * * *"
task = "weir.noop"

[[schedules]]
name = "b"
cron = "0 9 * * *"
tz = "Mars/Base"
task = "cache.warmup"
payload = {{ target = "nowhere" }}
misfire = "sometimes"
"#
    )
    .expect("write");
    let path = bad.path().to_str().expect("utf-8").to_owned();
    let text = load(&[("WEIR_CONFIG", &path)])
        .expect_err("bad")
        .to_string();
    for expected in [
        "schedules[0] (a).cron: `*/10 * * *` has 4 fields",
        "schedules[1] (b).tz: `Mars/Base` is not an IANA time zone",
        "schedules[1] (b).payload: target `nowhere` has no [warmup.nowhere] section",
        "schedules[1] (b).misfire: `sometimes` is neither `skip` nor `catch_up`",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn providers_and_mail_take_their_secrets_from_the_environment() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        file,
        r#"
[providers.openai]
base_url = "https://api.openai.com/"
keys_env = "OPENAI_API_KEYS"
rpm = 3000
cooldown = "30s"

[providers.local-llm]
base_url = "http://10.0.0.5:8000"
keys_env = "LOCAL_KEYS"

[mail]
url = "smtp://apikey:${{WEIR_SMTP_PASSWORD}}@smtp.example.com:587"
from = "Weir <noreply@example.com>"
"#
    )
    .expect("write");
    let path = file.path().to_str().expect("utf-8").to_owned();
    let s = load(&[
        ("WEIR_CONFIG", &path),
        ("OPENAI_API_KEYS", "sk-one-0000000001, sk-two-0000000002"),
        ("LOCAL_KEYS", "ignored"),
        ("WEIR_PROVIDER_LOCAL_LLM_KEYS", "local-key-000000009"),
        ("WEIR_SMTP_PASSWORD", "p@ss word"),
    ])
    .expect("loads");
    let openai = &s.providers["openai"];
    assert_eq!(openai.base_url, "https://api.openai.com");
    assert_eq!(openai.keys.len(), 2);
    assert_eq!(openai.keys[1].masked(), "...0002");
    assert_eq!((openai.rpm, openai.tpm), (Some(3000), None));
    assert_eq!(openai.cooldown, Duration::from_secs(30));
    assert_eq!(
        s.providers["local-llm"].keys[0].expose(),
        "local-key-000000009",
        "WEIR_PROVIDER_<NAME>_KEYS wins over keys_env"
    );
    let mail = s.mail.as_ref().expect("[mail]");
    assert!(mail.url.contains("p@ss word"));
    assert_eq!(mail.starttls, StartTls::Required);
    let shown = format!("{s:?}");
    for secret in ["sk-one-0000000001", "local-key-000000009", "p@ss word"] {
        assert!(!shown.contains(secret), "Debug shows {secret}");
    }

    let mut bad = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        bad,
        r#"
[providers.openai]
base_url = "api.openai.com"
rpm = 0

[mail]
url = "http://smtp.example.com:${{MISSING}}"
from = "nobody"
starttls = "always"
"#
    )
    .expect("write");
    let path = bad.path().to_str().expect("utf-8").to_owned();
    let problems = load(&[("WEIR_CONFIG", &path)])
        .expect_err("invalid")
        .problems;
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "providers.openai.base_url",
        "providers.openai.keys_env",
        "providers.openai.rpm",
        "mail.url",
        "mail.from",
        "mail.starttls",
    ] {
        assert!(keys.contains(&key), "{key} in {problems:?}");
    }
}
