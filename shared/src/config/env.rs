//! The environment layer: each `WEIR_*` variable (or its Celery-era alias)
//! overrides the file, and every bad value becomes a [`Problem`] named by
//! its variable.

use super::file::{ConfigFile, TaskFile};
use super::{
    DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_QUEUES, HttpSettings, LogFormat, LogSettings,
    MAX_PAYLOAD_BYTES_LIMIT, Problem, Settings, TaskSettings, WorkerSettings, cpu_cores,
};
use crate::job::{MAX_RETRIES_LIMIT, validate_queue_name};
use crate::limit::{Limits, TaskLimit, flow};
use crate::queue_order::QueueOrder;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The first of `keys` that is set (and not empty), with its name.
fn lookup(env: Env<'_>, keys: &[&'static str]) -> Option<(&'static str, String)> {
    keys.iter()
        .find_map(|k| env(k).filter(|v| !v.trim().is_empty()).map(|v| (*k, v)))
}

fn parsed<T: FromStr>(
    env: Env<'_>,
    keys: &[&'static str],
    what: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let (key, value) = lookup(env, keys)?;
    match value.trim().parse() {
        Ok(v) => Some(v),
        Err(_) => {
            problems.push(Problem {
                key: key.into(),
                message: format!("`{value}` is not {what}"),
            });
            None
        }
    }
}

/// Parses a duration such as `30s`, `10m`, `1h 30m` or `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 30s, 10m or 1h ({e})"))
}

fn duration(
    env: Env<'_>,
    key: &'static str,
    default: Duration,
    problems: &mut Vec<Problem>,
) -> Duration {
    match lookup(env, &[key]) {
        None => default,
        Some((key, value)) => parse_duration(&value).unwrap_or_else(|message| {
            problems.push(Problem {
                key: key.into(),
                message,
            });
            default
        }),
    }
}

fn positive(env: Env<'_>, keys: &[&'static str], default: u32, problems: &mut Vec<Problem>) -> u32 {
    match parsed::<u32>(env, keys, "a whole number", problems) {
        Some(0) => {
            problems.push(Problem {
                key: keys[0].into(),
                message: "must be at least 1".into(),
            });
            default
        }
        Some(n) => n,
        None => default,
    }
}

fn task(name: &str, raw: TaskFile, problems: &mut Vec<Problem>) -> TaskSettings {
    let key = |field: &str| format!("tasks.\"{name}\".{field}");
    let mut settings = TaskSettings::default();
    if let Some(queue) = raw.queue {
        if let Err(message) = validate_queue_name(&queue) {
            problems.push(Problem {
                key: key("queue"),
                message,
            });
        }
        settings.queue = Some(queue);
    }
    if let Some(n) = raw.max_retries {
        if n > MAX_RETRIES_LIMIT {
            problems.push(Problem {
                key: key("max_retries"),
                message: format!("{n} is more than the limit of {MAX_RETRIES_LIMIT}"),
            });
        }
        settings.max_retries = Some(n);
    }
    if let Some(text) = raw.retry_delay {
        match parse_duration(&text) {
            Ok(d) => settings.retry_delay = d,
            Err(message) => problems.push(Problem {
                key: key("retry_delay"),
                message,
            }),
        }
    }
    if let Some(b) = raw.retry_backoff {
        settings.retry_backoff = b;
    }
    if let Some(text) = raw.timeout {
        match parse_duration(&text) {
            Ok(d) if d.is_zero() => problems.push(Problem {
                key: key("timeout"),
                message: "must be longer than zero".into(),
            }),
            Ok(d) => settings.timeout = Some(d),
            Err(message) => problems.push(Problem {
                key: key("timeout"),
                message,
            }),
        }
    }
    let mut limit = TaskLimit {
        concurrency: raw.concurrency_limit,
        tenant_concurrency: raw.tenant_concurrency_limit,
        rate: None,
    };
    if let Some(text) = raw.rate_limit {
        match flow::parse_task_rate(&text) {
            Ok(mut rate) => {
                if let Some(burst) = raw.rate_burst {
                    if burst == 0 {
                        problems.push(Problem {
                            key: key("rate_burst"),
                            message: "must be at least 1".into(),
                        });
                    }
                    rate.burst = burst.max(1);
                }
                limit.rate = Some(rate);
            }
            Err(message) => problems.push(Problem {
                key: key("rate_limit"),
                message,
            }),
        }
    } else if raw.rate_burst.is_some() {
        problems.push(Problem {
            key: key("rate_burst"),
            message: "has no effect without rate_limit".into(),
        });
    }
    settings.limit = limit;
    settings
}

