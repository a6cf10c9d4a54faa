//! Inspection and steering straight on the broker (no API needed):
//! `weir queues`, `weir jobs`, `weir workers`.

use crate::args::{JobAction, JobsArgs, JsonFlag, QueueAction, QueuesArgs};
use crate::failure::{Failure, Outcome};
use crate::output;
use serde_json::json;
use std::str::FromStr;
use weir_shared::broker::{ListRequest, Scope};
use weir_shared::config::Settings;
use weir_shared::inspect::queue_views;
use weir_shared::job::{Job, JobId, JobState, now_ms};

fn job_id(text: &str) -> Result<JobId, Failure> {
    JobId::from_str(text).map_err(|_| {
        Failure::usage(format!(
            "`{text}` is not a job id (a UUID such as 0193b2e4-...)"
        ))
    })
}

fn time(t: Option<weir_shared::job::Millis>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
}

/// `weir queues [pause|resume|purge]`.
pub async fn queues(settings: Settings, args: QueuesArgs) -> Outcome {
    if let Some(QueueAction::Purge { queue, yes: false }) = &args.action {
        return Err(Failure::usage(format!(
            "purging deletes every waiting job of `{queue}` for good; run `weir queues purge {queue} --yes` to confirm"
        )));
    }
    let broker = super::connect(&settings).await?;
    let known = |q: &str| settings.declared_queues.iter().any(|d| d == q);
    match args.action {
        None => {
            let views = queue_views(&broker, &settings).await?;
            let retention = settings.broker.retention();
            if args.output.json {
                output::json(&json!({"data": views, "retention": retention.to_json()}));
                return Ok(());
            }
            let mut header = vec!["QUEUE", "PAUSED", "CONSUMERS"];
            header.extend(JobState::ALL.iter().map(|s| s.as_str()));
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|q| {
                    let mut row = vec![
                        q.name.clone(),
                        if q.paused { "yes".into() } else { "no".into() },
                        if q.unconsumed {
                            "0 (NO CONSUMER)".into()
                        } else {
                            q.consumers.to_string()
                        },
                    ];
                    row.extend(
                        JobState::ALL
                            .iter()
                            .map(|s| q.counts.get(s).copied().unwrap_or(0).to_string()),
                    );
                    row
                })
                .collect();
            let upper: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
            output::table(&upper.iter().map(String::as_str).collect::<Vec<_>>(), &rows);
            println!("finished jobs are kept: {retention}");
            for q in views.iter().filter(|q| q.unconsumed) {
                eprintln!(
                    "warning: {} has {} queued jobs and no live worker serving it (start one with `weir worker -Q {}`)",
                    q.name,
                    q.counts.get(&JobState::Queued).copied().unwrap_or(0),
                    q.name
                );
            }
        }
        Some(QueueAction::Pause { queue }) | Some(QueueAction::Resume { queue })
            if !known(&queue) =>
        {
            return Err(Failure::usage(format!(
                "unknown queue `{queue}`; declared queues: {}",
                settings.declared_queues.join(", ")
            )));
        }
        Some(QueueAction::Pause { queue }) => {
            broker.set_paused(&queue, true).await?;
            report(args.output, &queue, "paused");
        }
        Some(QueueAction::Resume { queue }) => {
            broker.set_paused(&queue, false).await?;
            report(args.output, &queue, "resumed");
        }
        Some(QueueAction::Purge { queue, yes }) => {
            if !yes {
                return Err(Failure::usage(format!(
                    "purging deletes every waiting job of `{queue}` for good; run `weir queues purge {queue} --yes` to confirm"
                )));
            }
            let deleted = broker.purge(&queue).await?;
            if args.output.json {
                output::json(&json!({"queue": queue, "purged": deleted}));
            } else {
                println!("purged {deleted} waiting jobs from {queue}");
            }
        }
    }
    Ok(())
}

fn report(flag: JsonFlag, queue: &str, what: &str) {
    if flag.json {
        output::json(&json!({"queue": queue, "paused": what == "paused"}));
    } else {
        println!("{queue} {what}");
    }
}

