//! A read-through cache with a stampede guard, for task handlers that read
//! through Redis: when a key is missing, one caller computes it (holding a
//! short lock) while the others wait for its value instead of all hitting
//! the database at once. The lock holder checks the key again after taking
//! the lock (someone may have filled it meanwhile), and releases only its
//! own lock (compare-and-delete), so a slow holder whose lock expired never
//! frees a newer holder's.

use redis::AsyncCommands;
use std::future::Future;
use std::time::{Duration, Instant};

/// Why the cache could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CacheError<E> {
    /// Redis failed.
    #[error("cache unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    /// Computing the value failed (it is not cached).
    #[error("computing the value failed")]
    Compute(E),
}

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// The value under `key`, or `compute`'s, stored for `ttl`. Concurrent
/// callers that miss wait for the one holding `key`'s lock (at most
/// `lock_ttl`, after which they compute it themselves).
pub async fn get_with_lock<C, F, Fut, E>(
    conn: &mut C,
    key: &str,
    ttl: Duration,
    lock_ttl: Duration,
    compute: F,
) -> Result<String, CacheError<E>>
where
    C: redis::aio::ConnectionLike + Send + Sync,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<String, E>>,
{
    let lock = format!("{key}:lock");
    let token = uuid::Uuid::now_v7().to_string();
    let px = |d: Duration| crate::job::duration_ms(d).unsigned_abs().max(1);
    let deadline = Instant::now() + lock_ttl;
    let mut held = false;
    loop {
        if let Some(value) = conn.get::<_, Option<String>>(key).await? {
            if held {
                release(conn, &lock, &token).await?;
            }
            return Ok(value);
        }
        if held {
            break;
        }
        let taken: Option<String> = redis::cmd("SET")
            .arg(&lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(px(lock_ttl))
            .query_async(conn)
            .await?;
        if taken.is_some() {
            // Check the key once more under the lock: the previous holder
            // may have stored it between our read and our lock.
            held = true;
            continue;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let computed = compute().await;
    let value = match computed {
        Ok(v) => v,
        Err(e) => {
            if held {
                release(conn, &lock, &token).await?;
            }
            return Err(CacheError::Compute(e));
        }
    };
    let _: () = conn
        .set_options(
            key,
            &value,
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(px(ttl))),
        )
        .await?;
    if held {
        release(conn, &lock, &token).await?;
    }
    Ok(value)
}

async fn release<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    lock: &str,
    token: &str,
) -> Result<(), redis::RedisError> {
    let _: i64 = redis::Script::new(RELEASE)
        .key(lock)
        .arg(token)
        .invoke_async(conn)
        .await?;
    Ok(())
}
