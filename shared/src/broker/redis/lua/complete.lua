-- ARGV: P, retention_ms of succeeded jobs, of failed ones, then 5 values
-- per completion: id, attempt, kind,
-- value, delay. kind 's' succeeded (value: result JSON), 'f' failed
-- (value: error, delay: retry delay ms or '' for no retry), 'r' released
-- (handed back unfinished), 'z' snoozed (value: reason, delay: ms; the
-- attempt is given back and the job waits as retrying). Flat arguments: no JSON to decode per job.
-- Each is fenced on (id, attempt). Returns the ids that were stale.
local now = now_ms()
-- Numbers go to Redis as strings, formatted once (see enqueue.lua).
local now_s = num(now)
local stale = {}
-- Set updates are gathered per queue and sent once at the end.
local unleased, succeeded, failed = {}, {}, {}
-- Permits to give back (per semaphore key) and how many freed per task
-- and tenant: as many waiting jobs get another look.
local permits, freed = {}, {}
local function finished(q, id, state, tenant, task, unique, field, value, into, history, had_history, step)
  release_unique_of(id, tenant, task, unique)
  lane_leave(id, tenant, now)
  local key = jkey(id)
  if state == 'succeeded' and not had_history then
    -- A first attempt that succeeds writes no history: the job's owner,
    -- started_at and finished_at are that attempt (the codec reads them so),
    -- and the hash stays small (Redis's compact encoding holds values up to
    -- 64 bytes; a history entry is longer).
    redis.call('HSET', key, 'state', state, 'finished_at', now_s, field, value)
  elseif state == 'succeeded' then
    -- An earlier attempt's error is history now, not the job's.
    redis.call('HSET', key, 'state', state, 'finished_at', now_s, 'owner', '', field, value,
      'history', history, 'error', '')
  else
    redis.call('HSET', key, 'state', state, 'finished_at', now_s, 'owner', '', field, value,
      'history', history)
  end
  if step then
    -- A workflow step: kept while its workflow runs; its children learn
    -- of its end below, in this same script.
    WF_ENDED[#WF_ENDED + 1] = id
  else
    redis.call('PEXPIRE', key, state == 'succeeded' and ARGV[2] or ARGV[3])
  end
  push(into, q, now_s, id)
end
for i = 4, #ARGV, 5 do
  local id, a, kind, value, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local key = jkey(id)
  -- One read serves the fencing check and what finishing needs.
  local f = redis.call('HMGET', key, 'state', 'attempts', 'base', 'spec', 'permit', 'owner',
    'started_at', 'history', 'wf')
  local tenant, task, q, _, max_retries, _, _, unique = spec(f[4])
  if f[1] ~= 'running' or f[2] ~= a then
    table.insert(stale, id)
  else
    push(unleased, q, id)
    if f[5] == '1' or f[5] == '2' then
      -- Permits are given back together at the end.
      push(permits, semkey(task), id)
      local fr = freed[task]
      if not fr then
        fr = {n = 0, tenants = {}}
        freed[task] = fr
      end
      fr.n = fr.n + 1
      if f[5] == '2' then
        push(permits, semkey(task, tenant), id)
        fr.tenants[tenant] = (fr.tenants[tenant] or 0) + 1
      end
    end
    if kind == 's' then
      local had_history = f[8] ~= false and f[8] ~= ''
      finished(q, id, 'succeeded', tenant, task, unique, 'result', value, succeeded,
        had_history and with_attempt(f[8], f[2], f[6], f[7], now, 'succeeded') or nil, had_history,
        f[9])
    elseif kind == 'r' then
      redis.call('HINCRBY', key, 'base', 1)
      redis.call('HSET', key, 'history', with_attempt(f[8], f[2], f[6], f[7], now, 'released'))
      make_ready(q, id, false)
    elseif kind == 'z' then
      -- Like a retry that does not count: the lane keeps its place.
      local run_at = num(now + tonumber(delay))
      redis.call('HINCRBY', key, 'base', 1)
      redis.call('HSET', key, 'state', 'retrying', 'run_at', run_at, 'owner', '', 'error', value,
        'history', with_attempt(f[8], f[2], f[6], f[7], now, 'snoozed', value))
      redis.call('ZADD', qkey(q, 'retrying'), run_at, id)
    else
      local used = tonumber(f[2]) - tonumber(f[3] or '0')
      if delay ~= '' and used <= tonumber(max_retries) then
        local run_at = num(now + tonumber(delay))
        redis.call('HSET', key, 'state', 'retrying', 'run_at', run_at, 'owner', '', 'error', value,
          'history', with_attempt(f[8], f[2], f[6], f[7], now, 'retried', value))
        redis.call('ZADD', qkey(q, 'retrying'), run_at, id)
      else
        finished(q, id, 'failed', tenant, task, unique, 'error', value, failed,
          with_attempt(f[8], f[2], f[6], f[7], now, 'failed', value), true, f[9])
      end
    end
  end
end
for q, ids in pairs(unleased) do flush('ZREM', qkey(q, 'running'), ids, 1) end
for k, ids in pairs(permits) do flush('ZREM', k, ids, 1) end
for task, fr in pairs(freed) do
  for _, q in ipairs(redis.call('SMEMBERS', P .. ':heldq:' .. lenc(task))) do
    unhold(q, held_suffix(task), fr.n)
    for tenant, n in pairs(fr.tenants) do
      unhold(q, held_suffix(task, tenant), n)
    end
  end
end
for q, members in pairs(succeeded) do flush('ZADD', qkey(q, 'succeeded'), members, 2) end
for q, members in pairs(failed) do flush('ZADD', qkey(q, 'failed'), members, 2) end
wf_release(now, ARGV[2], ARGV[3])
return stale