pub(super) fn apply(
    file: ConfigFile,
    file_path: Option<PathBuf>,
    env: Env<'_>,
    problems: &mut Vec<Problem>,
) -> Settings {
    let declared_queues: Vec<String> = match file.queues.declared {
        Some(list) => {
            for q in &list {
                if let Err(message) = validate_queue_name(q) {
                    problems.push(Problem {
                        key: "queues.declared".into(),
                        message,
                    });
                }
            }
            if list.is_empty() {
                problems.push(Problem {
                    key: "queues.declared".into(),
                    message: "declares no queue; list at least one".into(),
                });
            }
            list
        }
        None => DEFAULT_QUEUES.iter().map(|q| q.to_string()).collect(),
    };

    let mut tasks = BTreeMap::new();
    for (name, raw) in file.tasks {
        let settings = task(&name, raw, problems);
        if let Some(q) = &settings.queue
            && !declared_queues.contains(q)
        {
            problems.push(Problem {
                key: format!("tasks.\"{name}\".queue"),
                message: format!("queue `{q}` is not declared in [queues].declared"),
            });
        }
        tasks.insert(name, settings);
    }

    let queues =
        lookup(env, &["WEIR_QUEUES"]).and_then(|(key, value)| match QueueOrder::parse(&value) {
            Ok(order) => {
                for q in order.names() {
                    if !declared_queues.iter().any(|d| d == q) {
                        problems.push(Problem {
                            key: key.into(),
                            message: format!("queue `{q}` is not declared"),
                        });
                    }
                }
                Some(order)
            }
            Err(message) => {
                problems.push(Problem {
                    key: key.into(),
                    message,
                });
                None
            }
        });

    let cores = cpu_cores();
    let mut sources = BTreeMap::new();
    let mut source = |name: &str, keys: &[&'static str], default: &str| {
        let from = lookup(env, keys)
            .map(|(k, _)| k.to_owned())
            .unwrap_or_else(|| default.to_owned());
        sources.insert(name.to_owned(), from);
    };
    source(
        "concurrency",
        &["WEIR_CONCURRENCY", "CELERY_WORKER_AMOUNT"],
        "default (CPU cores)",
    );
    source("processes", &["WEIR_PROCESSES"], "default (CPU cores)");
    source(
        "max_tasks_per_child",
        &["WEIR_MAX_TASKS_PER_CHILD", "MAX_TASKS_PER_CHILD"],
        "default (never)",
    );
    source(
        "max_memory_per_child",
        &["WEIR_MAX_MEMORY_PER_CHILD"],
        "default (none)",
    );
    let max_tasks_per_child = parsed::<u64>(
        env,
        &["WEIR_MAX_TASKS_PER_CHILD", "MAX_TASKS_PER_CHILD"],
        "a whole number",
        problems,
    )
    .unwrap_or(0);
    let max_memory_per_child = lookup(env, &["WEIR_MAX_MEMORY_PER_CHILD"]).and_then(|(key, v)| {
        super::parse_bytes(&v)
            .map_err(|message| {
                problems.push(Problem {
                    key: key.into(),
                    message,
                })
            })
            .ok()
    });
    source(
        "autoscale",
        &["WEIR_AUTOSCALE", "CELERY_AUTO_SCALE"],
        "default (off)",
    );
    source(
        "max_workers",
        &["WEIR_MAX_WORKERS", "CELERY_MAX_WORKERS"],
        "default (CPU cores)",
    );
    source(
        "min_workers",
        &["WEIR_MIN_WORKERS", "CELERY_MIN_WORKERS"],
        "default (1)",
    );
    let autoscale = match lookup(env, &["WEIR_AUTOSCALE", "CELERY_AUTO_SCALE"]) {
        None => false,
        Some((_, v)) if v.eq_ignore_ascii_case("true") || v == "1" => true,
        Some((_, v)) if v.eq_ignore_ascii_case("false") || v == "0" => false,
        Some((key, v)) => {
            problems.push(Problem {
                key: key.into(),
                message: format!("`{v}` is neither true nor false"),
            });
            false
        }
    };
    let max_workers = positive(
        env,
        &["WEIR_MAX_WORKERS", "CELERY_MAX_WORKERS"],
        cores,
        problems,
    );
    let min_workers = positive(
        env,
        &["WEIR_MIN_WORKERS", "CELERY_MIN_WORKERS"],
        1,
        problems,
    );
    if min_workers > max_workers {
        problems.push(Problem {
            key: "WEIR_MIN_WORKERS".into(),
            message: format!(
                "the floor {min_workers} is above the ceiling WEIR_MAX_WORKERS={max_workers}"
            ),
        });
    }
    let worker = WorkerSettings {
        queues,
        concurrency: positive(
            env,
            &["WEIR_CONCURRENCY", "CELERY_WORKER_AMOUNT"],
            cores,
            problems,
        ),
        processes: positive(env, &["WEIR_PROCESSES"], cores, problems),
        shutdown_timeout: duration(
            env,
            "WEIR_SHUTDOWN_TIMEOUT",
            Duration::from_secs(30),
            problems,
        ),
        lease: duration(env, "WEIR_LEASE", Duration::from_secs(30), problems),
        autoscale,
        max_workers,
        min_workers,
        max_tasks_per_child,
        max_memory_per_child,
        sources,
    };
    if worker.lease < Duration::from_millis(300) {
        problems.push(Problem {
            key: "WEIR_LEASE".into(),
            message: "must be at least 300ms so that renewals can keep up".into(),
        });
    }

    let addr = match lookup(env, &["WEIR_HTTP_ADDR"]) {
        None => ([127, 0, 0, 1], 8080).into(),
        Some((key, value)) => value.trim().parse().unwrap_or_else(|_| {
            problems.push(Problem {
                key: key.into(),
                message: format!("`{value}` is not an address like 127.0.0.1:8080"),
            });
            ([127, 0, 0, 1], 8080).into()
        }),
    };
    let max_payload_bytes = parsed::<usize>(
        env,
        &["WEIR_MAX_PAYLOAD_BYTES"],
        "a number of bytes",
        problems,
    )
    .unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES);
    if max_payload_bytes == 0 || max_payload_bytes > MAX_PAYLOAD_BYTES_LIMIT {
        problems.push(Problem {
            key: "WEIR_MAX_PAYLOAD_BYTES".into(),
            message: format!("must be between 1 and {MAX_PAYLOAD_BYTES_LIMIT}"),
        });
    }

    let format = match lookup(env, &["WEIR_LOG_FORMAT"]) {
        None => LogFormat::Pretty,
        Some((_, v)) if v.eq_ignore_ascii_case("pretty") => LogFormat::Pretty,
        Some((_, v)) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
        Some((key, v)) => {
            problems.push(Problem {
                key: key.into(),
                message: format!("`{v}` is neither `pretty` nor `json`"),
            });
            LogFormat::Pretty
        }
    };

    let auth_disabled = match lookup(env, &["WEIR_AUTH"]) {
        None => false,
        Some((_, v)) if v == "disabled" => true,
        Some((_, v)) if v == "enabled" => false,
        Some((key, v)) => {
            problems.push(Problem {
                key: key.into(),
                message: format!("`{v}` is neither `enabled` nor `disabled`"),
            });
            false
        }
    };
    let mut keys = lookup(env, &["WEIR_API_KEYS"])
        .map(|(_, v)| super::auth::parse_env_keys(&v, problems))
        .unwrap_or_default();
    if let Some((_, path)) = lookup(env, &["WEIR_API_KEYS_FILE"]) {
        keys.extend(super::auth::parse_key_file(&path, problems));
    }
    let rate = |key: &'static str, default: &str, problems: &mut Vec<Problem>| {
        let fallback = default.parse().unwrap_or(crate::limit::Rate {
            count: 1,
            period: Duration::from_secs(1),
        });
        match lookup(env, &[key]) {
            None => fallback,
            Some((key, v)) => v.parse().unwrap_or_else(|message| {
                problems.push(Problem {
                    key: key.into(),
                    message,
                });
                fallback
            }),
        }
    };
    let auth = super::auth::AuthSettings {
        disabled: auth_disabled,
        keys,
        rate_limit_tenant: rate("WEIR_RATE_LIMIT_TENANT", "1000/m", problems),
        rate_limit_key: rate("WEIR_RATE_LIMIT_KEY", "100/s", problems),
    };

    let limits = limits(&tasks, env, problems);
    let warmup = warmups(file.warmup, problems);
    let schedules = schedules(file.schedules, &tasks, &declared_queues, &warmup, problems);

    Settings {
        auth,
        limits,
        schedules,
        warmup,
        broker: crate::broker::BrokerConfig::from_env(env, problems),
        declared_queues,
        tasks,
        worker,
        http: HttpSettings {
            addr,
            max_payload_bytes,
        },
        log: LogSettings {
            filter: lookup(env, &["WEIR_LOG"])
                .map(|(_, v)| v)
                .unwrap_or_else(|| "info".into()),
            format,
        },
        file: file_path,
    }
}

