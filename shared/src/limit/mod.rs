//! Rate limits: a rate (`100/s`, `1000/m`, `10/h`) and limiters that admit
//! or refuse one event under a key. The in-process limiter serves a single
//! API replica; [`BrokerRateLimiter`] is shared by every replica through the
//! broker's [`Coordination`]. Both run the one algorithm in [`gcra`].

pub mod flow;
pub mod gcra;

pub use flow::{Holder, Limits, TaskLimit, TaskRate, Usage};
pub use gcra::KeyedRate;

use crate::broker::SharedBroker;

use async_trait::async_trait;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `count` events per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period (also the burst).
    pub count: u32,
    /// The period.
    pub period: Duration,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("`{s}` is not a rate like 100/s, 1000/m or 10/h");
        let (count, unit) = s.trim().split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(err()),
        };
        if count == 0 {
            return Err(format!("`{s}`: the count must be at least 1"));
        }
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Rate {
    /// Time between two events at the sustained rate.
    pub fn interval(&self) -> Duration {
        self.period / self.count
    }
}

/// The answer for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// True when the event may happen.
    pub allowed: bool,
    /// Events still allowed right now.
    pub remaining: u32,
    /// When refused: how long until one more is allowed.
    pub retry_after: Duration,
}

/// Why a limiter could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimitError(pub String);

/// Admits or refuses events under a key.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one event under `key` if `rate` allows it.
    async fn check(&self, key: &str, rate: Rate) -> Result<Decision, LimitError>;
}

/// An in-process limiter for a single node.
#[derive(Debug)]
pub struct LocalRateLimiter {
    start: Instant,
    tats: Mutex<HashMap<String, i64>>,
}

impl Default for LocalRateLimiter {
    fn default() -> Self {
        LocalRateLimiter {
            start: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, key: &str, rate: Rate) -> Result<Decision, LimitError> {
        let now = crate::job::duration_us(self.start.elapsed());
        let mut tats = self
            .tats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tat = tats.get(key).copied().unwrap_or(0);
        let step = KeyedRate::with_full_burst(rate).step(tat, now, 1);
        if step.allowed {
            tats.insert(key.to_owned(), step.tat);
        }
        // Keys whose bucket is full again carry no state; drop them now and
        // then so the map does not grow with every key ever seen.
        if tats.len() > 10_000 {
            tats.retain(|_, t| *t > now);
        }
        Ok(step.decision())
    }
}

/// A limiter whose state lives in the broker, shared by every process that
/// uses it (API replicas on Redis).
#[derive(Clone)]
pub struct BrokerRateLimiter(pub SharedBroker);

#[async_trait]
impl RateLimiter for BrokerRateLimiter {
    async fn check(&self, key: &str, rate: Rate) -> Result<Decision, LimitError> {
        self.0
            .admit(key, KeyedRate::with_full_burst(rate), 1)
            .await
            .map_err(|e| LimitError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            "100/s".parse(),
            Ok(Rate {
                count: 100,
                period: Duration::from_secs(1)
            })
        );
        assert_eq!(
            "10/m".parse::<Rate>().map(|r| r.to_string()),
            Ok("10/m".to_owned())
        );
        assert!("0/s".parse::<Rate>().is_err());
        assert!("5/d".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }
}
