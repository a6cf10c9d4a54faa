//! Job ids: UUIDv7, so ids sort by creation time and cursors can use them;
//! a cron tick's id is derived from its schedule and fire time.

use super::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A job's id: a UUIDv7, so ids sort by creation time and cursors can use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub uuid::Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        JobId(uuid::Uuid::now_v7())
    }

    /// The smallest id of a job created at `at`: every job created before
    /// it has a smaller id (a listing cursor for "created before").
    pub fn first_at(at: Millis) -> Self {
        let ms = u64::try_from(at.0).unwrap_or(0);
        JobId(uuid::Builder::from_unix_timestamp_millis(ms, &[0u8; 10]).into_uuid())
    }

    /// When the job was created (a tick's: its fire time), from the id's
    /// UUIDv7 timestamp.
    pub fn created_at(&self) -> Option<Millis> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        let ms = i64::try_from(secs).ok()?.checked_mul(1000)? + i64::from(nanos / 1_000_000);
        Some(Millis(ms))
    }

    /// The id of the run a schedule fires at `fire_time`: the same on every
    /// scheduler replica (a UUIDv7 whose time is the fire time and whose
    /// other bits are a digest of the schedule and the time), so a tick
    /// enqueued twice is recognised as one job.
    pub fn for_tick(schedule: &str, fire_time: Millis) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(schedule.as_bytes())
            .chain_update(b"@")
            .chain_update(fire_time.0.to_be_bytes())
            .finalize();
        let mut random = [0u8; 10];
        random.copy_from_slice(&digest[..10]);
        let ms = u64::try_from(fire_time.0).unwrap_or(0);
        JobId(uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(JobId)
    }
}
