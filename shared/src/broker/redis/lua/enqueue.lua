-- ARGV: P, jobs (JSON array). Each job: id, tenant, task, queue, priority,
-- payload (JSON text), max_retries, timeout_ms, unique_key, delay_ms.
-- Returns {now, id_or_holder_1, created_1, ...}. All jobs or none: a script
-- runs atomically.
local jobs = cjson.decode(ARGV[2])
local now = now_ms()
local out = {now}
local woken = {}
local queues = {}
for _, j in ipairs(jobs) do
  local holder = nil
  local uk = nil
  if j.unique_key ~= cjson.null and j.unique_key ~= nil then
    uk = ukey(j.tenant, j.task, j.unique_key)
    holder = redis.call('GET', uk)
  end
  if holder then
    table.insert(out, holder)
    table.insert(out, 0)
  else
    local delay = tonumber(j.delay_ms) or 0
    local run_at = now + math.max(delay, 0)
    local state = 'queued'
    if delay > 0 then state = 'scheduled' end
    local key = jkey(j.queue, j.id)
    local fields = {'id', j.id, 'tenant', j.tenant, 'task', j.task, 'queue', j.queue, 'state', state,
      'priority', j.priority, 'payload', j.payload, 'attempts', 0, 'base', 0,
      'max_retries', j.max_retries, 'created_at', now, 'run_at', run_at}
    if j.timeout_ms ~= cjson.null and j.timeout_ms ~= nil then
      table.insert(fields, 'timeout_ms')
      table.insert(fields, j.timeout_ms)
    end
    if uk then
      table.insert(fields, 'unique_key')
      table.insert(fields, j.unique_key)
      redis.call('SET', uk, j.id)
    end
    redis.call('HSET', key, unpack(fields))
    if state == 'scheduled' then
      redis.call('ZADD', qkey(j.queue, 'scheduled'), run_at, j.id)
    else
      redis.call('ZADD', qkey(j.queue, 'ready'), 9 - tonumber(j.priority), j.id)
      woken[j.queue] = true
    end
    redis.call('SET', P .. ':ids:' .. j.id, j.queue)
    redis.call('ZADD', P .. ':list:all', 0, j.id)
    redis.call('ZADD', P .. ':list:t:' .. j.tenant, 0, j.id)
    queues[j.queue] = true
    table.insert(out, j.id)
    table.insert(out, 1)
  end
end
for q, _ in pairs(queues) do
  redis.call('SADD', P .. ':queues', q)
end
-- Wake idle workers once per queue that got work.
for q, _ in pairs(woken) do
  redis.call('PUBLISH', P .. ':wake', q)
end
return out
