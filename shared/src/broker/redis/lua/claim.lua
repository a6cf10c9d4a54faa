-- ARGV: P, worker, lease_ms, limit, limits (JSON from Limits::encoded, ''
-- for none), tasks (JSON array of the tasks the claimer has handlers for,
-- '' for any), queue_1 .. queue_n (in the order to serve).
-- Promotes due jobs, then leases up to `limit` jobs across the queues,
-- skipping paused ones. The attempt is counted here, so a job that kills
-- its worker still uses up its retries. Returns flat rows of 6 fields: id,
-- spec (the caller reads the job's attributes there), payload, attempt,
-- base, and how long the job waited since it was due (ms; '' when it was
-- never delayed: the caller counts from the id's time).
--
-- Flow control happens here, in the same step as the lease: a job of a
-- capped task takes a permit (a member of P:sem:T scored by its lease
-- deadline, so a dead worker's permit lapses with its lease); a job that
-- a cap or rate refuses is parked in a held set without using an attempt
-- and the claim looks further down the queue. A job of a task the claimer
-- has no handler for is parked the same way (idle_suffix), for a claimer
-- that has it.
local worker = ARGV[2]
local lease = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local limits = nil
if ARGV[5] ~= '' then
  limits = cjson.decode(ARGV[5])
end
local handles = nil
if ARGV[6] ~= '' then
  handles = {}
  for _, task in ipairs(cjson.decode(ARGV[6])) do
    handles[task] = true
  end
end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local deadline = now + lease
-- Numbers go to Redis as strings, formatted once (see enqueue.lua).
local now_s, deadline_s = num(now), num(deadline)
local out = {}

-- Per call caches: permits in use and rate state per task; permits taken
-- (per semaphore key), added together at the end.
local counts, tats, rated, taken = {}, {}, {}, {}
local function in_use(key)
  local c = counts[key]
  if not c then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    c = redis.call('ZCARD', key)
    counts[key] = c
  end
  return c
end

-- nil when the job may start (its permits are then taken); otherwise the
-- held set to park it in and, for a rate refusal, when to look again (ms).
local function admit(task, tenant, id)
  local l = limits[task]
  if not l then
    return nil
  end
  local cap, tcap, interval, burst = l[1], l[2], l[3], l[4]
  if tcap >= 0 and in_use(semkey(task, tenant)) >= tcap then
    return held_suffix(task, tenant)
  end
  if cap >= 0 and in_use(semkey(task)) >= cap then
    return held_suffix(task)
  end
  if interval > 0 then
    local tat = tats[task]
    if not tat then
      tat = tonumber(redis.call('GET', P .. ':rate:' .. lenc(task)) or '0')
    end
    local ok, new_tat, _, wait = gcra(tat, now_us, interval, burst, 1)
    if ok == 0 then
      return held_suffix(task), math.ceil((now_us + wait) / 1000)
    end
    tats[task] = new_tat
    rated[task] = l
  end
  -- Every running job of a capped task is listed in P:sem:T (so operators
  -- see the holders); the count there binds only with a task cap.
  if cap >= 0 or tcap >= 0 then
    local k = semkey(task)
    if cap >= 0 then
      counts[k] = in_use(k) + 1
    end
    push(taken, k, deadline_s, id)
  end
  if tcap >= 0 then
    local k = semkey(task, tenant)
    counts[k] = in_use(k) + 1
    push(taken, k, deadline_s, id)
  end
  return nil
end

-- The task and tenant a held set's suffix names ('held:' .. lenc(task)
-- [.. ':' .. lenc(tenant)]).
local function parse_suffix(suffix)
  local colon = string.find(suffix, ':', 6, true)
  local n = tonumber(string.sub(suffix, 6, colon - 1))
  local task = string.sub(suffix, colon + 1, colon + n)
  local rest = colon + n + 1
  if rest > string.len(suffix) then
    return task, nil
  end
  local colon2 = string.find(suffix, ':', rest + 1, true)
  local m = tonumber(string.sub(suffix, rest + 1, colon2 - 1))
  return task, string.sub(suffix, colon2 + 1, colon2 + m)
end

-- How many held jobs of a set the limits in force would look at now: all
-- of them for a task no longer limited (or a raised cap), none while the
-- cap is full or the rate refuses.
local function room(task, tenant)
  local l = limits and limits[task]
  if not l then
    return 1000000
  end
  if tenant then
    if l[2] < 0 then
      return 1000000
    end
    return l[2] - in_use(semkey(task, tenant))
  end
  local r = 1000000
  if l[1] >= 0 then
    r = l[1] - in_use(semkey(task))
  end
  if l[3] > 0 then
    -- Starts the rate allows right now (GCRA): the burst, less what the
    -- stored arrival time has used up.
    local tat = tats[task] or tonumber(redis.call('GET', P .. ':rate:' .. lenc(task)) or '0')
    local allowed = math.floor((now_us + l[4] * l[3] - math.max(tat, now_us)) / l[3])
    r = math.min(r, allowed)
  end
  return r
end

-- Brings back held jobs that the limits in force would admit, up to n per
-- held set, and jobs waiting for a handler this claimer has. Returns how
-- many came back.
local function refill(q, n)
  local moved = 0
  for _, suffix in ipairs(redis.call('SMEMBERS', qkey(q, 'holds'))) do
    local task, tenant = parse_suffix(suffix)
    if is_idle(suffix) then
      tenant = nil
    end
    if not is_idle(suffix) or not handles or handles[task] then
      local r = math.min(room(task, tenant), n)
      if r > 0 then
        moved = moved + unhold(q, suffix, r)
      end
    end
  end
  return moved
end

if limits then
  -- Rates that allow one more start now release one parked job each.
  local woken = redis.call('ZRANGEBYSCORE', P .. ':wakeups', '-inf', now, 'LIMIT', 0, 50)
  for _, m in ipairs(woken) do
    redis.call('ZREM', P .. ':wakeups', m)
    local q, suffix = string.match(m, '^([^\n]*)\n(.*)$')
    if q then
      unhold(q, suffix, 1)
    end
  end
end

for i = 7, #ARGV do
  if want <= 0 then break end
  local q = ARGV[i]
  -- Redis drops empty sets, so one call tells a queue with nothing
  -- waiting in it (a worker serves every declared queue; most are empty).
  local busy = redis.call('EXISTS', qkey(q, 'ready'), qkey(q, 'scheduled'),
    qkey(q, 'retrying'), qkey(q, 'holds')) > 0
  if busy then
    promote(q, now, 100)
  end
  if busy and redis.call('EXISTS', qkey(q, 'paused')) == 0 then
    local leased = {}
    local top = 0
    -- Jobs looked at in this queue, parked ones included: bounded, so a
    -- long run of refused jobs costs one claim a fixed amount.
    local budget = want + 64
    -- Held jobs the limits in force now admit (a permit freed elsewhere, a
    -- raised cap, a limit removed) come back first, in their old place.
    local holds = redis.call('SCARD', qkey(q, 'holds'))
    if holds > 0 then
      refill(q, want)
    end
    -- With no held set there is nothing to refill from: an empty queue
    -- then costs no further call.
    local refilled = holds == 0
    while want > 0 and budget > 0 do
      local popped = redis.call('ZPOPMIN', qkey(q, 'ready'), math.min(want, budget))
      if #popped == 0 then
        if refilled or refill(q, want) == 0 then break end
        refilled = true
      end
      for n = 1, #popped, 2 do
        local id, score = popped[n], tonumber(popped[n + 1])
        budget = budget - 1
        local key = jkey(id)
        local f = redis.call('HMGET', key, 'spec', 'payload', 'base', 'attempts', 'run_at')
        -- A job whose hash is gone (purged meanwhile) is skipped.
        if f[1] then
          local parked, wake, task = nil, nil, nil
          if limits or handles then
            -- Only the first two lines of the spec: tenant and task.
            local tenant
            tenant, task = string.match(f[1], '^([^\n]*)\n([^\n]*)')
            if handles and not handles[task] then
              parked = idle_suffix(task)
            elseif limits then
              parked, wake = admit(task, tenant, id)
            end
          end
          if parked then
            hold(q, parked, task, score, id)
            if wake then
              redis.call('ZADD', P .. ':wakeups', 'LT', wake, q .. '\n' .. parked)
            end
          else
            local attempt = tonumber(f[4] or '0') + 1
            if limits then
              -- Which permits the job holds: '1' its task's, '2' also its tenant's.
              local l, permit = limits[task], ''
              if l and l[2] >= 0 then
                permit = '2'
              elseif l and l[1] >= 0 then
                permit = '1'
              end
              redis.call('HSET', key, 'attempts', tostring(attempt), 'state', 'running', 'started_at', now_s, 'owner', worker, 'permit', permit)
            else
              redis.call('HSET', key, 'attempts', tostring(attempt), 'state', 'running', 'started_at', now_s, 'owner', worker)
            end
            local seq = score % SEQ
            if seq > top then top = seq end
            local n = #leased
            leased[n + 1] = deadline_s
            leased[n + 2] = id
            n = #out
            out[n + 1] = id
            out[n + 2] = f[1]
            out[n + 3] = f[2]
            out[n + 4] = attempt
            out[n + 5] = f[3] or '0'
            out[n + 6] = f[5] and num(math.max(0, now - tonumber(f[5]))) or ''
            want = want - 1
          end
        end
      end
    end
    if #leased > 0 then
      flush('ZADD', qkey(q, 'running'), leased, 2)
    end
    if top > 0 then
      -- The queue's round has reached `top`: tenants arriving now start there.
      local clock = tonumber(redis.call('GET', qkey(q, 'clock')) or '0')
      if top > clock then
        redis.call('SET', qkey(q, 'clock'), num(top))
      end
    end
  end
end

for k, members in pairs(taken) do
  flush('ZADD', k, members, 2)
end

-- Store the rates' new state; while jobs of a rated task wait, come back
-- for one of them when the rate allows its next start.
for task, l in pairs(rated) do
  local tat = tats[task]
  redis.call('SET', P .. ':rate:' .. lenc(task), num(tat), 'PX', math.ceil((tat - now_us) / 1000) + 1)
  local next_ms = math.ceil((tat + l[3] - l[4] * l[3]) / 1000)
  for _, q in ipairs(redis.call('SMEMBERS', P .. ':heldq:' .. lenc(task))) do
    if redis.call('EXISTS', qkey(q, held_suffix(task))) == 1 then
      redis.call('ZADD', P .. ':wakeups', 'LT', math.max(next_ms, now), q .. '\n' .. held_suffix(task))
    end
  end
end
return out
