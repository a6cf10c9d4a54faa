//! Every environment variable in one table: its name and Celery-era
//! aliases, the CLI flag that overrides it, its default, what it is for,
//! and the setter that parses it into [`Settings`]. Loading runs each
//! variable's value (or its default, through the same setter) and the CLI
//! overlays flags through the same setters ([`Settings::overlay`]), so a
//! default lives here and nowhere else. `docs/configuration.md` is
//! generated from this table and checked in CI (a unit test below).

use super::{LogFormat, Problem, Settings, auth, cpu_cores, parse_bytes, parse_duration};
use crate::limit::{Limits, TaskLimit, flow};
use crate::queue_order::QueueOrder;
use std::collections::BTreeMap;
use std::str::FromStr;

/// Parses a value into the settings; the error says what is wrong.
pub type Setter = fn(&mut Settings, &str) -> Result<(), String>;

/// One environment variable.
#[derive(Clone, Copy)]
pub struct Var {
    /// The variable.
    pub name: &'static str,
    /// Older names honoured when `name` is unset (Celery's, for Dify).
    pub aliases: &'static [&'static str],
    /// The `weir worker` / `weir api` flag that overrides it.
    pub flag: Option<&'static str>,
    /// The default as shown to people.
    pub default_text: &'static str,
    /// The default as a value for the setter; `None`: unset means "none".
    pub default: Option<fn() -> String>,
    /// When to change it.
    pub doc: &'static str,
    /// Its setter; `None` when another module reads it (named in `doc`).
    pub set: Option<Setter>,
    /// The worker setting whose source (`weir workers --json`) it records.
    pub source: Option<&'static str>,
}

fn number<T: FromStr>(v: &str, what: &str) -> Result<T, String> {
    v.trim().parse().map_err(|_| format!("`{v}` is not {what}"))
}

