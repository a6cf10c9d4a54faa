-- ARGV: P, then 10 values per job: id, tenant, task, queue, priority,
-- payload (JSON text), max_retries, timeout_ms ('' for none), unique_key
-- ('' for none), delay_ms. Flat arguments, no JSON to decode per call.
-- Returns {now, id_or_holder_1, created_1, ...}. All jobs or none: a script
-- runs atomically. Index and set updates are gathered and sent once per
-- batch; only the job hash itself is written per job. Running the same call
-- again (same ids, after a lost reply) adds nothing and answers the same.
local now = now_ms()
local out = {now}
-- Numbers go to Redis as strings, formatted once: Redis converts Lua
-- numbers passed to redis.call slowly.
local now_s = num(now)
local ready, scheduled, by_tenant = {}, {}, {}
-- Fair-share sequence state, read once per queue and tenant in the batch.
local clocks, lasts = {}, {}
local function next_seq(q, tenant)
  local l = lasts[q]
  if not l then
    l = {}
    lasts[q] = l
    clocks[q] = tonumber(redis.call('GET', qkey(q, 'clock')) or '0')
  end
  local last = l[tenant]
  if not last then
    last = tonumber(redis.call('HGET', qkey(q, 'fair'), tenant) or '0')
  end
  local s = math.max(last, clocks[q]) + 1
  l[tenant] = s
  return s
end
for i = 2, ARGV_END, 10 do
  local id, tenant, task, queue = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local priority, timeout, unique = ARGV[i + 4], ARGV[i + 7], ARGV[i + 8]
  local holder, uk = nil, nil
  if unique ~= '' then
    uk = ukey(tenant, task, unique)
    holder = redis.call('GET', uk)
  end
  if holder == id or redis.call('EXISTS', jkey(id)) == 1 then
    -- This very job, stored by an earlier run of this call.
    out[#out + 1] = id
    out[#out + 1] = 1
  elseif holder then
    out[#out + 1] = holder
    out[#out + 1] = 0
  else
    local delay = tonumber(ARGV[i + 9])
    local run_at = now + math.max(delay, 0)
    local run_at_s = now_s
    if delay > 0 then run_at_s = num(run_at) end
    local state = 'queued'
    if delay > 0 then state = 'scheduled' end
    local key = jkey(id)
    local seq = 0
    if state == 'queued' then
      seq = next_seq(queue, tenant)
    end
    redis.call('HSET', key, 'id', id, 'tenant', tenant, 'task', task, 'queue', queue,
      'state', state, 'priority', priority, 'payload', ARGV[i + 5], 'attempts', '0', 'base', '0',
      'max_retries', ARGV[i + 6], 'created_at', now_s, 'run_at', run_at_s, 'seq', num(seq))
    if timeout ~= '' then
      redis.call('HSET', key, 'timeout_ms', timeout)
    end
    if uk then
      redis.call('HSET', key, 'unique_key', unique)
      redis.call('SET', uk, id)
    end
    if state == 'scheduled' then
      push(scheduled, queue, run_at_s, id)
    else
      push(ready, queue, (9 - tonumber(priority)) * SEQ + seq, id)
    end
    push(by_tenant, tenant, '0', id)
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
for q, members in pairs(ready) do
  flush('ZADD', qkey(q, 'ready'), members, 2)
  redis.call('SADD', P .. ':queues', q)
  -- Wake idle workers once per queue that got work.
  redis.call('PUBLISH', P .. ':wake', q)
end
for q, l in pairs(lasts) do
  local fields = {}
  for tenant, seq in pairs(l) do
    fields[#fields + 1] = tenant
    fields[#fields + 1] = num(seq)
  end
  flush('HSET', qkey(q, 'fair'), fields, 2)
end
for q, members in pairs(scheduled) do
  flush('ZADD', qkey(q, 'scheduled'), members, 2)
  redis.call('SADD', P .. ':queues', q)
end
for tenant, members in pairs(by_tenant) do
  flush('ZADD', P .. ':list:t:' .. tenant, members, 2)
  redis.call('SADD', P .. ':tenants', tenant)
end
return out
