-- ARGV: P, worker, lease_ms, limit, queue_1 .. queue_n (in the order to serve).
-- Promotes due jobs, then leases up to `limit` jobs across the queues,
-- skipping paused ones. The attempt is counted here, so a job that kills
-- its worker still uses up its retries. Returns flat rows of 10 fields.
local worker = ARGV[2]
local lease = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local now = now_ms()
local out = {}
for i = 5, #ARGV do
  if want <= 0 then break end
  local q = ARGV[i]
  promote(q, now, 100)
  if redis.call('EXISTS', qkey(q, 'paused')) == 0 then
    local popped = redis.call('ZPOPMIN', qkey(q, 'ready'), want)
    local leased = {}
    for n = 1, #popped, 2 do
      local id = popped[n]
      local key = jkey(id)
      local f = redis.call('HMGET', key, 'tenant', 'task', 'priority', 'payload', 'base', 'max_retries', 'timeout_ms', 'attempts')
      -- A job whose hash is gone (purged meanwhile) is skipped.
      if f[1] then
        local attempt = tonumber(f[8]) + 1
        redis.call('HSET', key, 'attempts', attempt, 'state', 'running', 'started_at', now, 'owner', worker)
        table.insert(leased, now + lease)
        table.insert(leased, id)
        table.insert(out, id)
        table.insert(out, q)
        table.insert(out, f[1])
        table.insert(out, f[2])
        table.insert(out, f[3])
        table.insert(out, f[4])
        table.insert(out, attempt)
        table.insert(out, f[5])
        table.insert(out, f[6])
        table.insert(out, f[7] or '')
        want = want - 1
      end
    end
    if #leased > 0 then
      flush('ZADD', qkey(q, 'running'), leased, 2)
    end
  end
end
return out
