//! Schedules: cron expressions in a time zone, and the fire times every
//! scheduler replica computes identically. Which ticks fire, and the
//! scheduler loop, live in the `weir-scheduler` crate; enqueueing a tick
//! exactly once is the broker's [`crate::broker::CronStore::fire`].

use crate::job::Millis;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// What happens to ticks missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum Misfire {
    /// Only the newest missed tick fires (the default).
    Skip,
    /// Every missed tick within `grace` fires, once each.
    CatchUp {
        /// How far back missed ticks still fire.
        #[serde(with = "humantime_serde_ms")]
        grace: Duration,
    },
}

mod humantime_serde_ms {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

/// One `[[schedules]]` entry, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    /// Unique name; part of each tick's identity.
    pub name: String,
    /// The expression as written (5 fields, or 6 with seconds first).
    pub cron: String,
    /// The time zone the expression is read in.
    #[serde(serialize_with = "tz_name")]
    pub tz: Tz,
    /// Task each run enqueues.
    pub task: String,
    /// Queue; `None` for the task's default.
    pub queue: Option<String>,
    /// Payload of each run.
    pub payload: Value,
    /// Priority of each run.
    pub priority: u8,
    /// Missed ticks.
    pub misfire: Misfire,
    #[serde(skip)]
    parsed: Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.name,
            &self.cron,
            self.tz,
            &self.task,
            &self.queue,
            &self.payload,
            self.priority,
            self.misfire,
        ) == (
            &other.name,
            &other.cron,
            other.tz,
            &other.task,
            &other.queue,
            &other.payload,
            other.priority,
            other.misfire,
        )
    }
}

fn tz_name<S: serde::Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

/// Parses a cron expression: 5 fields, or 6 with seconds first.
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if !text.trim().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "`{text}` has {fields} fields; a cron expression has 5 (minute hour day month weekday) or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("`{text}` is not a valid cron expression: {e}"))
}

/// A schedule as configured, before its expression and time zone are checked.
#[derive(Debug, Clone)]
pub struct ScheduleSpec<'a> {
    /// Unique name.
    pub name: &'a str,
    /// Cron expression.
    pub cron: &'a str,
    /// IANA time zone; `None` for UTC.
    pub tz: Option<&'a str>,
    /// Task each run enqueues.
    pub task: &'a str,
    /// Queue; `None` for the task's default.
    pub queue: Option<String>,
    /// Payload of each run.
    pub payload: Value,
    /// Priority of each run.
    pub priority: u8,
    /// Missed ticks.
    pub misfire: Misfire,
}

impl<'a> ScheduleSpec<'a> {
    /// A spec with the defaults: UTC, the task's queue, an empty payload,
    /// priority 5, `skip`.
    pub fn new(name: &'a str, cron: &'a str, task: &'a str) -> Self {
        ScheduleSpec {
            name,
            cron,
            tz: None,
            task,
            queue: None,
            payload: Value::Object(serde_json::Map::new()),
            priority: 5,
            misfire: Misfire::Skip,
        }
    }
}

/// The tenant schedules enqueue for: the operator's.
pub const SCHEDULE_TENANT: &str = "default";

impl Schedule {
    /// The run a tick enqueues, with the task's defaults.
    pub fn run_request(&self, settings: &crate::config::Settings) -> crate::broker::EnqueueRequest {
        let task = settings.task(&self.task);
        crate::broker::EnqueueRequest {
            id: None,
            tenant: SCHEDULE_TENANT.into(),
            task: self.task.clone(),
            queue: self
                .queue
                .clone()
                .or(task.queue)
                .unwrap_or_else(|| "default".into()),
            payload: self.payload.clone(),
            priority: self.priority,
            run_at: None,
            max_retries: task.max_retries.unwrap_or(crate::job::DEFAULT_MAX_RETRIES),
            timeout_ms: task
                .timeout
                .map(|t| crate::job::duration_ms(t).unsigned_abs()),
            unique_key: None,
            serial_key: None,
        }
    }

