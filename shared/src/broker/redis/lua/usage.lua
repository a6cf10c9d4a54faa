-- ARGV: P, task. How the task's limits are used: {tat, waiting, then
-- id, tenant, owner for each running job holding a permit}.
local task = ARGV[2]
local now = now_ms()
local out = {redis.call('GET', P .. ':rate:' .. lenc(task)) or '0', 0}
local waiting = 0
local prefix = held_suffix(task)
for _, q in ipairs(redis.call('SMEMBERS', P .. ':heldq:' .. lenc(task))) do
  for _, suffix in ipairs(redis.call('SMEMBERS', qkey(q, 'holds'))) do
    if suffix == prefix or string.sub(suffix, 1, string.len(prefix) + 1) == prefix .. ':' then
      waiting = waiting + redis.call('ZCARD', qkey(q, suffix))
    end
  end
end
out[2] = waiting
for _, id in ipairs(redis.call('ZRANGEBYSCORE', semkey(task), now, '+inf')) do
  local f = redis.call('HMGET', jkey(id), 'spec', 'owner')
  local tenant = spec(f[1])
  out[#out + 1] = id
  out[#out + 1] = tenant or ''
  out[#out + 1] = f[2] or ''
end
return out
