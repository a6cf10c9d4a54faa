-- ARGV: P, retention_ms, completions (JSON array of {q, id, a, k, v, d}):
-- k = "s" succeeded (v = result JSON), "f" failed (v = error, d = retry
-- delay ms or null for no retry), "r" released (handed back unfinished).
-- Each is fenced on (id, attempt). Returns the ids that were stale.
local retention = tonumber(ARGV[2])
local now = now_ms()
local stale = {}
for _, c in ipairs(cjson.decode(ARGV[3])) do
  local q, id = c.q, c.id
  local key = jkey(q, id)
  if not holds(q, id, c.a) then
    table.insert(stale, id)
  else
    redis.call('ZREM', qkey(q, 'running'), id)
    if c.k == 's' then
      redis.call('HSET', key, 'result', c.v)
      finish(q, id, 'succeeded', now, retention)
    elseif c.k == 'r' then
      redis.call('HINCRBY', key, 'base', 1)
      make_ready(q, id)
    else
      redis.call('HSET', key, 'error', c.v)
      local f = redis.call('HMGET', key, 'attempts', 'base', 'max_retries')
      local used = tonumber(f[1]) - tonumber(f[2])
      if c.d ~= cjson.null and c.d ~= nil and used <= tonumber(f[3]) then
        local run_at = now + tonumber(c.d)
        redis.call('HSET', key, 'state', 'retrying', 'run_at', run_at, 'owner', '')
        redis.call('ZADD', qkey(q, 'retrying'), run_at, id)
      else
        finish(q, id, 'failed', now, retention)
      end
    end
  end
end
return stale
