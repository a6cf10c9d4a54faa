//! The file's sections (`[tasks]`, `[warmup]`, `[[schedules]]`) checked
//! field by field, each problem named by its file key.

use super::file::TaskFile;
use super::{Problem, TaskSettings, parse_duration};
use crate::job::{MAX_RETRIES_LIMIT, validate_queue_name};
use crate::limit::{TaskLimit, flow};
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) fn task(name: &str, raw: TaskFile, problems: &mut Vec<Problem>) -> TaskSettings {
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
    match (raw.url, raw.runner.as_deref()) {
        (None, None) => {}
        (Some(url), None) => match url::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                settings.body = super::TaskBody::Http(url);
            }
            _ => problems.push(Problem {
                key: key("url"),
                message: format!("`{url}` is not an http(s) URL"),
            }),
        },
        (None, Some("python")) => settings.body = super::TaskBody::Python,
        (None, Some(other)) => problems.push(Problem {
            key: key("runner"),
            message: format!("`{other}` is not a runner weir has: use \"python\""),
        }),
        (Some(_), Some(_)) => problems.push(Problem {
            key: key("url"),
            message: "give a task either `url` or `runner`, not both".into(),
        }),
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

pub(super) fn warmups(
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

pub(super) fn schedules(
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
