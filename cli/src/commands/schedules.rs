//! `weir schedules`: list, trigger, pause, resume.

use crate::args::{ScheduleAction, SchedulesArgs};
use crate::failure::{Failure, Outcome};
use crate::output;
use serde_json::json;
use weir_shared::config::Settings;

/// `weir schedules [trigger|pause|resume NAME]`.
pub async fn run(settings: Settings, args: SchedulesArgs) -> Outcome {
    let broker = super::connect(&settings).await?;
    let find = |name: &str| {
        settings
            .schedules
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = settings.schedules.iter().map(|s| s.name.as_str()).collect();
                Failure::usage(if known.is_empty() {
                    format!("unknown schedule `{name}`: none are configured ([[schedules]] in WEIR_CONFIG)")
                } else {
                    format!("unknown schedule `{name}`; configured: {}", known.join(", "))
                })
            })
    };
    match args.action {
        None => {
            let views = weir_shared::inspect::schedule_views(&broker, &settings).await?;
            if args.output.json {
                output::json(&json!({"data": views}));
                return Ok(());
            }
            let dash = || "-".to_owned();
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        v.cron.clone(),
                        v.tz.clone(),
                        v.task.clone(),
                        if v.paused { "yes".into() } else { "no".into() },
                        v.last_fire.clone().unwrap_or_else(dash),
                        v.next_fire.clone().unwrap_or_else(dash),
                        v.last_job.clone().unwrap_or_else(dash),
                        v.last_state.clone().unwrap_or_else(dash),
                    ]
                })
                .collect();
            output::table(
                &[
                    "NAME",
                    "CRON",
                    "TZ",
                    "TASK",
                    "PAUSED",
                    "LAST FIRE",
                    "NEXT FIRE",
                    "LAST JOB",
                    "STATE",
                ],
                &rows,
            );
            if views.is_empty() {
                eprintln!("no schedules configured ([[schedules]] in WEIR_CONFIG)");
            }
        }
        Some(ScheduleAction::Trigger { name }) => {
            let schedule = find(&name)?;
            let request = schedule.run_request(&settings);
            let mut done = broker.enqueue(vec![request]).await?;
            let job = done
                .pop()
                .ok_or_else(|| Failure::Runtime(anyhow::anyhow!("enqueue returned nothing")))?
                .job;
            if args.output.json {
                output::json(&job);
            } else {
                println!("{} ({name}, run now)", job.id);
            }
        }
        Some(ScheduleAction::Pause { name }) => {
            find(&name)?;
            broker.set_schedule_paused(&name, true).await?;
            report(args.output.json, &name, true);
        }
        Some(ScheduleAction::Resume { name }) => {
            find(&name)?;
            broker.set_schedule_paused(&name, false).await?;
            report(args.output.json, &name, false);
        }
    }
    Ok(())
}

fn report(json: bool, name: &str, paused: bool) {
    if json {
        output::json(&json!({"schedule": name, "paused": paused}));
    } else {
        println!("{name} {}", if paused { "paused" } else { "resumed" });
    }
}