/// The task limits in force: each task's file settings, then the operator's
/// overrides from the environment, which win.
fn limits(
    tasks: &BTreeMap<String, TaskSettings>,
    env: Env<'_>,
    problems: &mut Vec<Problem>,
) -> Limits {
    let mut all: BTreeMap<String, TaskLimit> = tasks
        .iter()
        .map(|(name, t)| (name.clone(), t.limit))
        .collect();
    let cap = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| format!("`{v}` is not a whole number"))
    };
    let mut apply = |key: &'static str,
                     set: &dyn Fn(&mut TaskLimit, &str) -> Result<(), String>| {
        let Some((key, value)) = lookup(env, &[key]) else {
            return;
        };
        let parsed = flow::parse_overrides(&value, |v| Ok(v.to_owned())).and_then(|pairs| {
            for (task, v) in pairs {
                set(all.entry(task.clone()).or_default(), &v)
                    .map_err(|e| format!("{task}: {e}"))?;
            }
            Ok(())
        });
        if let Err(message) = parsed {
            problems.push(Problem {
                key: key.into(),
                message,
            });
        }
    };
    apply("WEIR_CONCURRENCY_LIMITS", &|l, v| {
        l.concurrency = Some(cap(v)?);
        Ok(())
    });
    apply("WEIR_TENANT_CONCURRENCY_LIMITS", &|l, v| {
        l.tenant_concurrency = Some(cap(v)?);
        Ok(())
    });
    apply("WEIR_RATE_LIMITS", &|l, v| {
        l.rate = Some(flow::parse_task_rate(v)?);
        Ok(())
    });
    Limits::new(all)
}