fn at_least_one(v: &str) -> Result<u32, String> {
    match number::<u32>(v, "a whole number")? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn positive_duration(v: &str) -> Result<std::time::Duration, String> {
    match parse_duration(v)? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

fn flag(v: &str, yes: &str, no: &str) -> Result<bool, String> {
    if v.eq_ignore_ascii_case(yes) || (yes == "true" && v == "1") {
        Ok(true)
    } else if v.eq_ignore_ascii_case(no) || (no == "false" && v == "0") {
        Ok(false)
    } else {
        Err(format!("`{v}` is neither `{yes}` nor `{no}`"))
    }
}

/// The messages of `problems` as one error (every one of them), if any.
fn all_of(problems: &[Problem]) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    Err(messages.join("; "))
}

/// Adds the API keys `parse` reads from `v` (both key variables add up).
fn add_keys(
    s: &mut Settings,
    v: &str,
    parse: fn(&str, &mut Vec<Problem>) -> Vec<auth::ApiKey>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let keys = parse(v, &mut problems);
    s.auth.keys.extend(keys);
    all_of(&problems)
}

/// Applies `NAME=V,...` task overrides to the limits in force.
fn task_limits(
    s: &mut Settings,
    v: &str,
    set: fn(&mut TaskLimit, &str) -> Result<(), String>,
) -> Result<(), String> {
    let mut all: BTreeMap<String, TaskLimit> =
        s.limits.iter().map(|(k, l)| (k.clone(), *l)).collect();
    for (task, value) in flow::parse_overrides(v, |v| Ok(v.to_owned()))? {
        set(all.entry(task.clone()).or_default(), &value).map_err(|e| format!("{task}: {e}"))?;
    }
    s.limits = Limits::new(all);
    Ok(())
}

const fn var(name: &'static str, default_text: &'static str, doc: &'static str) -> Var {
    Var {
        name,
        aliases: &[],
        flag: None,
        default_text,
        default: None,
        doc,
        set: None,
        source: None,
    }
}

/// The table, in the order the docs list it.
pub const VARS: &[Var] = &[
    var(
        "WEIR_CONFIG",
        "none",
        "a TOML file with `[queues]`, `[tasks]`, `[[schedules]]` and `[warmup]`; read before the variables, which win",
    ),
    var(
        "WEIR_BROKER_URL",
        "`sqlite://./weir-data/weir.db`",
        "to share a broker between processes or hosts: `redis://HOST:PORT/DB`; read with the backend's own variables below (`broker/config.rs`)",
    ),
    Var {
        flag: Some("-Q/--queues"),
        set: Some(|s, v| {
            let order = QueueOrder::parse(v)?;
            if let Some(q) = order
                .names()
                .find(|q| !s.declared_queues.iter().any(|d| d == q))
            {
                return Err(format!(
                    "queue `{q}` is not declared; declared queues: {}",
                    s.declared_queues.join(", ")
                ));
            }
            s.worker.queues = Some(order);
            Ok(())
        }),
        ..var(
            "WEIR_QUEUES",
            "all declared queues, strict order",
            "to dedicate a node to some queues, or weight them (`a=6,b=3`)",
        )
    },
    Var {
        aliases: &["CELERY_WORKER_AMOUNT"],
        flag: Some("-c/--concurrency"),
        default: Some(|| cpu_cores().to_string()),
        set: Some(|s, v| {
            s.worker.concurrency = at_least_one(v)?;
            Ok(())
        }),
        source: Some("concurrency"),
        ..var(
            "WEIR_CONCURRENCY",
            "CPU cores",
            "job slots of a node: I/O-bound jobs want many more slots than cores",
        )
    },
    Var {
        flag: Some("--processes"),
        default: Some(|| cpu_cores().to_string()),
        set: Some(|s, v| {
            s.worker.processes = at_least_one(v)?;
            Ok(())
        }),
        source: Some("processes"),
        ..var(
            "WEIR_PROCESSES",
            "CPU cores",
            "child processes the slots are spread over: fewer for async I/O work, more isolation for crash-prone handlers",
        )
    },
    Var {
        default: Some(|| "30s".into()),
        set: Some(|s, v| {
            s.worker.shutdown_timeout = parse_duration(v)?;
            Ok(())
        }),
        ..var(
            "WEIR_SHUTDOWN_TIMEOUT",
            "`30s`",
            "the longest job a deploy should wait for before jobs are handed back",
        )
    },
    Var {
        default: Some(|| "30s".into()),
        set: Some(|s, v| {
            let lease = parse_duration(v)?;
            if lease.as_millis() < 300 {
                return Err("must be at least 300ms so that renewals can keep up".into());
            }
            {
                s.worker.lease = lease;
                Ok(())
            }
        }),
        ..var(
            "WEIR_LEASE",
            "`30s`",
            "how soon a dead worker's jobs run again; renewed every third of it",
        )
    },
    Var {
        aliases: &["CELERY_AUTO_SCALE"],
        flag: Some("--autoscale MAX,MIN"),
        default: Some(|| "false".into()),
        set: Some(|s, v| {
            s.worker.autoscale = flag(v, "true", "false")?;
            Ok(())
        }),
        source: Some("autoscale"),
        ..var(
            "WEIR_AUTOSCALE",
            "off",
            "to move a node's slots between the floor and the ceiling with the backlog",
        )
    },
    Var {
        aliases: &["CELERY_MAX_WORKERS"],
        default: Some(|| cpu_cores().to_string()),
        set: Some(|s, v| {
            s.worker.max_workers = at_least_one(v)?;
            Ok(())
        }),
        source: Some("max_workers"),
        ..var("WEIR_MAX_WORKERS", "CPU cores", "the autoscale ceiling")
    },
    Var {
        aliases: &["CELERY_MIN_WORKERS"],
        default: Some(|| "1".into()),
        set: Some(|s, v| {
            s.worker.min_workers = at_least_one(v)?;
            Ok(())
        }),
        source: Some("min_workers"),
        ..var("WEIR_MIN_WORKERS", "`1`", "the autoscale floor")
    },
    Var {
        aliases: &["MAX_TASKS_PER_CHILD"],
        flag: Some("--max-tasks-per-child"),
        default: Some(|| "0".into()),
        set: Some(|s, v| {
            s.worker.max_tasks_per_child = number(v, "a whole number")?;
            Ok(())
        }),
        source: Some("max_tasks_per_child"),
        ..var(
            "WEIR_MAX_TASKS_PER_CHILD",
            "never",
            "to replace a child after this many tasks, for handlers that leak",
        )
    },
    Var {
        set: Some(|s, v| {
            s.worker.max_memory_per_child = Some(parse_bytes(v)?);
            Ok(())
        }),
        source: Some("max_memory_per_child"),
        ..var(
            "WEIR_MAX_MEMORY_PER_CHILD",
            "none",
            "to replace a child once its resident memory passes this size (`512MiB`)",
        )
    },
    Var {
        flag: Some("--addr"),
        default: Some(|| "127.0.0.1:8080".into()),
        set: Some(|s, v| {
            s.http.addr = v
                .trim()
                .parse()
                .map_err(|_| format!("`{v}` is not an address like 127.0.0.1:8080"))?;
            Ok(())
        }),
        ..var(
            "WEIR_HTTP_ADDR",
            "`127.0.0.1:8080`",
            "to listen beyond loopback",
        )
    },
    Var {
        set: Some(|s, v| {
            s.http.metrics_addr = Some(
                v.trim()
                    .parse()
                    .map_err(|_| format!("`{v}` is not an address like 0.0.0.0:9101"))?,
            );
            Ok(())
        }),
        ..var(
            "WEIR_METRICS_ADDR",
            "off",
            "where `weir worker` (its supervisor) and `weir scheduler` serve `/healthz`, `/readyz` and `/metrics` for probes and scrapes, e.g. `0.0.0.0:9101` (no key: keep it on a private interface)",
        )
    },
    Var {
        default: Some(|| super::DEFAULT_MAX_PAYLOAD_BYTES.to_string()),
        set: Some(|s, v| {
            let n: usize = number(v, "a number of bytes")?;
            if n == 0 || n > super::MAX_PAYLOAD_BYTES_LIMIT {
                return Err(format!(
                    "must be between 1 and {}",
                    super::MAX_PAYLOAD_BYTES_LIMIT
                ));
            }
            {
                s.http.max_payload_bytes = n;
                Ok(())
            }
        }),
        ..var(
            "WEIR_MAX_PAYLOAD_BYTES",
            "`1048576`",
            "larger request bodies, up to 16 MiB",
        )
    },
    Var {
        default: Some(|| "10s".into()),
        set: Some(|s, v| {
            s.http.header_timeout = positive_duration(v)?;
            Ok(())
        }),
        ..var(
            "WEIR_HTTP_HEADER_TIMEOUT",
            "`10s`",
            "how long a client may take to send its request headers, and how long an idle kept-alive connection stays open",
        )
    },
    Var {
        default: Some(|| "30s".into()),
        set: Some(|s, v| {
            s.http.request_timeout = positive_duration(v)?;
            Ok(())
        }),
        ..var(
            "WEIR_HTTP_REQUEST_TIMEOUT",
            "`30s`",
            "how long one request may take, reading its body included (408 beyond); an event stream's life is not counted",
        )
    },
    Var {
        set: Some(|s, v| {
            s.outbound.allow_hosts = v
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect();
            Ok(())
        }),
        ..var(
            "WEIR_HTTP_ALLOW_HOSTS",
            "none",
            "hosts (`name`, `10.0.0.5`, `*.internal.example`; comma-separated) that tasks' outbound calls (`http.request`) may reach although they are loopback, private or link-local; replaces `[http] allow_hosts`",
        )
    },
    Var {
        set: Some(|s, v| {
            s.http.max_connections = Some(at_least_one(v)? as usize);
            Ok(())
        }),
        ..var(
            "WEIR_HTTP_MAX_CONNECTIONS",
            "three quarters of the open-file limit, at most 10000",
            "connections served at once; a connection beyond it is answered 503 and closed",
        )
    },
    Var {
        default: Some(|| "10000".into()),
        set: Some(|s, v| {
            s.http.max_streams = at_least_one(v)? as usize;
            Ok(())
        }),
        ..var(
            "WEIR_HTTP_MAX_STREAMS",
            "`10000`",
            "`/events` streams open at once in one API process (429 beyond)",
        )
    },
    Var {
        default: Some(|| "100".into()),
        set: Some(|s, v| {
            s.http.max_streams_per_key = at_least_one(v)? as usize;
            Ok(())
        }),
        ..var(
            "WEIR_HTTP_MAX_STREAMS_PER_KEY",
            "`100`",
            "`/events` streams open at once per API key (per client address without keys; 429 beyond)",
        )
    },
    Var {
        default: Some(|| "20/m".into()),
        set: Some(|s, v| {
            s.http.auth_failure_limit = v.parse()?;
            Ok(())
        }),
        ..var(
            "WEIR_AUTH_FAILURE_LIMIT",
            "`20/m`",
            "failed authentications per client address before it is answered 429 (in each API process)",
        )
    },
    Var {
        default: Some(|| "info".into()),
        set: Some(|s, v| {
            s.log.filter = v.to_owned();
            Ok(())
        }),
        ..var(
            "WEIR_LOG",
            "`info`",
            "a tracing filter, e.g. `weir_worker=debug`",
        )
    },
    Var {
        default: Some(|| "pretty".into()),
        set: Some(|s, v| {
            s.log.format = if flag(v, "json", "pretty")? {
                LogFormat::Json
            } else {
                LogFormat::Pretty
            };
            Ok(())
        }),
        ..var("WEIR_LOG_FORMAT", "`pretty`", "`json` for log shippers")
    },
    Var {
        default: Some(|| "enabled".into()),
        set: Some(|s, v| {
            s.auth.disabled = !flag(v, "enabled", "disabled")?;
            Ok(())
        }),
        ..var(
            "WEIR_AUTH",
            "`enabled` (keys required)",
            "`disabled` to serve without keys on a trusted network",
        )
    },
    Var {
        set: Some(|s, v| add_keys(s, v, auth::parse_env_keys)),
        ..var(
            "WEIR_API_KEYS",
            "none",
            "`TENANT:KEY[:admin]`, comma-separated",
        )
    },
    Var {
        set: Some(|s, v| {
            s.auth.keys_file = Some(v.trim().to_owned()).filter(|p| !p.is_empty());
            Ok(())
        }),
        ..var(
            "WEIR_API_KEYS_FILE",
            "none",
            "a file of `TENANT:SHA256[:admin]` lines (`weir keys create` prints them); read by `weir api` and `weir dev` only",
        )
    },
    Var {
        default: Some(|| "1000/m".into()),
        set: Some(|s, v| {
            s.auth.rate_limit_tenant = v.parse()?;
            Ok(())
        }),
        ..var(
            "WEIR_RATE_LIMIT_TENANT",
            "`1000/m`",
            "each tenant's API budget",
        )
    },
    Var {
        default: Some(|| "100/s".into()),
        set: Some(|s, v| {
            s.auth.rate_limit_key = v.parse()?;
            Ok(())
        }),
        ..var("WEIR_RATE_LIMIT_KEY", "`100/s`", "each API key's budget")
    },
    Var {
        set: Some(|s, v| {
            task_limits(s, v, |l, v| {
                l.concurrency = Some(number(v, "a whole number")?);
                Ok(())
            })
        }),
        ..var(
            "WEIR_CONCURRENCY_LIMITS",
            "none",
            "global caps per task, `document.index=5,mail.send=2`; wins over `[tasks]`",
        )
    },
    Var {
        set: Some(|s, v| {
            task_limits(s, v, |l, v| {
                l.tenant_concurrency = Some(number(v, "a whole number")?);
                Ok(())
            })
        }),
        ..var(
            "WEIR_TENANT_CONCURRENCY_LIMITS",
            "none",
            "caps per tenant within a task, same form",
        )
    },
    Var {
        set: Some(|s, v| {
            task_limits(s, v, |l, v| {
                l.rate = Some(flow::parse_task_rate(v)?);
                Ok(())
            })
        }),
        ..var(
            "WEIR_RATE_LIMITS",
            "none",
            "task start rates, `mail.send=10/s:5` (rate, optional burst)",
        )
    },
];

/// The value of `var`: the variable, else its first alias set (not
/// empty), with the name it came from.
fn lookup(env: super::env::Env<'_>, var: &Var) -> Option<(&'static str, String)> {
    std::iter::once(var.name)
        .chain(var.aliases.iter().copied())
        .find_map(|k| env(k).filter(|v| !v.trim().is_empty()).map(|v| (k, v)))
}

/// Runs every variable's value, or its default, through its setter.
pub(super) fn apply(
    settings: &mut Settings,
    env: super::env::Env<'_>,
    problems: &mut Vec<Problem>,
) {
    for var in VARS {
        let Some(set) = var.set else { continue };
        let (from, value) = match lookup(env, var) {
            Some((name, value)) => (name.to_owned(), Some(value)),
            None => (
                format!("default ({})", var.default_text.replace('`', "")),
                var.default.map(|d| d()),
            ),
        };
        let Some(value) = value else {
            if let Some(field) = var.source {
                settings.worker.sources.insert(field.into(), from);
            }
            continue;
        };
        match set(settings, value.trim()) {
            Ok(()) => {
                if let Some(field) = var.source {
                    settings.worker.sources.insert(field.into(), from);
                }
            }
            Err(message) => problems.push(Problem {
                key: if from.starts_with("default") {
                    var.name.into()
                } else {
                    from
                },
                message,
            }),
        }
    }
}

impl Settings {
    /// Overrides the setting of variable `name` with a command-line flag's
    /// value, through the variable's own setter (the same parsing and
    /// checks as the environment), and records `flag` as its source.
    pub fn overlay(&mut self, name: &str, value: &str, flag: &str) -> Result<(), String> {
        let var = VARS
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| format!("{name} is not a setting"))?;
        let set = var
            .set
            .ok_or_else(|| format!("{name} cannot be set by a flag"))?;
        set(self, value.trim()).map_err(|e| format!("{flag}: {e}"))?;
        if let Some(field) = var.source {
            self.worker.sources.insert(field.into(), flag.into());
        }
        Ok(())
    }
}

