-- ARGV: P, retention_ms, limit. For every queue: returns jobs whose lease
-- expired to their queue (or to the dead letters when that attempt was
-- their last) and promotes due jobs. Idempotent: every node may run it.
-- Returns {requeued, dead, promoted}.
local retention = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local now = now_ms()
local requeued, dead, promoted = 0, 0, 0
for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local expired = redis.call('ZRANGEBYSCORE', qkey(q, 'running'), '-inf', now - 1, 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do
    local key = jkey(id)
    redis.call('ZREM', qkey(q, 'running'), id)
    local f = redis.call('HMGET', key, 'attempts', 'base', 'max_retries')
    if f[1] then
      redis.call('HSET', key, 'error', 'lease expired during attempt ' .. f[1] .. ' (worker lost or stalled)')
      if tonumber(f[1]) - tonumber(f[2]) > tonumber(f[3]) then
        finish(q, id, 'failed', now, retention)
        dead = dead + 1
      else
        make_ready(q, id)
        requeued = requeued + 1
      end
    end
  end
  promoted = promoted + promote(q, now, limit)
  -- Terminal sets forget what the retention has expired.
  for _, set in ipairs({'succeeded', 'failed', 'cancelled'}) do
    redis.call('ZREMRANGEBYSCORE', qkey(q, set), '-inf', now - retention)
  end
end
return {requeued, dead, promoted}
