-- ARGV: P, queue. Deletes the queue's waiting jobs (scheduled, queued,
-- retrying, and lane members parked behind their head), frees their unique
-- keys and lets their lanes move on; workflow steps stay (they go with
-- their workflow). Returns how many.
local q = ARGV[2]
local n = 0
local sets = {'ready', 'scheduled', 'retrying', 'parked'}
local lanes = {}
local kept = {}
for _, suffix in ipairs(redis.call('SMEMBERS', qkey(q, 'holds'))) do
  table.insert(sets, suffix)
end
redis.call('DEL', qkey(q, 'holds'))
for _, set in ipairs(sets) do
  for _, id in ipairs(redis.call('ZRANGE', qkey(q, set), 0, -1)) do
    if redis.call('HEXISTS', jkey(id), 'wf') == 1 then
      -- Workflow steps stay: cancel their workflow instead.
      kept[#kept + 1] = id
      kept[#kept + 1] = redis.call('ZSCORE', qkey(q, set), id)
      kept[#kept + 1] = set
    else
      release_unique(q, id)
      local f = redis.call('HMGET', jkey(id), 'sk', 'spec')
      if f[1] then
        local tenant = spec(f[2])
        redis.call('ZREM', lane_key(tenant, f[1]), id)
        lanes[#lanes + 1] = {tenant, f[1]}
      end
      redis.call('DEL', jkey(id))
      n = n + 1
    end
  end
  redis.call('DEL', qkey(q, set))
end
for i = 1, #kept, 3 do
  redis.call('ZADD', qkey(q, kept[i + 2]), kept[i + 1], kept[i])
  if string.sub(kept[i + 2], 1, 5) == 'held:' or string.sub(kept[i + 2], 1, 5) == 'idle:' then
    redis.call('SADD', qkey(q, 'holds'), kept[i + 2])
  end
end
local now = now_ms()
for _, l in ipairs(lanes) do
  lane_advance(l[1], l[2], now)
end
return n
