-- ARGV: P, queue_1 .. queue_n. Per queue: the sizes of its state sets
-- (waiting, scheduled, ready plus held and parked, running, retrying, succeeded, failed,
-- cancelled) and 1 when paused, else 0.
local out = {}
for i = 2, #ARGV do
  local q = ARGV[i]
  local held = 0
  for _, suffix in ipairs(redis.call('SMEMBERS', qkey(q, 'holds'))) do
    held = held + redis.call('ZCARD', qkey(q, suffix))
  end
  out[#out + 1] = redis.call('ZCARD', qkey(q, 'waiting'))
  out[#out + 1] = redis.call('ZCARD', qkey(q, 'scheduled'))
  out[#out + 1] = redis.call('ZCARD', qkey(q, 'ready')) + held
    + redis.call('ZCARD', qkey(q, 'parked'))
  for _, set in ipairs({'running', 'retrying', 'succeeded', 'failed', 'cancelled'}) do
    out[#out + 1] = redis.call('ZCARD', qkey(q, set))
  end
  out[#out + 1] = redis.call('EXISTS', qkey(q, 'paused'))
end
return out
