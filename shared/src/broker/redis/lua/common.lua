-- Helpers shared by the scripts: each script gets the ones it uses (see
-- with_helpers in mod.rs), prepended. Keys:
--   P:{q:NAME}:ready      ZSET  score (9 - priority) * SEQ + seq, where seq is
--                               the job's fair-share sequence in its tenant
--                               (see fair_seq): priority first, then round
--                               robin across tenants, then age
--   P:{q:NAME}:fair       HASH  tenant -> last seq given to it in this queue
--   P:{q:NAME}:clock      STRING seq of the latest job claimed from the queue
--   P:{q:NAME}:held:T[:U] ZSET  queued jobs of task T (tenant U) that a cap
--                               or rate refused at claim, with their ready
--                               score; one goes back to `ready` when a permit
--                               of T (of U) frees or the rate allows one more
--   P:{q:NAME}:holds      SET   the `held:...` suffixes in use in the queue
--   P:heldq:T             SET   queues that have held jobs of task T
--   P:sem:T[:U]           ZSET  permits: running jobs of task T (tenant U)
--                               that hold one, scored by lease deadline
--   P:rate:T              STRING GCRA theoretical arrival time (us) of task T
--   P:wakeups             ZSET  "QUEUE\nheld:T" -> when the rate allows task T
--                               again: one held job goes back then
--   P:{q:NAME}:scheduled  ZSET  score run_at (ms)
--   P:{q:NAME}:retrying   ZSET  score run_at (ms)
--   P:{q:NAME}:running    ZSET  score lease deadline (ms, Redis time)
--   P:{q:NAME}:succeeded|failed|cancelled  ZSET  score finished_at
--   P:{q:NAME}:paused     STRING present while paused
--   P:j:ID                HASH  the job: `spec` (its fixed attributes, see
--                               spec()), `state`, `payload`, `run_at` if
--                               delayed, then what running adds; no
--                               `attempts` or `base` means 0, no `run_at`
--                               means created_at
--   P:uniq:TENANT:TASK:KEY STRING id of the unfinished job holding the key
--   P:list:t:TENANT       ZSET  score 0, members ids (lexical = time order
--                               for weir's UUIDv7 ids; a caller's own ids,
--                               such as Celery task ids, sort anywhere)
--   P:tenants             SET   every tenant that ever had a job
--   P:list:at:TENANT      STRING where the sweep in maintain.lua goes on
--   P:list:above:TENANT   STRING where its sweep of ids above the current
--                               time goes on
--   P:list:scan           STRING SSCAN cursor of that sweep over P:tenants
--   P:call:ID             STRING marker of an enqueue call (ID: its first
--                               job), 10 minutes: a repeat is recognised
--   P:queues              SET   every queue that ever had a job or a flag
local P = ARGV[1]
-- Where a script's own arguments end (fire.lua keeps two after the job).
local ARGV_END = #ARGV

