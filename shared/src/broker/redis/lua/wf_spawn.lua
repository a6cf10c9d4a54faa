-- ARGV: P, spawner job id, its attempt, n, max steps per workflow, then 13
-- values per new step, parents first (as wf_submit.lua, with full step
-- ids; the parents' ids are the spawn's own, the spawner is added here).
-- Fenced on the spawner's lease. Each new step waits for the spawner and
-- its spawn parents; every waiting dependent of the spawner now also waits
-- for all of them. Returns {'ok'}, {'same'} (every id exists: a rerun),
-- {'changed', step}, {'large', total}, {'plain'} (not a step), or
-- {'lost', state} (the lease is not held; state '' when the job is gone).
local sid, n = ARGV[2], tonumber(ARGV[4])
local sk = jkey(sid)
local f = redis.call('HMGET', sk, 'state', 'attempts', 'wf', 'step', 'spec', 'kids')
if f[1] ~= 'running' or f[2] ~= ARGV[3] then
  return {'lost', f[1] or ''}
end
if not f[3] then
  return {'plain'}
end
local wk = wf_key(f[3])
local steps = redis.call('HGET', wk, 'steps') or ''
local names, count = {}, 0
for id in string.gmatch(steps, '[^,]+') do
  count = count + 1
  names[redis.call('HGET', jkey(id), 'step') or ''] = true
end
local present = 0
for i = 0, n - 1 do
  if names[ARGV[6 + i * 13 + 1]] then
    present = present + 1
  end
end
if present == n then
  return {'same'}
end
if present > 0 then
  return {'changed', f[4]}
end
if count + n > tonumber(ARGV[5]) then
  return {'large', count + n}
end
local tenant = spec(f[5])
local now = now_ms()
local now_s = num(now)
local new, kids, fulls = {}, {}, {}
for i = 0, n - 1 do
  local b = 6 + i * 13
  local id = ARGV[b]
  new[#new + 1] = id
  fulls[#fulls + 1] = ARGV[b + 1]
  for parent in string.gmatch(ARGV[b + 12], '[^,]+') do
    local list = kids[parent]
    if not list then
      list = {}
      kids[parent] = list
    end
    list[#list + 1] = id
  end
end
local deps = {}
for kid in string.gmatch(f[6] or '', '[^,]+') do
  if redis.call('HGET', jkey(kid), 'state') == 'waiting' then
    deps[#deps + 1] = kid
  end
end
local queues = {}
for i = 0, n - 1 do
  local b = 6 + i * 13
  local id, q = ARGV[b], ARGV[b + 3]
  local job_spec = table.concat({tenant, ARGV[b + 4], q, ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], now_s, ''}, '\n')
  local pids = sid
  local pending = 1
  for parent in string.gmatch(ARGV[b + 12], '[^,]+') do
    pids = pids .. ',' .. parent
    pending = pending + 1
  end
  local mine = kids[id] or {}
  for _, d in ipairs(deps) do
    mine[#mine + 1] = d
  end
  local key = jkey(id)
  redis.call('HSET', key, 'spec', job_spec, 'payload', ARGV[b + 9], 'wf', f[3], 'step', ARGV[b + 1],
    'needs', ARGV[b + 10], 'opf', ARGV[b + 11], 'pids', pids, 'kids', table.concat(mine, ','),
    'pending', pending, 'state', 'waiting')
  if ARGV[b + 8] ~= '' then
    redis.call('HSET', key, 'wsk', ARGV[b + 8])
  end
  redis.call('ZADD', qkey(q, 'waiting'), now_s, id)
  redis.call('ZADD', P .. ':list:t:' .. tenant, 0, id)
  queues[q] = true
end
local joined = table.concat(new, ',')
redis.call('HSET', sk, 'kids', (f[6] and f[6] ~= '') and (f[6] .. ',' .. joined) or joined)
for _, d in ipairs(deps) do
  local g = redis.call('HMGET', jkey(d), 'pids', 'needs')
  local needs = cjson.decode(g[2] or '[]')
  for _, full in ipairs(fulls) do
    needs[#needs + 1] = full
  end
  redis.call('HSET', jkey(d), 'pids', (g[1] and g[1] ~= '') and (g[1] .. ',' .. joined) or joined,
    'needs', cjson.encode(needs))
  redis.call('HINCRBY', jkey(d), 'pending', n)
end
redis.call('HSET', wk, 'steps', steps .. ',' .. joined)
redis.call('HINCRBY', wk, 'left', n)
for q in pairs(queues) do
  redis.call('SADD', P .. ':queues', q)
end
return {'ok'}
