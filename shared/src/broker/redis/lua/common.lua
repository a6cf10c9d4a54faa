-- Helpers shared by every script (prepended to each). Keys:
--   P:{q:NAME}:ready      ZSET  score 9 - priority; ids are UUIDv7, so equal
--                               scores order by id = oldest first
--   P:{q:NAME}:scheduled  ZSET  score run_at (ms)
--   P:{q:NAME}:retrying   ZSET  score run_at (ms)
--   P:{q:NAME}:running    ZSET  score lease deadline (ms, Redis time)
--   P:{q:NAME}:succeeded|failed|cancelled  ZSET  score finished_at
--   P:{q:NAME}:paused     STRING present while paused
--   P:j:ID                HASH  the job (its `queue` field names its sets)
--   P:uniq:TENANT:TASK:KEY STRING id of the unfinished job holding the key
--   P:list:t:TENANT       ZSET  score 0, members ids (lexical = time order)
--   P:tenants             SET   tenants with listed jobs
--   P:queues              SET   every queue that ever had a job or a flag
local P = ARGV[1]

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

local function qkey(q, suffix)
  return P .. ':{q:' .. q .. '}:' .. suffix
end

local function jkey(id)
  return P .. ':j:' .. id
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
  local f = redis.call('HMGET', jkey(id), 'tenant', 'task', 'unique_key')
  release_unique_of(id, f[1], f[2], f[3])
end

-- Moves a job to a terminal state. `extra` holds more fields to set (the
-- result, for one). The hash and lookup key expire after the retention;
-- the maintenance pass trims the terminal sets.
local function finish_with(q, id, state, now, retention, tenant, task, key, extra)
  release_unique_of(id, tenant, task, key)
  local key_j = jkey(id)
  if extra then
    redis.call('HSET', key_j, 'state', state, 'finished_at', now, 'owner', '', extra[1], extra[2])
  else
    redis.call('HSET', key_j, 'state', state, 'finished_at', now, 'owner', '')
  end
  redis.call('ZADD', qkey(q, state), now, id)
  redis.call('PEXPIRE', key_j, retention)
end

local function finish(q, id, state, now, retention)
  local f = redis.call('HMGET', jkey(id), 'tenant', 'task', 'unique_key')
  finish_with(q, id, state, now, retention, f[1], f[2], f[3], nil)
end

-- Makes a job claimable.
local function make_ready(q, id)
  local prio = tonumber(redis.call('HGET', jkey(id), 'priority') or '5')
  redis.call('HSET', jkey(id), 'state', 'queued', 'owner', '')
  redis.call('ZADD', qkey(q, 'ready'), 9 - prio, id)
end

-- Due scheduled and retrying jobs of queue q become ready, at most `limit`.
local function promote(q, now, limit)
  local moved = 0
  for _, set in ipairs({'scheduled', 'retrying'}) do
    local due = redis.call('ZRANGEBYSCORE', qkey(q, set), '-inf', now, 'LIMIT', 0, limit)
    for _, id in ipairs(due) do
      redis.call('ZREM', qkey(q, set), id)
      make_ready(q, id)
      moved = moved + 1
    end
  end
  return moved
end

-- The job's queue when it is running at attempt a (the fencing check), else nil.
local function holds(id, a)
  local f = redis.call('HMGET', jkey(id), 'state', 'attempts', 'queue')
  if f[1] == 'running' and f[2] == tostring(a) then
    return f[3]
  end
  return nil
end
