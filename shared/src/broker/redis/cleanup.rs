//! For tests and benchmarks on a shared Redis: deletes every key under a
//! prefix when dropped (SCAN and DEL, never FLUSHDB: other users share the
//! server).

use redis::Commands;

/// Deletes `PREFIX:*` from the Redis at `url` when dropped.
#[derive(Debug)]
pub struct PrefixCleanup {
    /// The Redis.
    pub url: String,
    /// The key prefix (without the trailing `:`).
    pub prefix: String,
}

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        let Ok(mut conn) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
        else {
            return;
        };
        let keys: Vec<String> = match conn.scan_match::<_, String>(format!("{}:*", self.prefix)) {
            Ok(iter) => iter.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}