fn show_job(job: &Job, flag: JsonFlag) {
    if flag.json {
        output::json(job);
        return;
    }
    let rows = [
        ("id", job.id.to_string()),
        ("task", job.task.clone()),
        ("queue", job.queue.clone()),
        ("tenant", job.tenant.clone()),
        ("state", job.state.to_string()),
        ("priority", job.priority.to_string()),
        ("attempts", attempts_text(job)),
        ("worker", job.worker.clone().unwrap_or_else(|| "-".into())),
        ("payload", job.payload.to_string()),
        ("result", job.result.to_string()),
        ("error", job.error.clone().unwrap_or_else(|| "-".into())),
        ("progress", job.progress.to_string()),
        ("created_at", job.created_at.to_rfc3339()),
        ("run_at", job.run_at.to_rfc3339()),
        ("started_at", time(job.started_at)),
        ("finished_at", time(job.finished_at)),
    ];
    for (key, value) in rows {
        println!("{key:<12} {value}");
    }
    if !job.history.is_empty() {
        println!("history");
        let rows: Vec<Vec<String>> = job
            .history
            .iter()
            .map(|a| {
                vec![
                    a.attempt.to_string(),
                    a.outcome.clone(),
                    a.worker.clone(),
                    time(a.started_at),
                    a.finished_at.to_rfc3339(),
                    a.error.as_deref().unwrap_or("-").chars().take(60).collect(),
                ]
            })
            .collect();
        output::table(
            &[
                "ATTEMPT", "OUTCOME", "WORKER", "STARTED", "FINISHED", "ERROR",
            ],
            &rows,
        );
    }
}

/// "4 (max retries 1; 2 since the retry by hand)": attempts count on
/// across retries by hand (the attempt is the lease's fencing token), so
/// the current run's own count is said too once there was such a retry.
fn attempts_text(job: &Job) -> String {
    let base = format!("{} (max retries {}", job.attempts, job.max_retries);
    let ended = |a: &weir_shared::job::Attempt| a.outcome == "failed" || a.outcome == "cancelled";
    let last = job.history.len().checked_sub(1);
    // An end followed by more attempts (or by the job running again) was
    // retried by hand; the end of the current run is not.
    let restart = job
        .history
        .iter()
        .enumerate()
        .rev()
        .find(|(i, a)| ended(a) && (Some(*i) != last || !job.state.is_terminal()));
    match restart {
        Some((i, _)) => {
            let this_run = job.history.len() - i - 1 + usize::from(job.state == JobState::Running);
            format!("{base}; {this_run} since the retry by hand)")
        }
        None => format!("{base})"),
    }
}

/// Usage errors a `weir jobs` command line has, found before the broker
/// is opened (a wrong id is said as such, wherever the broker is).
fn check_jobs_args(action: &JobAction) -> Outcome {
    match action {
        JobAction::List { state, cursor, .. } => {
            if let Some(s) = state {
                JobState::from_str(s).map_err(Failure::usage)?;
            }
            if let Some(c) = cursor {
                job_id(c)?;
            }
        }
        JobAction::Show { id, .. }
        | JobAction::Retry { id, .. }
        | JobAction::Cancel { id, .. }
        | JobAction::Explain { id, .. } => {
            job_id(id)?;
        }
        JobAction::Bulk(args) => {
            super::bulk::request(args)?;
        }
    }
    Ok(())
}

