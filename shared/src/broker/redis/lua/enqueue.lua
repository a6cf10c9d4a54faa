-- ARGV: P, then groups of jobs that share their attributes: tenant, task,
-- queue, priority, max_retries, timeout_ms ('' for none), unique_key ('' for
-- none), serial_key ('' for none), delay_ms, n, then n pairs of id and payload (JSON text). Flat
-- arguments, and each attribute once per group rather than once per job:
-- every argument costs Redis a conversion into Lua and back.
-- Returns {now, k_1, holder_1, ...}: the jobs not created, by their place in
-- the call (1-based), with the id of the job that holds their unique key.
-- Every other job is stored. All jobs or none: a script runs atomically.
-- Index and set updates are gathered and sent once per batch; only the job
-- hash itself is written per job, in three fields (four when delayed):
-- `spec` (the attributes that never change, built once per group), `state`,
-- `payload` (and `run_at`); readers take a missing `attempts` or `base` as
-- 0 and a missing `run_at` as created_at. The job's fair-share place lives
-- in its ready score only.
-- Running the same call again (same ids, after a lost reply) adds nothing
-- and answers the same: a call of many jobs leaves a marker under its first
-- job's id for a while, and only a call that finds its marker (a repeat)
-- looks up each job; a small call always looks them up.
local now = now_ms()
local out = {now}
-- Numbers go to Redis as strings, formatted once: Redis converts Lua
-- numbers passed to redis.call slowly.
local now_s = num(now)
local ready, scheduled, by_tenant = {}, {}, {}
-- Queues and tenants to add to the registries (P:queues, P:tenants).
-- Nothing removes a queue, a tenant or a tenant's fair-share entry, so a
-- tenant that already has an entry in a queue's `fair` hash has both
-- registered: only a first job (or a delayed one) pays for the SADDs.
local new_queues, new_tenants = {}, {}
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
    last = redis.call('HGET', qkey(q, 'fair'), tenant)
    if not last then
      new_queues[q], new_tenants[tenant] = true, true
    end
    last = tonumber(last or '0')
  end
  local s = math.max(last, clocks[q]) + 1
  l[tenant] = s
  return s
end
local checked = true
if ARGV_END > 2 + 10 + 2 * 8 then
  checked = not redis.call('SET', P .. ':call:' .. ARGV[12], '1', 'NX', 'PX', '600000')
end
local i, k = 2, 0
while i <= ARGV_END do
  local tenant, task, queue, priority = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local max_retries, timeout, unique = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local serial = ARGV[i + 7]
  local delay = tonumber(ARGV[i + 8])
  local n = tonumber(ARGV[i + 9])
  local delayed = delay > 0
  local run_at_s, state = now_s, 'queued'
  if delayed then
    run_at_s, state = num(now + delay), 'scheduled'
  end
  local rank = (9 - tonumber(priority)) * SEQ
  local job_spec = table.concat({tenant, task, queue, priority, max_retries, timeout, now_s, unique}, '\n')
  local j = i + 10
  i = j + 2 * n
  for p = j, i - 1, 2 do
    k = k + 1
    local id = ARGV[p]
    local holder, uk = nil, nil
    if unique ~= '' then
      uk = ukey(tenant, task, unique)
      holder = redis.call('GET', uk)
    end
    if holder == id or (checked and redis.call('EXISTS', jkey(id)) == 1) then
      -- This very job, stored by an earlier run of this call.
    elseif holder then
      out[#out + 1] = k
      out[#out + 1] = holder
    else
      local key = jkey(id)
      if serial ~= '' then
        -- A lane member: claimable (or scheduled) only as the lane's head.
        if delayed then
          redis.call('HSET', key, 'spec', job_spec, 'state', state, 'payload', ARGV[p + 1],
            'run_at', run_at_s)
        else
          redis.call('HSET', key, 'spec', job_spec, 'state', state, 'payload', ARGV[p + 1])
        end
        new_queues[queue], new_tenants[tenant] = true, true
        if lane_join(queue, id, tenant, serial) then
          if delayed then
            push(scheduled, queue, run_at_s, id)
          else
            push(ready, queue, rank + next_seq(queue, tenant), id)
          end
        end
      elseif delayed then
        redis.call('HSET', key, 'spec', job_spec, 'state', state, 'payload', ARGV[p + 1],
          'run_at', run_at_s)
        push(scheduled, queue, run_at_s, id)
        new_queues[queue], new_tenants[tenant] = true, true
      else
        local seq = next_seq(queue, tenant)
        redis.call('HSET', key, 'spec', job_spec, 'state', state, 'payload', ARGV[p + 1])
        push(ready, queue, rank + seq, id)
      end
      if uk then
        redis.call('SET', uk, id)
      end
      push(by_tenant, tenant, '0', id)
    end
  end
end
for q, members in pairs(ready) do
  flush('ZADD', qkey(q, 'ready'), members, 2)
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
end
for tenant, members in pairs(by_tenant) do
  flush('ZADD', P .. ':list:t:' .. tenant, members, 2)
end
for q in pairs(new_queues) do
  redis.call('SADD', P .. ':queues', q)
end
for tenant in pairs(new_tenants) do
  redis.call('SADD', P .. ':tenants', tenant)
end
return out