-- Runs `cmd key args...` with the accumulated args in chunks: one call
-- per chunk instead of one per job, and never past Lua's unpack limit.
local function flush(cmd, key, args, width)
  local chunk = 500 * width
  for i = 1, #args, chunk do
    local last = math.min(i + chunk - 1, #args)
    redis.call(cmd, key, unpack(args, i, last))
  end
end

-- Appends values to the list kept under `name` in table `t`.
local function push(t, name, a, b)
  local list = t[name]
  if not list then
    list = {}
    t[name] = list
  end
  local n = #list
  list[n + 1] = a
  if b ~= nil then list[n + 2] = b end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Ready scores: (9 - priority) * SEQ + seq; exact in a double while seq < SEQ.
local SEQ = 1e13

-- A name with its length in front, so names holding ':' cannot collide.
local function lenc(s)
  return string.len(s) .. ':' .. s
end

local function num(n)
  return string.format('%.0f', n)
end

local function qkey(q, suffix)
  return P .. ':{q:' .. q .. '}:' .. suffix
end

local function jkey(id)
  return P .. ':j:' .. id
end

-- A job's fixed attributes, written once at enqueue as its `spec` field,
-- one per line: tenant, task, queue, priority, max_retries, timeout_ms (''
-- for none), created_at, unique_key ('' for none; last, so it may hold any
-- byte). One field instead of eight: each hash field costs every enqueue.
-- Returns them in that order, or nothing for a missing job.
local function spec(s)
  if s then
    return string.match(s, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
  end
end

local function ukey(tenant, task, key)
  return P .. ':uniq:' .. string.len(tenant) .. ':' .. tenant .. ':' .. string.len(task) .. ':' .. task .. ':' .. key
end

-- Frees a unique key if job id still holds it (f: tenant, task, unique_key).
local function release_unique_of(id, tenant, task, key)
  if key and key ~= '' then
    local k = ukey(tenant, task, key)
    if redis.call('GET', k) == id then
      redis.call('DEL', k)
    end
  end
end

-- Frees the job's unique key if it still holds it.
local function release_unique(q, id)
  local tenant, task, _, _, _, _, _, key = spec(redis.call('HGET', jkey(id), 'spec'))
  release_unique_of(id, tenant, task, key)
end

-- `history` (the job's `history` field) with one more ended attempt, the
-- last 10 kept (MAX_HISTORY in shared/src/job/mod.rs). Entries are
-- {"a": attempt, "w": worker, "s": started ms, "f": finished ms, "o": outcome,
-- "e": error}. Built and appended as text: a job's first attempt (the
-- common case) costs no JSON decoding, and only strings from outside
-- (worker, error) are encoded.
local function with_attempt(history, attempt, worker, started, now, outcome, err)
  local entry = '{"a":' .. attempt .. ',"w":' .. cjson.encode(worker or '') ..
    ',"s":' .. ((started and started ~= '') and started or 'null') ..
    ',"f":' .. num(now) .. ',"o":"' .. outcome .. '"'
  if err and err ~= '' then
    entry = entry .. ',"e":' .. cjson.encode(err)
  end
  entry = entry .. '}'
  if not history or history == '' then
    return '[' .. entry .. ']'
  end
  local _, n = string.gsub(history, '{"a":', '')
  if n >= 10 then
    -- Drop the oldest entry: decode once, re-encode (rare: a job on its
    -- eleventh attempt).
    local h = cjson.decode(history)
    table.remove(h, 1)
    history = cjson.encode(h)
  end
  return string.sub(history, 1, -2) .. ',' .. entry .. ']'
end

-- Records the end of a running job's attempt in its history.
local function record_attempt(key, now, outcome, err)
  local f = redis.call('HMGET', key, 'attempts', 'owner', 'started_at', 'history')
  redis.call('HSET', key, 'history', with_attempt(f[4], f[1], f[2], f[3], now, outcome, err))
end

-- The next fair-share sequence number of `tenant` in queue q: one past the
-- later of the tenant's last one and the queue's clock (the seq of the
-- latest claimed job). A tenant that arrives while another has thousands
-- queued joins the current round instead of waiting behind all of them;
-- a tenant alone in its queue gets 1, 2, 3... (plain FIFO).
local function fair_seq(q, tenant)
  local last = tonumber(redis.call('HGET', qkey(q, 'fair'), tenant) or '0')
  local clock = tonumber(redis.call('GET', qkey(q, 'clock')) or '0')
  local s = math.max(last, clock) + 1
  redis.call('HSET', qkey(q, 'fair'), tenant, num(s))
  return s
end

-- Makes a job claimable. A `fresh` job (due after a delay, retried by
-- hand) takes a new place in the round. One handed back or reaped had
-- been claimed, so every job before it in its priority was too: it goes
-- back at the queue's clock (the place of the latest claimed job), ahead
-- of every job that was behind it. No per-job place is stored for that.
local function make_ready(q, id, fresh)
  local key = jkey(id)
  local tenant, _, _, priority = spec(redis.call('HGET', key, 'spec'))
  local seq
  if fresh then
    seq = fair_seq(q, tenant or '')
  else
    seq = tonumber(redis.call('GET', qkey(q, 'clock')) or '0')
  end
  redis.call('HSET', key, 'state', 'queued', 'owner', '')
  redis.call('ZADD', qkey(q, 'ready'), num((9 - tonumber(priority or '5')) * SEQ + seq), id)
end

-- Serial lanes. P:serial:TENANT:KEY is a ZSET of the lane's unfinished
-- members by place (P:serial:TENANT:KEY:n the last place given); the head
-- (lowest place) is claimable, the others are parked: field `sw` = '1' and
-- in P:{q:NAME}:parked, out of `ready`. A member leaves in its terminal
-- transition (or deletion), and the next head is made claimable then.
local function lane_key(tenant, key)
  return P .. ':serial:' .. lenc(tenant) .. ':' .. lenc(key)
end

-- Joins job id (stored, queued or scheduled) to its lane. True when it is
-- the head (the caller makes it claimable as usual), false when parked.
local function lane_join(q, id, tenant, key)
  local lk = lane_key(tenant, key)
  local place = redis.call('INCR', lk .. ':n')
  redis.call('ZADD', lk, place, id)
  redis.call('HSET', jkey(id), 'sk', key)
  if redis.call('ZCARD', lk) == 1 then
    return true
  end
  redis.call('HSET', jkey(id), 'sw', '1')
  redis.call('ZADD', qkey(q, 'parked'), place, id)
  return false
end

-- Makes the lane's head claimable if it is parked (due now, or scheduled).
local function lane_advance(tenant, key, now)
  local lk = lane_key(tenant, key)
  local head = redis.call('ZRANGE', lk, 0, 0)[1]
  if not head then
    redis.call('DEL', lk .. ':n')
    return
  end
  local hk = jkey(head)
  local f = redis.call('HMGET', hk, 'sw', 'state', 'spec', 'run_at')
  if f[1] ~= '1' then
    return
  end
  redis.call('HDEL', hk, 'sw')
  local _, _, q = spec(f[3])
  redis.call('ZREM', qkey(q, 'parked'), head)
  if f[2] == 'scheduled' and tonumber(f[4] or '0') > now then
    redis.call('ZADD', qkey(q, 'scheduled'), f[4], head)
  else
    make_ready(q, head, true)
    redis.call('PUBLISH', P .. ':wake', q)
  end
end

-- Job id (of `tenant`) leaves its lane, if it has one; the next may start.
local function lane_leave(id, tenant, now)
  local f = redis.call('HMGET', jkey(id), 'sk', 'sw', 'spec')
  if f[1] then
    if f[2] == '1' then
      -- A parked member cancelled by hand.
      local _, _, q = spec(f[3])
      redis.call('ZREM', qkey(q, 'parked'), id)
      redis.call('HDEL', jkey(id), 'sw')
    end
    redis.call('ZREM', lane_key(tenant, f[1]), id)
    lane_advance(tenant, f[1], now)
  end
end

-- Workflows. A step's hash also holds `wf` (its workflow's id), `step`,
-- `needs` (JSON), `pids` and `kids` (parent and child job ids,
-- comma-separated), `pending` (parents not yet ended), `opf` (cancel, skip
-- or run), `wsk` (its serial key while it waits: it joins the lane when
-- released), then `pfail` (the first parent that failed) and `skip` ('1').
--   P:wf:ID            HASH  tenant, name, state, created_at, finished_at,
--                            cancel ('1'), left (steps not ended), steps
--                            (job ids in submit order)
--   P:wfs:t:TENANT     ZSET  score 0, workflow ids (lexical = time order)
--   P:{q:NAME}:waiting ZSET  steps waiting for parents, score created_at
-- A step's hash does not expire while its workflow runs (its children
-- read its result); the workflow's end expires them all.
local function wf_key(id)
  return P .. ':wf:' .. id
