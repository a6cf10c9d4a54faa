-- ARGV: P, jobs (JSON array). Each job: id, tenant, task, queue, priority,
-- payload (JSON text), max_retries, timeout_ms, unique_key, delay_ms.
-- Returns {now, id_or_holder_1, created_1, ...}. All jobs or none: a script
-- runs atomically. Index and set updates are gathered and sent once per
-- batch; only the job hash itself is written per job.
local jobs = cjson.decode(ARGV[2])
local now = now_ms()
local out = {now}
local ready, scheduled, by_tenant = {}, {}, {}
local ids, all = {}, {}
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
    redis.call('HSET', jkey(j.queue, j.id), unpack(fields))
    if state == 'scheduled' then
      push(scheduled, j.queue, run_at, j.id)
    else
      push(ready, j.queue, 9 - tonumber(j.priority), j.id)
    end
    table.insert(ids, P .. ':ids:' .. j.id)
    table.insert(ids, j.queue)
    table.insert(all, 0)
    table.insert(all, j.id)
    push(by_tenant, j.tenant, 0, j.id)
    table.insert(out, j.id)
    table.insert(out, 1)
  end
end
for q, members in pairs(ready) do
  flush('ZADD', qkey(q, 'ready'), members, 2)
  redis.call('SADD', P .. ':queues', q)
  -- Wake idle workers once per queue that got work.
  redis.call('PUBLISH', P .. ':wake', q)
end
for q, members in pairs(scheduled) do
  flush('ZADD', qkey(q, 'scheduled'), members, 2)
  redis.call('SADD', P .. ':queues', q)
end
for i = 1, #ids, 1000 do
  redis.call('MSET', unpack(ids, i, math.min(i + 999, #ids)))
end
if #all > 0 then
  flush('ZADD', P .. ':list:all', all, 2)
end
for tenant, members in pairs(by_tenant) do
  flush('ZADD', P .. ':list:t:' .. tenant, members, 2)
end
return out
