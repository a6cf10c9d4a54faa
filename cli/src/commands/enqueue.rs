//! `weir enqueue TASK`: one job, or `--count N` of them in batches.

use crate::args::EnqueueArgs;
use crate::failure::{Failure, Outcome};
use crate::output;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use weir_shared::config::{Settings, parse_duration};
use weir_shared::input::{Catalog, job_request};
use weir_shared::job::duration_ms;

/// Jobs per broker call in a bulk enqueue: one transaction each.
const CHUNK: u64 = 1000;

/// The job as the HTTP API would receive it, so both paths check the same way.
fn body(args: &EnqueueArgs) -> Result<Value, Failure> {
    let mut job = Map::new();
    job.insert("task".into(), json!(args.task));
    if let Some(q) = &args.queue {
        job.insert("queue".into(), json!(q));
    }
    if let Some(p) = &args.payload {
        let payload: Value = weir_shared::input::parse_json(p.as_bytes())
            .map_err(|e| Failure::usage(format!("--payload is not valid JSON: {e}")))?;
        job.insert("payload".into(), payload);
    }
    if let Some(p) = args.priority {
        job.insert("priority".into(), json!(p));
    }
    if let Some(d) = &args.delay {
        let d = parse_duration(d).map_err(|e| Failure::usage(format!("--delay: {e}")))?;
        job.insert("delay_ms".into(), json!(duration_ms(d)));
    }
    if let Some(n) = args.max_retries {
        job.insert("max_retries".into(), json!(n));
    }
    if let Some(t) = &args.timeout {
        let t = parse_duration(t).map_err(|e| Failure::usage(format!("--timeout: {e}")))?;
        job.insert("timeout_ms".into(), json!(duration_ms(t)));
    }
    if let Some(k) = &args.unique_key {
        job.insert("unique_key".into(), json!(k));
    }
    if let Some(k) = &args.serial_key {
        job.insert("serial_key".into(), json!(k));
    }
    Ok(Value::Object(job))
}

/// Runs `weir enqueue`.
pub async fn run(settings: Settings, args: EnqueueArgs) -> Outcome {
    if args.count == 0 {
        return Err(Failure::usage("--count must be at least 1"));
    }
    if args.unique_key_prefix.is_some() && args.count == 1 {
        return Err(Failure::usage(
            "--unique-key-prefix goes with --count N; for one job use --unique-key",
        ));
    }
    let catalog = Catalog {
        settings: &settings,
        extra_tasks: &[],
    };
    let mut job = body(&args)?;
    if let (Some(prefix), Value::Object(fields)) = (&args.unique_key_prefix, &mut job) {
        // The longest key this run makes, checked as any unique key is.
        let longest = format!("{prefix}-{}", args.count - 1);
        fields.insert("unique_key".into(), json!(longest));
    }
    let request =
        job_request(catalog, &args.tenant, job, "").map_err(|e| Failure::usage(e.to_string()))?;
    // Enqueueing before any worker has started is normal: the database is
    // created, and where, is said (a worker elsewhere would not see it).
    let created_here = settings.broker.sqlite_path().filter(|p| !p.exists());
    let broker = super::open_role(&settings).await?;
    if let Some(path) = created_here {
        let shown = std::path::absolute(&path).unwrap_or(path);
        eprintln!(
            "created a new weir database at {} (workers must use the same WEIR_BROKER_URL)",
            shown.display()
        );
    }

    if args.count == 1 {
        let mut out = broker.enqueue(vec![request]).await?;
        let enqueued = out
            .pop()
            .ok_or_else(|| Failure::Runtime(anyhow::anyhow!("the broker returned no job")))?;
        if args.output.json {
            // The job, and whether it is new: false when an unfinished job
            // already held the unique key (that job is the one shown).
            let mut shown = serde_json::to_value(&enqueued.job)
                .map_err(|e| Failure::Runtime(anyhow::Error::new(e)))?;
            shown["created"] = json!(enqueued.created);
            output::json(&shown);
        } else {
            if !enqueued.created {
                eprintln!(
                    "an unfinished job already holds this unique key; nothing new was enqueued"
                );
            }
            println!("{}", enqueued.job.id);
        }
        return Ok(());
    }

    bulk(&broker, request, &args).await
}

/// `--count N`: batches of [`CHUNK`], each one transaction; each batch's ids
/// are printed once it is committed, so an interrupted run has told what
/// is in. With `--unique-key-prefix`, a re-run skips the copies still in.
async fn bulk(
    broker: &weir_shared::broker::SharedBroker,
    request: weir_shared::broker::EnqueueRequest,
    args: &EnqueueArgs,
) -> Outcome {
    use std::io::Write as _;
    let bar = ProgressBar::new(args.count);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut ids = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
    let mut skipped = 0u64;
    let mut next = 0u64;
    while next < args.count {
        let n = (args.count - next).min(CHUNK);
        let batch = (next..next + n)
            .map(|i| {
                let mut copy = request.clone();
                if let Some(prefix) = &args.unique_key_prefix {
                    copy.unique_key = Some(format!("{prefix}-{i}"));
                }
                copy
            })
            .collect();
        let out = broker.enqueue(batch).await?;
        let mut committed = Vec::with_capacity(out.len());
        for e in out {
            if e.created {
                committed.push(e.job.id);
            } else {
                skipped += 1;
            }
        }
        if !args.output.json {
            let text: String = committed.iter().map(|id| format!("{id}\n")).collect();
            bar.suspend(|| {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
            });
        }
        ids.extend(committed);
        bar.inc(n);
        next += n;
    }
    bar.finish_and_clear();
    if args.output.json {
        output::json(&json!({"ids": ids, "skipped": skipped}));
    } else if skipped > 0 {
        eprintln!(
            "enqueued {} jobs; {skipped} were in already (their unique key is held)",
            ids.len()
        );
    } else {
        eprintln!("enqueued {} jobs", ids.len());
    }
    Ok(())
}