    /// A schedule from its spec; the expression and time zone are checked here.
    pub fn new(spec: ScheduleSpec<'_>) -> Result<Self, String> {
        let parsed = parse_cron(spec.cron)?;
        let tz = match spec.tz {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| format!("`{name}` is not an IANA time zone such as Asia/Shanghai"))?,
        };
        Ok(Schedule {
            name: spec.name.to_owned(),
            cron: spec.cron.to_owned(),
            tz,
            task: spec.task.to_owned(),
            queue: spec.queue,
            payload: spec.payload,
            priority: spec.priority,
            misfire: spec.misfire,
            parsed,
        })
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: Millis) -> Option<Millis> {
        let start = self.tz.timestamp_millis_opt(t.0).single()?;
        self.parsed
            .find_next_occurrence(&start, false)
            .ok()
            .map(|next: DateTime<Tz>| Millis(next.with_timezone(&Utc).timestamp_millis()))
    }

    /// The latest fire time at or before `t`.
    pub fn latest_until(&self, t: Millis) -> Option<Millis> {
        let start = self.tz.timestamp_millis_opt(t.0).single()?;
        self.parsed
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|prev: DateTime<Tz>| Millis(prev.with_timezone(&Utc).timestamp_millis()))
    }

    /// Fire times in `(after, until]`, oldest first, at most `limit`.
    pub fn ticks(&self, after: Millis, until: Millis, limit: usize) -> Vec<Millis> {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < limit {
            match self.next_after(cursor) {
                Some(next) if next <= until => {
                    out.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Millis {
        Millis(
            Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
                .single()
                .expect("valid")
                .timestamp_millis(),
        )
    }

    fn schedule(cron: &str, tz: Option<&str>) -> Schedule {
        Schedule::new(ScheduleSpec {
            tz,
            ..ScheduleSpec::new("s", cron, "weir.noop")
        })
        .expect("valid")
    }

    #[test]
    fn nine_in_shanghai_is_one_utc() {
        let s = schedule("0 9 * * *", Some("Asia/Shanghai"));
        let next = s.next_after(at(2026, 11, 27, 0, 0, 0)).expect("next");
        assert_eq!(next, at(2026, 11, 27, 1, 0, 0));
        let ticks = s.ticks(at(2026, 11, 27, 0, 0, 0), at(2026, 11, 30, 0, 0, 0), 10);
        assert_eq!(
            ticks,
            [
                at(2026, 11, 27, 1, 0, 0),
                at(2026, 11, 28, 1, 0, 0),
                at(2026, 11, 29, 1, 0, 0)
            ]
        );
    }

    #[test]
    fn five_and_six_fields() {
        let every_ten = schedule("*/10 * * * *", None);
        assert_eq!(
            every_ten.ticks(at(2026, 1, 1, 0, 0, 0), at(2026, 1, 1, 0, 30, 0), 10),
            [
                at(2026, 1, 1, 0, 10, 0),
                at(2026, 1, 1, 0, 20, 0),
                at(2026, 1, 1, 0, 30, 0)
            ]
        );
        let every_second = schedule("* * * * * *", None);
        assert_eq!(
            every_second
                .ticks(at(2026, 1, 1, 0, 0, 0), at(2026, 1, 1, 0, 0, 3), 10)
                .len(),
            3
        );
        let weekdays = schedule("0 9 * * MON-FRI", None);
        // 2026-11-28 is a Saturday: the next is Monday the 30th.
        assert_eq!(
            weekdays.next_after(at(2026, 11, 27, 10, 0, 0)),
            Some(at(2026, 11, 30, 9, 0, 0))
        );
        assert!(parse_cron("* * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(
            Schedule::new(ScheduleSpec {
                tz: Some("Mars/Base"),
                ..ScheduleSpec::new("s", "* * * * *", "t")
            })
            .is_err()
        );
    }

    #[test]
    fn daylight_saving_gaps_and_overlaps() {
        // Europe/Berlin springs forward on 2026-03-29 at 02:00 -> 03:00: a
        // 02:30 job runs once that day, at the first instant after the gap.
        let s = schedule("30 2 * * *", Some("Europe/Berlin"));
        let day = s.ticks(at(2026, 3, 28, 22, 0, 0), at(2026, 3, 29, 22, 0, 0), 10);
        assert_eq!(day.len(), 1, "{day:?}");
        assert_eq!(day[0], at(2026, 3, 29, 1, 0, 0));
        // It falls back on 2026-10-25 at 03:00 -> 02:00: 02:30 happens twice
        // on the clock, the job fires once.
        let day = s.ticks(at(2026, 10, 24, 22, 0, 0), at(2026, 10, 25, 22, 0, 0), 10);
        assert_eq!(day.len(), 1, "{day:?}");
    }

    #[test]
    fn tick_ids_are_the_same_everywhere_and_time_ordered() {
        use crate::job::JobId;
        let a = JobId::for_tick("warm", at(2026, 1, 1, 0, 0, 0));
        assert_eq!(a, JobId::for_tick("warm", at(2026, 1, 1, 0, 0, 0)));
        assert_ne!(a, JobId::for_tick("other", at(2026, 1, 1, 0, 0, 0)));
        let later = JobId::for_tick("warm", at(2026, 1, 1, 0, 0, 1));
        assert!(later.to_string() > a.to_string());
        assert_eq!(a.0.get_version_num(), 7);
    }
}
