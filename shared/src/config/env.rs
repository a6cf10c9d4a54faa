//! Loading: the file's sections first, then every variable of the table in
//! `vars.rs` (or its default), then the checks that span several settings.

use super::file::ConfigFile;
use super::{
    DEFAULT_QUEUES, HttpSettings, LogFormat, LogSettings, Problem, Settings, WorkerSettings,
    sections,
};
use crate::job::validate_queue_name;
use crate::limit::{Limits, Rate};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The environment as a lookup function (the process's, or a test's).
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Stands in until `WEIR_RATE_LIMIT_*` set the real rates.
const PLACEHOLDER_RATE: Rate = Rate {
    count: 1,
    period: Duration::from_secs(1),
};

/// Parses a duration such as `30s`, `10m`, `1h 30m` or `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 30s, 10m or 1h ({e})"))
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
        let settings = sections::task(&name, raw, problems);
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

    let limits = Limits::new(tasks.iter().map(|(n, t)| (n.clone(), t.limit)).collect());
    let warmup = sections::warmups(file.warmup, problems);
    let mut outbound = super::OutboundSettings::default();
    if let Some(hosts) = file.http.allow_hosts {
        outbound.allow_hosts = hosts;
    }
    if let Some(t) = &file.http.timeout {
        match super::parse_duration(t) {
            Ok(d) if !d.is_zero() => outbound.timeout = d,
            _ => problems.push(Problem {
                key: "http.timeout".into(),
                message: format!("`{t}` is not a duration above zero, e.g. \"30s\""),
            }),
        }
    }
    if let Some(n) = file.http.max_response_bytes {
        if n == 0 {
            problems.push(Problem {
                key: "http.max_response_bytes".into(),
                message: "must be at least 1".into(),
            });
        } else {
            outbound.max_response_bytes = n;
        }
    }
    let providers = super::outbound::providers(file.providers, env, problems);
    let mail = super::outbound::mail(file.mail, env, problems);
    let schedules =
        sections::schedules(file.schedules, &tasks, &declared_queues, &warmup, problems);
    // Every field below that has a default in the variables' table gets it
    // (or the variable's value) from `vars::apply`; these are placeholders.
    let broker = crate::broker::BrokerConfig::from_env(env, problems);
    let datasets = super::datasets::datasets(file.datasets, &broker, &providers, problems);
    let mut settings = Settings {
        broker,
        declared_queues,
        tasks,
        worker: WorkerSettings {
            queues: None,
            concurrency: 1,
            processes: 1,
            shutdown_timeout: Duration::ZERO,
            lease: Duration::ZERO,
            autoscale: false,
            max_workers: 1,
            min_workers: 1,
            max_tasks_per_child: 0,
            max_memory_per_child: None,
            sources: BTreeMap::new(),
        },
        http: HttpSettings {
            addr: ([127, 0, 0, 1], 0).into(),
            max_payload_bytes: 0,
            metrics_addr: None,
            header_timeout: Duration::ZERO,
            request_timeout: Duration::ZERO,
            max_connections: None,
            max_streams: 0,
            max_streams_per_key: 0,
            auth_failure_limit: PLACEHOLDER_RATE,
        },
        log: LogSettings {
            filter: String::new(),
            format: LogFormat::Pretty,
        },
        file: file_path,
        auth: super::auth::AuthSettings {
            disabled: false,
            keys: Vec::new(),
            keys_file: None,
            rate_limit_tenant: PLACEHOLDER_RATE,
            rate_limit_key: PLACEHOLDER_RATE,
        },
        limits,
        schedules,
        warmup,
        outbound,
        providers,
        mail,
        datasets,
    };
    super::vars::apply(&mut settings, env, problems);
    let w = &settings.worker;
    if w.min_workers > w.max_workers {
        problems.push(Problem {
            key: "WEIR_MIN_WORKERS".into(),
            message: format!(
                "the floor {} is above the ceiling WEIR_MAX_WORKERS={}",
                w.min_workers, w.max_workers
            ),
        });
    }
    settings
}
