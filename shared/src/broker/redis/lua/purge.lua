-- ARGV: P, queue. Deletes the queue's waiting jobs (scheduled, queued,
-- retrying, and lane members parked behind their head), frees their unique
-- keys and lets their lanes move on. Returns how many.
local q = ARGV[2]
local n = 0
local sets = {'ready', 'scheduled', 'retrying', 'parked'}
local lanes = {}
for _, suffix in ipairs(redis.call('SMEMBERS', qkey(q, 'holds'))) do
  table.insert(sets, suffix)
end
redis.call('DEL', qkey(q, 'holds'))
for _, set in ipairs(sets) do
  for _, id in ipairs(redis.call('ZRANGE', qkey(q, set), 0, -1)) do
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
  redis.call('DEL', qkey(q, set))
end
local now = now_ms()
for _, l in ipairs(lanes) do
  lane_advance(l[1], l[2], now)
end
return n
