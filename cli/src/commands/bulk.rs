//! `weir jobs bulk retry|cancel|delete --queue Q [filters]`: works through
//! the matching jobs in steps of `--batch` (`weir_shared::bulk`), printing
//! each step's counts, until none are left.

use crate::args::BulkArgs;
use crate::failure::{Failure, Outcome};
use crate::output;
use chrono::DateTime;
use serde_json::json;
use std::str::FromStr;
use weir_shared::broker::SharedBroker;
use weir_shared::bulk::{BulkAction, BulkRequest, MAX_BULK};
use weir_shared::config::parse_duration;
use weir_shared::job::{JobState, Millis, duration_ms, now_ms};

/// A time given as RFC 3339 or as a duration ago.
pub(crate) fn time(flag: &str, text: &str) -> Result<Millis, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Millis(t.timestamp_millis()));
    }
    parse_duration(text)
        .map(|ago| Millis(now_ms().0 - duration_ms(ago)))
        .map_err(|_| {
            Failure::usage(format!(
                "{flag} `{text}` is neither an RFC 3339 time nor a duration ago like 2h"
            ))
        })
}

/// The request the command line asks for, or what to fix.
pub(crate) fn request(args: &BulkArgs) -> Result<BulkRequest, Failure> {
    let action = BulkAction::from_str(&args.action).map_err(Failure::usage)?;
    if action == BulkAction::Delete && !args.yes && !args.dry_run {
        return Err(Failure::usage(format!(
            "deleting jobs is for good; add --yes (or --dry-run to count them first): weir jobs bulk delete --queue {} --yes",
            args.queue
        )));
    }
    if !(1..=MAX_BULK).contains(&args.batch) {
        return Err(Failure::usage(format!("--batch must be 1 to {MAX_BULK}")));
    }
    let request = BulkRequest {
        action,
        queue: args.queue.clone(),
        state: args
            .state
            .as_deref()
            .map(JobState::from_str)
            .transpose()
            .map_err(Failure::usage)?,
        task: args.task.clone(),
        tenant: args.tenant.clone(),
        after: args
            .after
            .as_deref()
            .map(|t| time("--after", t))
            .transpose()?,
        before: args
            .before
            .as_deref()
            .map(|t| time("--before", t))
            .transpose()?,
        dry_run: args.dry_run,
        limit: args.batch,
        cursor: None,
    };
    request.state().map_err(Failure::usage)?;
    Ok(request)
}

/// Runs the steps and reports the totals.
pub(crate) async fn run(broker: &SharedBroker, args: &BulkArgs) -> Outcome {
    let mut request = request(args)?;
    let (mut matched, mut done, mut skipped, mut steps) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let step = weir_shared::bulk::run(broker.as_ref(), &request).await?;
        steps += 1;
        matched += step.matched;
        done += step.done;
        skipped += step.skipped;
        if !args.output.json && step.matched > 0 {
            eprintln!("step {steps}: {} matched, {} done", step.matched, step.done);
        }
        match step.next_cursor.filter(|_| step.has_more) {
            Some(cursor) => request.cursor = Some(cursor),
            None => break,
        }
    }
    let verb = match request.action {
        BulkAction::Retry => "retried",
        BulkAction::Cancel => "cancelled",
        BulkAction::Delete => "deleted",
    };
    if args.output.json {
        output::json(&json!({
            "action": request.action,
            "dry_run": request.dry_run,
            "matched": matched,
            "done": done,
            "skipped": skipped,
        }));
    } else if request.dry_run {
        println!("{matched} jobs match; nothing changed (dry run)");
    } else {
        println!("{done} jobs {verb} of {matched} matching ({skipped} skipped)");
    }
    Ok(())
}
