//! GCRA (the generic cell rate algorithm), written once. Every rate in weir
//! is this: the API's per-key and per-tenant budgets, task rates enforced at
//! claim, and the keyed limiters of [`crate::broker::Coordination`].
//!
//! One number is stored per key: the theoretical arrival time `tat`
//! (microseconds on the broker's clock; 0 for a key never seen). `cost`
//! events are allowed at `now` when
//! `max(tat, now) + cost × interval − burst × interval ≤ now`, and then
//! `tat` moves to `max(tat, now) + cost × interval`. So a key idle long
//! enough may spend `burst` events at once, then one per `interval`; there
//! is no window edge to game and no background refill.
//!
//! The Lua (`broker/redis/lua/common.lua`, `gcra`) and SQL versions must
//! give the same answers: [`CASES`] is the table each is tested against.

use super::{Decision, Rate};
use crate::job::duration_us;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A rate and the events it lets through back to back after an idle spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedRate {
    /// Sustained rate.
    #[serde(with = "rate_text")]
    pub rate: Rate,
    /// Events that may happen back to back (at least 1).
    pub burst: u32,
}

/// What one GCRA step decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// True when the events may happen.
    pub allowed: bool,
    /// The `tat` to store when allowed (the old one, floored at `now`, when not).
    pub tat: i64,
    /// Events still allowed right after this step.
    pub remaining: u32,
    /// When refused: microseconds until they would fit.
    pub retry_after_us: i64,
}

impl KeyedRate {
    /// `rate` with a burst of its whole count (`100/s` allows 100 at once):
    /// the API's budgets.
    pub fn with_full_burst(rate: Rate) -> Self {
        KeyedRate {
            rate,
            burst: rate.count,
        }
    }

    /// Time between two events at the sustained rate, in microseconds (at least 1).
    pub fn interval_us(&self) -> i64 {
        duration_us(self.rate.interval()).max(1)
    }

    fn burst_us(&self) -> i64 {
        i64::from(self.burst.max(1)).saturating_mul(self.interval_us())
    }

    /// One step: may `cost` events happen at `now` given the stored `tat`?
    /// A cost above the burst never fits; callers split such work.
    pub fn step(&self, tat: i64, now: i64, cost: u32) -> Step {
        let t = self.interval_us();
        let tat = tat.max(now);
        let new_tat = tat.saturating_add(i64::from(cost).saturating_mul(t));
        let allow_at = new_tat.saturating_sub(self.burst_us());
        if allow_at > now {
            return Step {
                allowed: false,
                tat,
                remaining: 0,
                retry_after_us: allow_at - now,
            };
        }
        Step {
            allowed: true,
            tat: new_tat,
            remaining: u32::try_from((now - allow_at) / t).unwrap_or(u32::MAX),
            retry_after_us: 0,
        }
    }

    /// When one more event is allowed, given the stored `tat`.
    pub fn next_allowed_us(&self, tat: i64) -> i64 {
        tat.saturating_add(self.interval_us())
            .saturating_sub(self.burst_us())
    }
}

impl Step {
    /// The answer a caller sees.
    pub fn decision(&self) -> Decision {
        Decision {
            allowed: self.allowed,
            remaining: self.remaining,
            retry_after: Duration::from_micros(u64::try_from(self.retry_after_us).unwrap_or(0)),
        }
    }
}

impl fmt::Display for KeyedRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.burst > 1 {
            write!(f, "{} (burst {})", self.rate, self.burst)
        } else {
            write!(f, "{}", self.rate)
        }
    }
}

