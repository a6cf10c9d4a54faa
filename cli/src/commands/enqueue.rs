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
    Ok(Value::Object(job))
}

/// Runs `weir enqueue`.
pub async fn run(settings: Settings, args: EnqueueArgs) -> Outcome {
    if args.count == 0 {
        return Err(Failure::usage("--count must be at least 1"));
    }
    let catalog = Catalog {
        settings: &settings,
        extra_tasks: &[],
    };
    let request = job_request(catalog, &args.tenant, body(&args)?, "")
        .map_err(|e| Failure::usage(e.to_string()))?;
    let broker = super::connect(&settings).await?;

    if args.count == 1 {
        let mut out = broker.enqueue(vec![request]).await?;
        let enqueued = out
            .pop()
            .ok_or_else(|| Failure::Runtime(anyhow::anyhow!("the broker returned no job")))?;
        if args.output.json {
            output::json(&enqueued.job);
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

    let bar = ProgressBar::new(args.count);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut ids = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
    let mut left = args.count;
    while left > 0 {
        let n = left.min(CHUNK);
        let batch = (0..n).map(|_| request.clone()).collect();
        let out = broker.enqueue(batch).await?;
        ids.extend(out.into_iter().map(|e| e.job.id));
        bar.inc(n);
        left -= n;
    }
    bar.finish_and_clear();
    if args.output.json {
        output::json(&json!({"ids": ids}));
    } else {
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        print!("{text}");
        eprintln!("enqueued {} jobs", ids.len());
    }
    Ok(())
}
