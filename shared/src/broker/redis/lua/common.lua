-- Helpers shared by every script (prepended to each). Keys:
--   P:{q:NAME}:ready      ZSET  score 9 - priority; ids are UUIDv7, so equal
--                               scores order by id = oldest first
--   P:{q:NAME}:scheduled  ZSET  score run_at (ms)
--   P:{q:NAME}:retrying   ZSET  score run_at (ms)
--   P:{q:NAME}:running    ZSET  score lease deadline (ms, Redis time)
--   P:{q:NAME}:succeeded|failed|cancelled  ZSET  score finished_at
--   P:{q:NAME}:paused     STRING present while paused
--   P:{q:NAME}:j:ID       HASH  the job
--   P:ids:ID              STRING the job's queue (lookup by id)
--   P:uniq:TENANT:TASK:KEY STRING id of the unfinished job holding the key
--   P:list:all, P:list:t:TENANT  ZSET score 0, members ids (lexical = time order)
--   P:queues              SET   every queue that ever had a job or a flag
local P = ARGV[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function qkey(q, suffix)
  return P .. ':{q:' .. q .. '}:' .. suffix
end

local function jkey(q, id)
  return P .. ':{q:' .. q .. '}:j:' .. id
end

local function ukey(tenant, task, key)
  return P .. ':uniq:' .. string.len(tenant) .. ':' .. tenant .. ':' .. string.len(task) .. ':' .. task .. ':' .. key
end

-- Frees the job's unique key if it still holds it.
local function release_unique(q, id)
  local f = redis.call('HMGET', jkey(q, id), 'tenant', 'task', 'unique_key')
  if f[3] and f[3] ~= '' then
    local k = ukey(f[1], f[2], f[3])
    if redis.call('GET', k) == id then
      redis.call('DEL', k)
    end
  end
end

-- Moves a job to a terminal state; its hash and lookup key expire after the
-- retention, and the terminal set forgets entries older than that.
local function finish(q, id, state, now, retention)
  release_unique(q, id)
  redis.call('HSET', jkey(q, id), 'state', state, 'finished_at', now, 'owner', '')
  local set = qkey(q, state)
  redis.call('ZADD', set, now, id)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now - retention)
  redis.call('PEXPIRE', jkey(q, id), retention)
  redis.call('PEXPIRE', P .. ':ids:' .. id, retention)
end

-- Makes a job claimable.
local function make_ready(q, id)
  local prio = tonumber(redis.call('HGET', jkey(q, id), 'priority') or '5')
  redis.call('HSET', jkey(q, id), 'state', 'queued', 'owner', '')
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

-- True when job id of queue q is running at attempt a (the fencing check).
local function holds(q, id, a)
  local f = redis.call('HMGET', jkey(q, id), 'state', 'attempts')
  return f[1] == 'running' and f[2] == tostring(a)
end