mod rate_text {
    use super::Rate;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(rate: &Rate, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(rate)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One row of the table every GCRA implementation must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// What the row shows.
    pub name: &'static str,
    /// The rate, e.g. `5/s`.
    pub rate: &'static str,
    /// Its burst.
    pub burst: u32,
    /// Events asked for.
    pub cost: u32,
    /// Stored tat, relative to `NOW` (`None`: a key never seen, stored as 0).
    pub tat: Option<i64>,
    /// Expected answer.
    pub allowed: bool,
    /// Expected remaining.
    pub remaining: u32,
    /// Expected wait when refused (microseconds).
    pub retry_after_us: i64,
    /// Expected stored tat afterwards, relative to `NOW` (when allowed).
    pub new_tat: i64,
}

/// The `now` of every [`CASES`] row, in microseconds.
pub const NOW: i64 = 10_000_000;

/// The table: bursts, the exact boundary, refusals, costs, old state.
#[rustfmt::skip]
pub const CASES: &[Case] = &[
    Case { name: "first event of a new key", rate: "5/s", burst: 5, cost: 1, tat: None, allowed: true, remaining: 4, retry_after_us: 0, new_tat: 200_000 },
    Case { name: "last event of the burst, exactly at the boundary", rate: "5/s", burst: 5, cost: 1, tat: Some(800_000), allowed: true, remaining: 0, retry_after_us: 0, new_tat: 1_000_000 },
    Case { name: "burst spent: refused for one interval", rate: "5/s", burst: 5, cost: 1, tat: Some(1_000_000), allowed: false, remaining: 0, retry_after_us: 200_000, new_tat: 1_000_000 },
    Case { name: "one microsecond short of the boundary", rate: "5/s", burst: 5, cost: 1, tat: Some(999_999), allowed: false, remaining: 0, retry_after_us: 199_999, new_tat: 999_999 },
    Case { name: "a state older than now counts as now", rate: "5/s", burst: 5, cost: 1, tat: Some(-5_000_000), allowed: true, remaining: 4, retry_after_us: 0, new_tat: 200_000 },
    Case { name: "several events at once", rate: "5/s", burst: 5, cost: 3, tat: None, allowed: true, remaining: 2, retry_after_us: 0, new_tat: 600_000 },
    Case { name: "several events, all or none", rate: "5/s", burst: 5, cost: 3, tat: Some(600_000), allowed: false, remaining: 0, retry_after_us: 200_000, new_tat: 600_000 },
    Case { name: "a cost above the burst never fits", rate: "5/s", burst: 5, cost: 6, tat: None, allowed: false, remaining: 0, retry_after_us: 200_000, new_tat: 0 },
    Case { name: "evenly spaced: burst 1", rate: "10/m", burst: 1, cost: 1, tat: None, allowed: true, remaining: 0, retry_after_us: 0, new_tat: 6_000_000 },
    Case { name: "evenly spaced: the next one waits", rate: "10/m", burst: 1, cost: 1, tat: Some(5_999_999), allowed: false, remaining: 0, retry_after_us: 5_999_999, new_tat: 5_999_999 },
    Case { name: "a thousand a second", rate: "1000/s", burst: 1, cost: 1, tat: Some(0), allowed: true, remaining: 0, retry_after_us: 0, new_tat: 1_000 },
    Case { name: "an hourly rate", rate: "2/h", burst: 2, cost: 1, tat: Some(1_800_000_000), allowed: true, remaining: 0, retry_after_us: 0, new_tat: 3_600_000_000 },
];

impl Case {
    /// The rate the row names.
    pub fn keyed_rate(&self) -> KeyedRate {
        KeyedRate {
            rate: self.rate.parse().unwrap_or(Rate {
                count: 1,
                period: Duration::from_secs(1),
            }),
            burst: self.burst,
        }
    }

    /// The stored tat, absolute.
    pub fn stored_tat(&self) -> i64 {
        self.tat.map_or(0, |t| NOW + t)
    }

    /// Checks an implementation's answer (`allowed`, `remaining`,
    /// `retry_after_us`, stored tat afterwards, absolute) against the row.
    pub fn check(&self, got: (bool, u32, i64, i64)) {
        let expected_tat = if self.allowed {
            NOW + self.new_tat
        } else {
            self.stored_tat().max(NOW)
        };
        assert_eq!(
            got,
            (
                self.allowed,
                self.remaining,
                self.retry_after_us,
                expected_tat
            ),
            "GCRA case `{}` (allowed, remaining, retry_after_us, tat)",
            self.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_version_satisfies_the_table() {
        for case in CASES {
            let step = case.keyed_rate().step(case.stored_tat(), NOW, case.cost);
            case.check((step.allowed, step.remaining, step.retry_after_us, step.tat));
        }
    }

    #[test]
    fn next_allowed_follows_the_step() {
        let rate = KeyedRate {
            rate: "10/s".parse().expect("rate"),
            burst: 3,
        };
        // Three starts at 0 leave tat at 300 ms: the next is allowed at 100 ms.
        assert_eq!(rate.next_allowed_us(300_000), 100_000);
        assert!(!rate.step(300_000, 99_999, 1).allowed);
        assert!(rate.step(300_000, 100_000, 1).allowed);
    }
}