fn warmups(
    raw: BTreeMap<String, super::file::WarmupFile>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, super::WarmupTarget> {
    let mut out = BTreeMap::new();
    for (name, w) in raw {
        let key = |field: &str| format!("warmup.{name}.{field}");
        if !(w.database_url.starts_with("postgres://")
            || w.database_url.starts_with("postgresql://")
            || w.database_url.starts_with("sqlite://"))
        {
            problems.push(Problem {
                key: key("database_url"),
                message: "must be a postgres:// or sqlite:// URL".into(),
            });
        }
        if let Some(url) = &w.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            problems.push(Problem {
                key: key("redis_url"),
                message: "must be a redis:// URL".into(),
            });
        }
        if w.query.trim().is_empty() {
            problems.push(Problem {
                key: key("query"),
                message: "is empty".into(),
            });
        }
        if !w.key.contains('{') {
            problems.push(Problem {
                key: key("key"),
                message: format!(
                    "`{}` names no column: every row would write the same key; use a template such as `app_config:{{id}}`",
                    w.key
                ),
            });
        }
        let ttl = match parse_duration(&w.ttl) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                problems.push(Problem {
                    key: key("ttl"),
                    message: "must be longer than zero".into(),
                });
                Duration::from_secs(1)
            }
            Err(message) => {
                problems.push(Problem {
                    key: key("ttl"),
                    message,
                });
                Duration::from_secs(1)
            }
        };
        let jitter = w.jitter.unwrap_or(0.1);
        if !(0.0..=1.0).contains(&jitter) {
            problems.push(Problem {
                key: key("jitter"),
                message: "must be a fraction from 0 to 1".into(),
            });
        }
        let batch = w.batch.unwrap_or(500);
        if batch == 0 {
            problems.push(Problem {
                key: key("batch"),
                message: "must be at least 1".into(),
            });
        }
        out.insert(
            name,
            super::WarmupTarget {
                database_url: w.database_url,
                redis_url: w.redis_url,
                query: w.query,
                key: w.key,
                ttl,
                jitter: jitter.clamp(0.0, 1.0),
                batch: batch.max(1),
            },
        );
    }
    out
}