/// `weir jobs list|show|retry|cancel`.
pub async fn jobs(settings: Settings, args: JobsArgs) -> Outcome {
    check_jobs_args(&args.action)?;
    let broker = super::connect(&settings).await?;
    match args.action {
        JobAction::List {
            queue,
            state,
            task,
            tenant,
            after,
            before,
            limit,
            cursor,
            output: flag,
        } => {
            if !(1..=500).contains(&limit) {
                return Err(Failure::usage("--limit must be 1 to 500"));
            }
            let state = state
                .map(|s| JobState::from_str(&s))
                .transpose()
                .map_err(Failure::usage)?;
            let after = after
                .map(|t| super::bulk::time("--after", &t))
                .transpose()?;
            let before = before
                .map(|t| super::bulk::time("--before", &t))
                .transpose()?;
            // Ids are UUIDv7: "created before" is a cursor; "created after"
            // ends the listing at the first older job.
            let cursor = match (cursor.map(|c| job_id(&c)).transpose()?, before) {
                (Some(c), Some(b)) => Some(c.min(JobId::first_at(b))),
                (c, b) => c.or(b.map(JobId::first_at)),
            };
            let mut page = broker
                .list(ListRequest {
                    scope: tenant.map_or(Scope::All, Scope::Tenant),
                    queue,
                    state,
                    task,
                    limit,
                    cursor,
                })
                .await?;
            if let Some(after) = after
                && page.data.iter().any(|j| j.created_at < after)
            {
                page.data.retain(|j| j.created_at >= after);
                page.has_more = false;
                page.next_cursor = None;
            }
            if flag.json {
                output::json(&page);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = page
                .data
                .iter()
                .map(|j| {
                    vec![
                        j.id.to_string(),
                        j.task.clone(),
                        j.queue.clone(),
                        j.state.to_string(),
                        j.priority.to_string(),
                        j.attempts.to_string(),
                        j.created_at.to_rfc3339(),
                        j.error
                            .clone()
                            .unwrap_or_default()
                            .chars()
                            .take(60)
                            .collect(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID", "TASK", "QUEUE", "STATE", "PRI", "ATTEMPTS", "CREATED", "ERROR",
                ],
                &rows,
            );
            if let Some(next) = page.next_cursor {
                // A filtered page may be short, even empty: each call
                // examines a bounded number of jobs.
                eprintln!("more: repeat with --cursor {next}");
            }
        }
        JobAction::Show { id, output: flag } => {
            let job = broker
                .get(&Scope::All, job_id(&id)?)
                .await?
                .ok_or_else(|| Failure::Refused(format!("no job {id}")))?;
            show_job(&job, flag);
        }
        JobAction::Retry { id, output: flag } => {
            let job = broker
                .retry(&Scope::All, job_id(&id)?)
                .await
                .map_err(|e| explain(e, "retry", "failed or cancelled"))?;
            show_job(&job, flag);
        }
        JobAction::Cancel { id, output: flag } => {
            let job = broker
                .cancel(&Scope::All, job_id(&id)?)
                .await
                .map_err(|e| explain(e, "cancel", "unfinished"))?;
            show_job(&job, flag);
        }
        JobAction::Bulk(args) => super::bulk::run(&broker, &args).await?,
        JobAction::Explain { id, output: flag } => {
            let job = broker
                .get(&Scope::All, job_id(&id)?)
                .await?
                .ok_or_else(|| Failure::Refused(format!("no job {id}")))?;
            let why = weir_shared::inspect::explain(
                broker.as_ref(),
                &job,
                &settings.limits,
                &weir_shared::broker::Scope::All,
            )
            .await?;
            if flag.json {
                output::json(&why);
                return Ok(());
            }
            println!("{} is {}", job.id, why.state);
            for r in &why.reasons {
                println!("  {:<17} {}", r.code, r.message);
            }
        }
    }
    Ok(())
}

/// `weir limits`.
pub async fn limits(settings: Settings, flag: JsonFlag) -> Outcome {
    let broker = super::connect(&settings).await?;
    let views = weir_shared::inspect::limit_views(broker.as_ref(), &settings.limits).await?;
    if flag.json {
        output::json(&json!({"data": views}));
        return Ok(());
    }
    let show = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.task.clone(),
                show(v.concurrency_limit),
                show(v.tenant_concurrency_limit),
                v.rate_limit.clone().unwrap_or_else(|| "-".into()),
                v.holders.len().to_string(),
                v.waiting.to_string(),
                v.throttled_until.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::table(
        &[
            "TASK",
            "CAP",
            "TENANT CAP",
            "RATE",
            "RUNNING",
            "WAITING",
            "THROTTLED UNTIL",
        ],
        &rows,
    );
    if views.is_empty() {
        eprintln!(
            "no task limits in force (set them under [tasks.\"NAME\"] in WEIR_CONFIG, or with WEIR_CONCURRENCY_LIMITS and WEIR_RATE_LIMITS)"
        );
    }
    Ok(())
}

fn explain(e: weir_shared::broker::BrokerError, verb: &str, allowed: &str) -> Failure {
    match e {
        weir_shared::broker::BrokerError::Conflict(state) => Failure::Refused(format!(
            "cannot {verb} a job that is {state}; only {allowed} jobs can be"
        )),
        other => other.into(),
    }
}

/// The `weir workers` table, within 120 columns: the id holds the host
/// and pid, and a long queue list is shortened (`--json` has it all).
fn workers_table(nodes: &[weir_shared::node::WorkerInfo], now: i64) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|w| {
            let mut queues = String::new();
            for (i, q) in w.queues.iter().enumerate() {
                let more = w.queues.len() - i;
                let next = if queues.is_empty() {
                    q.clone()
                } else {
                    format!("{queues},{q}")
                };
                if next.chars().count() > 20 && i > 0 {
                    queues.push_str(&format!(" +{more}"));
                    break;
                }
                queues = next;
            }
            vec![
                output::clip(&w.id, 22),
                output::clip(&queues, 24),
                format!(
                    "{}/{}/{}/{}",
                    w.slots.busy, w.slots.current, w.slots.min, w.slots.max
                ),
                w.children.len().to_string(),
                w.processed.to_string(),
                w.recycles.to_string(),
                restarts(w),
                output::ago(now - w.last_heartbeat.0),
            ]
        })
        .collect();
    output::render(
        &[
            "ID",
            "QUEUES",
            "SLOTS B/C/MIN/MAX",
            "PROCS",
            "DONE",
            "RECYCLED",
            "RESTARTS",
            "SEEN",
        ],
        &rows,
    )
}

/// `weir workers`.
pub async fn workers(settings: Settings, flag: JsonFlag) -> Outcome {
    let broker = super::connect(&settings).await?;
    let nodes = broker.workers().await?;
    if flag.json {
        output::json(&json!({"data": nodes}));
        return Ok(());
    }
    print!("{}", workers_table(&nodes, now_ms().0));
    if nodes.is_empty() {
        eprintln!("no live worker nodes");
    }
    Ok(())
}

pub async fn providers(settings: Settings, flag: JsonFlag) -> Outcome {
    let broker = super::connect(&settings).await?;
    let views = weir_shared::inspect::provider_views(&broker, &settings)
        .await
        .map_err(|e| match e {
            weir_shared::provider::PoolError::Broker(b) => Failure::from(b),
            other => Failure::from(anyhow::Error::from(other)),
        })?;
    if flag.json {
        output::json(&json!({"data": views}));
        return Ok(());
    }
    let now = now_ms().0;
    let rows: Vec<Vec<String>> = views
        .iter()
        .flat_map(|p| {
            let limits = format!(
                "{}/{}",
                p.rpm.map_or("-".into(), |n| n.to_string()),
                p.tpm.map_or("-".into(), |n| n.to_string())
            );
            let empty = p.keys.is_empty().then(|| {
                vec![
                    p.provider.clone(),
                    "(no keys)".into(),
                    "-".into(),
                    limits.clone(),
                    "0".into(),
                    "0".into(),
                    "0".into(),
                ]
            });
            p.keys
                .iter()
                .map(move |k| {
                    let state = match k.cooling_until {
                        Some(until) => {
                            format!("cooling {}", output::ago(until.0 - now).replace(" ago", ""))
                        }
                        None => k.state.clone(),
                    };
                    vec![
                        k.provider.clone(),
                        k.key.clone(),
                        state,
                        limits.clone(),
                        k.requests.to_string(),
                        k.throttled.to_string(),
                        k.tokens_last_minute.to_string(),
                    ]
                })
                .collect::<Vec<_>>()
                .into_iter()
                .chain(empty)
        })
        .collect();
    output::table(
        &[
            "PROVIDER",
            "KEY",
            "STATE",
            "RPM/TPM",
            "REQUESTS",
            "429S",
            "TOKENS/60S",
        ],
        &rows,
    );
    if views.is_empty() {
        eprintln!("no providers: add [providers.NAME] to the file WEIR_CONFIG names");
    }
    Ok(())
}

/// Restarts, flagged when a child keeps dying.
fn restarts(w: &weir_shared::node::WorkerInfo) -> String {
    if w.children.iter().any(|c| c.failures > 2) {
        format!("{} (loop)", w.restarts)
    } else {
        w.restarts.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_shared::job::Millis;
    use weir_shared::node::{ChildInfo, Slots, WorkerInfo};

    #[test]
    fn the_workers_table_fits_120_columns() {
        let node = WorkerInfo {
            id: "ip-10-0-12-34.eu-west-1.compute.internal:4194301:ab12".into(),
            host: "ip-10-0-12-34.eu-west-1.compute.internal".into(),
            pid: 4_194_301,
            queues: weir_shared::config::DEFAULT_QUEUES
                .iter()
                .map(|q| q.to_string())
                .collect(),
            slots: Slots {
                busy: 128,
                current: 256,
                min: 16,
                max: 256,
            },
            processed: 123_456_789,
            started_at: Millis(0),
            last_heartbeat: Millis(0),
            children: vec![ChildInfo {
                pid: 1,
                slots: 256,
                busy: 128,
                processed: 1,
                state: "serving".into(),
                failures: 3,
            }],
            recycles: 123_456,
            restarts: 1234,
            config: Default::default(),
            child_ready_ms: None,
            scaling: Vec::new(),
            tasks: Vec::new(),
            provider_keys: Vec::new(),
        };
        let text = workers_table(&[node], 7_200_000);
        for line in text.lines() {
            assert!(
                line.chars().count() <= 120,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        assert!(text.contains("priority_pipeline +9"), "{text}");
    }
}