/// `docs/configuration.md`: the table as Markdown, with the backends'
/// own variables after it.
pub fn docs() -> String {
    let mut out = String::from(
        "# Configuration\n\n\
         Generated from `shared/src/config/vars.rs`; a test fails when it is not current \
         (`WEIR_WRITE_DOCS=1 cargo test -p weir-shared --lib config` rewrites it). Settings come from defaults, then the TOML file named by `WEIR_CONFIG`, then \
         these variables, then the command's flags. Every problem is reported at once, naming \
         its variable, before anything starts.\n\n\
         | variable | also read | flag | default | when to change it |\n\
         |---|---|---|---|---|\n",
    );
    let row =
        |out: &mut String, name: &str, aliases: &str, flag: &str, default: &str, doc: &str| {
            out.push_str(&format!(
                "| `{name}` | {aliases} | {flag} | {default} | {doc} |\n"
            ));
        };
    for v in VARS {
        let aliases: Vec<String> = v.aliases.iter().map(|a| format!("`{a}`")).collect();
        let flag = v.flag.map(|f| format!("`{f}`")).unwrap_or_default();
        row(
            &mut out,
            v.name,
            &aliases.join(", "),
            &flag,
            v.default_text,
            v.doc,
        );
    }
    out.push_str("\n## Broker backends\n\nEach backend reads its own variables when `WEIR_BROKER_URL` chooses it.\n\n| backend | variable | default | when to change it |\n|---|---|---|---|\n");
    for (backend, vars) in crate::broker::config::BACKEND_VARS {
        for (name, default, doc) in *vars {
            out.push_str(&format!("| {backend} | `{name}` | {default} | {doc} |\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_overlay_through_the_variables_setters() {
        let mut s = Settings::load(&|_| None).expect("defaults load");
        s.overlay("WEIR_CONCURRENCY", "64", "-c/--concurrency")
            .expect("valid");
        assert_eq!(s.worker.concurrency, 64);
        assert_eq!(s.worker.sources["concurrency"], "-c/--concurrency");
        let e = s
            .overlay("WEIR_CONCURRENCY", "0", "-c/--concurrency")
            .expect_err("zero slots");
        assert_eq!(e, "-c/--concurrency: must be at least 1");
        let e = s
            .overlay("WEIR_QUEUES", "nope", "-Q")
            .expect_err("undeclared");
        assert!(e.starts_with("-Q: queue `nope` is not declared"), "{e}");
    }

    #[test]
    fn every_variable_is_listed_once_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for v in VARS {
            for name in std::iter::once(v.name).chain(v.aliases.iter().copied()) {
                assert!(seen.insert(name), "{name} is listed twice");
            }
            assert!(!v.doc.is_empty(), "{} has no doc", v.name);
            if let (Some(set), Some(default)) = (v.set, v.default) {
                let mut s = Settings::load(&|_| None).expect("defaults load");
                assert_eq!(
                    set(&mut s, &default()),
                    Ok(()),
                    "{}: its default parses",
                    v.name
                );
            }
        }
    }

    /// `docs/configuration.md` is this table; `WEIR_WRITE_DOCS=1` rewrites it.
    #[test]
    fn the_committed_docs_are_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        if std::env::var("WEIR_WRITE_DOCS").is_ok_and(|v| v == "1") {
            std::fs::write(path, docs()).expect("write docs/configuration.md");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == docs(),
            "docs/configuration.md is stale: run `WEIR_WRITE_DOCS=1 cargo test -p weir-shared --lib config` and commit it"
        );
    }
}