fn schedules(
    raw: Vec<super::file::ScheduleFile>,
    tasks: &BTreeMap<String, TaskSettings>,
    declared: &[String],
    warmup: &BTreeMap<String, super::WarmupTarget>,
    problems: &mut Vec<Problem>,
) -> Vec<crate::schedule::Schedule> {
    use crate::schedule::{Misfire, Schedule, ScheduleSpec};
    let mut out: Vec<Schedule> = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("schedules[{i}] ({}).{field}", s.name);
        let mut problem = |field: &str, message: String| {
            problems.push(Problem {
                key: key(field),
                message,
            })
        };
        if s.name.trim().is_empty() || s.name.len() > 100 {
            problem("name", "must be 1-100 characters".into());
        }
        if out.iter().any(|o| o.name == s.name) {
            problem(
                "name",
                "is used by an earlier schedule; names must be unique".into(),
            );
        }
        if !(super::BUILTIN_TASKS.contains(&s.task.as_str()) || tasks.contains_key(&s.task)) {
            problem(
                "task",
                format!(
                    "unknown task `{}`: built in or configured under [tasks]",
                    s.task
                ),
            );
        }
        if let Some(q) = &s.queue
            && !declared.contains(q)
        {
            problem("queue", format!("queue `{q}` is not declared"));
        }
        let priority = s.priority.unwrap_or(5);
        if !(0..=9).contains(&priority) {
            problem("priority", "must be 0 to 9".into());
        }
        let payload = match s.payload.map(serde_json::to_value).transpose() {
            Ok(p) => p.unwrap_or(serde_json::Value::Object(serde_json::Map::new())),
            Err(e) => {
                problem("payload", format!("cannot be JSON: {e}"));
                serde_json::Value::Null
            }
        };
        if s.task == "cache.warmup" {
            match payload.get("target").and_then(|t| t.as_str()) {
                Some(t) if warmup.contains_key(t) => {}
                Some(t) => problem(
                    "payload",
                    format!("target `{t}` has no [warmup.{t}] section"),
                ),
                None => problem("payload", "cache.warmup needs {target = \"NAME\"}".into()),
            }
        }
        let grace = s.grace.as_deref().map(parse_duration).transpose();
        let misfire = match (s.misfire.as_deref().unwrap_or("skip"), grace) {
            (_, Err(message)) => {
                problem("grace", message);
                Misfire::Skip
            }
            ("skip", Ok(None)) => Misfire::Skip,
            ("skip", Ok(Some(_))) => {
                problem("grace", "applies only with misfire = \"catch_up\"".into());
                Misfire::Skip
            }
            ("catch_up", Ok(grace)) => Misfire::CatchUp {
                grace: grace.unwrap_or(Duration::from_secs(3600)),
            },
            (other, _) => {
                problem(
                    "misfire",
                    format!("`{other}` is neither `skip` nor `catch_up`"),
                );
                Misfire::Skip
            }
        };
        match Schedule::new(ScheduleSpec {
            name: &s.name,
            cron: &s.cron,
            tz: s.tz.as_deref(),
            task: &s.task,
            queue: s.queue.clone(),
            payload,
            priority: u8::try_from(priority.clamp(0, 9)).unwrap_or(5),
            misfire,
        }) {
            Ok(schedule) => out.push(schedule),
            Err(message) => {
                let field = if message.contains("time zone") {
                    "tz"
                } else {
                    "cron"
                };
                problem(field, message);
            }
        }
    }
    out
}