end

-- Steps that reached a terminal state in this script; wf_release applies
-- their ends to their children before the script returns.
local WF_ENDED = {}

-- Ends a waiting step as cancelled (or skipped) without running it.
local function wf_end_waiting(q, id, now, err, skipped)
  redis.call('ZREM', qkey(q, 'waiting'), id)
  if skipped then
    redis.call('HSET', jkey(id), 'state', 'cancelled', 'finished_at', num(now), 'error', err, 'skip', '1')
  else
    redis.call('HSET', jkey(id), 'state', 'cancelled', 'finished_at', num(now), 'error', err)
  end
  redis.call('ZADD', qkey(q, 'cancelled'), num(now), id)
  WF_ENDED[#WF_ENDED + 1] = id
end

-- Queues a waiting step whose last parent ended: with a fresh fair-share
-- place, or parked in its serial lane, which it joins now.
local function wf_ready(q, id, tenant)
  local key = jkey(id)
  redis.call('ZREM', qkey(q, 'waiting'), id)
  redis.call('HDEL', key, 'error')
  local serial = redis.call('HGET', key, 'wsk')
  if serial then
    redis.call('HDEL', key, 'wsk')
    redis.call('HSET', key, 'state', 'queued')
    if not lane_join(q, id, tenant, serial) then
      return
    end
  end
  make_ready(q, id, true)
  redis.call('PUBLISH', P .. ':wake', q)
end

-- Records the end of workflow wf once no step is left: its derived state,
-- and every step hash and the record expire after the retention.
local function wf_settle(wf, now, ret_ok, ret_bad)
  local wk = wf_key(wf)
  local w = redis.call('HMGET', wk, 'left', 'cancel', 'steps', 'state')
  if not w[4] or w[4] ~= 'running' or tonumber(w[1] or '0') > 0 then
    return
  end
  local failed, cancelled = false, false
  local ids = {}
  for id in string.gmatch(w[3] or '', '[^,]+') do
    ids[#ids + 1] = id
    local s = redis.call('HMGET', jkey(id), 'state', 'skip')
    if s[1] == 'failed' then
      failed = true
    elseif s[1] == 'cancelled' and s[2] ~= '1' then
      cancelled = true
    end
  end
  local state = 'succeeded'
  if w[2] == '1' or (not failed and cancelled) then
    state = 'cancelled'
  elseif failed then
    state = 'failed'
  end
  redis.call('HSET', wk, 'state', state, 'finished_at', num(now))
  local ttl = state == 'succeeded' and ret_ok or ret_bad
  for _, id in ipairs(ids) do
    redis.call('PEXPIRE', jkey(id), ttl)
  end
  redis.call('PEXPIRE', wk, ttl)
  redis.call('PUBLISH', wk .. ':ev', state)
end

-- Applies the ends of the steps in WF_ENDED to their children, as a
-- worklist (a cascade of a 1,000-step chain is 1,000 turns, no recursion):
-- a child whose parent failed is cancelled at once (`cancel`), skipped
-- once its other parents ended (`skip`), or run anyway (`run`); a child
-- whose last parent ended is queued. Then settles the workflows touched.
local function wf_release(now, ret_ok, ret_bad)
  if #WF_ENDED == 0 then
    return
  end
  local touched = {}
  local i = 1
  while i <= #WF_ENDED do
    local id = WF_ENDED[i]
    i = i + 1
    local f = redis.call('HMGET', jkey(id), 'state', 'skip', 'kids', 'step', 'wf')
    if f[5] then
      touched[f[5]] = true
      redis.call('HINCRBY', wf_key(f[5]), 'left', -1)
      local ok = f[1] == 'succeeded' or f[2] == '1'
      for kid in string.gmatch(f[3] or '', '[^,]+') do
        local g = redis.call('HMGET', jkey(kid), 'state', 'opf', 'pfail', 'spec')
        if g[1] == 'waiting' then
          local left = redis.call('HINCRBY', jkey(kid), 'pending', -1)
          local pfail = g[3]
          if not ok and not pfail then
            pfail = f[4]
            redis.call('HSET', jkey(kid), 'pfail', pfail)
          end
          local tenant, _, q = spec(g[4])
          if pfail and g[2] ~= 'skip' and g[2] ~= 'run' then
            wf_end_waiting(q, kid, now, 'parent step `' .. pfail .. '` failed or was cancelled', false)
          elseif left <= 0 and pfail and g[2] == 'skip' then
            wf_end_waiting(q, kid, now, 'skipped', true)
          elseif left <= 0 then
            wf_ready(q, kid, tenant)
          end
        end
      end
    end
  end
  WF_ENDED = {}
  for wf in pairs(touched) do
    wf_settle(wf, now, ret_ok, ret_bad)
  end
end

-- Moves a job to a terminal state. `extra` holds more fields to set (the
-- result, for one). The hash and lookup key expire after the retention;
-- the maintenance pass trims the terminal sets.
local function finish_with(q, id, state, now, retention, tenant, task, key, extra)
  release_unique_of(id, tenant, task, key)
  lane_leave(id, tenant, now)
  local key_j = jkey(id)
  if extra then
    redis.call('HSET', key_j, 'state', state, 'finished_at', num(now), 'owner', '', extra[1], extra[2])
  else
    redis.call('HSET', key_j, 'state', state, 'finished_at', num(now), 'owner', '')
  end
  redis.call('ZADD', qkey(q, state), num(now), id)
  if redis.call('HEXISTS', key_j, 'wf') == 1 then
    -- A step: kept while its workflow runs; its children learn of its end.
    WF_ENDED[#WF_ENDED + 1] = id
  else
    redis.call('PEXPIRE', key_j, retention)
  end
end

local function finish(q, id, state, now, retention)
  local tenant, task, _, _, _, _, _, key = spec(redis.call('HGET', jkey(id), 'spec'))
  finish_with(q, id, state, now, retention, tenant, task, key, nil)
end

local function semkey(task, tenant)
  if tenant then
    return P .. ':sem:' .. lenc(task) .. ':' .. lenc(tenant)
  end
  return P .. ':sem:' .. lenc(task)
end

local function held_suffix(task, tenant)
  if tenant then
    return 'held:' .. lenc(task) .. ':' .. lenc(tenant)
  end
  return 'held:' .. lenc(task)
end

-- The set of queued jobs of task T that wait for a worker with T's handler
-- (parked like held jobs; only a claimer that has the handler, or one that
-- takes any task, brings them back).
local function idle_suffix(task)
  return 'idle:' .. lenc(task)
end

local function is_idle(suffix)
  return string.sub(suffix, 1, 5) == 'idle:'
end

-- Parks a queued job that a limit refused; its ready score comes back with it.
local function hold(q, suffix, task, score, id)
  redis.call('ZADD', qkey(q, suffix), score, id)
  redis.call('SADD', qkey(q, 'holds'), suffix)
  redis.call('SADD', P .. ':heldq:' .. lenc(task), q)
  redis.call('HSET', jkey(id), 'held', suffix)
end

-- Returns up to n held jobs to the head of their place in `ready`.
local function unhold(q, suffix, n)
  local popped = redis.call('ZPOPMIN', qkey(q, suffix), n)
  if #popped == 0 then
    return 0
  end
  local members = {}
  for i = 1, #popped, 2 do
    members[#members + 1] = popped[i + 1]
    members[#members + 1] = popped[i]
    redis.call('HDEL', jkey(popped[i]), 'held')
  end
  redis.call('ZADD', qkey(q, 'ready'), unpack(members))
  redis.call('PUBLISH', P .. ':wake', q)
  return #popped / 2
end

-- Frees the permits a running job holds (`kind` '1': the task's, '2':
-- also its tenant's) and lets one waiting job of its task, and one of its
-- tenant, be considered again.
local function release_permit(id, task, tenant, kind)
  redis.call('ZREM', semkey(task), id)
  if kind == '2' then
    redis.call('ZREM', semkey(task, tenant), id)
  end
  for _, q in ipairs(redis.call('SMEMBERS', P .. ':heldq:' .. lenc(task))) do
    unhold(q, held_suffix(task), 1)
    if kind == '2' then
      unhold(q, held_suffix(task, tenant), 1)
    end
  end
end

-- Due scheduled and retrying jobs of queue q become ready, at most `limit`.
local function promote(q, now, limit)
  local moved = 0
  for _, set in ipairs({'scheduled', 'retrying'}) do
    local due = redis.call('ZRANGEBYSCORE', qkey(q, set), '-inf', now, 'LIMIT', 0, limit)
    for _, id in ipairs(due) do
      redis.call('ZREM', qkey(q, set), id)
      make_ready(q, id, true)
      moved = moved + 1
    end
  end
  return moved
end

-- When the job is running at attempt a (the fencing check): its queue,
-- and its task and tenant when it holds a permit. Else nil.
local function holds(id, a)
  local f = redis.call('HMGET', jkey(id), 'state', 'attempts', 'spec', 'permit')
  if f[1] == 'running' and f[2] == tostring(a) then
    local tenant, task, queue = spec(f[3])
    if f[4] == '1' or f[4] == '2' then
      return queue, task, tenant, f[4]
    end
    return queue
  end
  return nil
end

-- GCRA, the one algorithm of shared/src/limit/gcra.rs, held to the same
-- table of cases: may `cost` events happen at `now` (us) given the stored
-- theoretical arrival time `tat`? Returns 1 or 0, the tat to store (when
-- allowed), the events still allowed, and the wait (us) when refused.
local function gcra(tat, now, interval, burst, cost)
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - burst * interval
  if allow_at > now then
    return 0, tat, 0, allow_at - now
  end
  return 1, new_tat, math.floor((now - allow_at) / interval), 0
end
