-- ARGV: P, workflow id, tenant ('' = any). Puts an ended workflow's failed
-- and cancelled steps back: each with a fresh retry budget (base =
-- attempts), queued when none of its parents is among them, else waiting
-- for those; succeeded steps keep their results. Every step hash and the
-- record stop expiring. Returns 'ok', 'missing', 'running' or 'nothing'.
local wf = ARGV[2]
local wk = wf_key(wf)
local w = redis.call('HMGET', wk, 'tenant', 'state', 'steps')
if not w[1] or (ARGV[3] ~= '' and w[1] ~= ARGV[3]) then
  return 'missing'
end
if w[2] == 'running' then
  return 'running'
end
local again, ids = {}, {}
for id in string.gmatch(w[3] or '', '[^,]+') do
  ids[#ids + 1] = id
  local state = redis.call('HGET', jkey(id), 'state')
  if state == 'failed' or state == 'cancelled' then
    again[id] = state
  end
end
if next(again) == nil then
  return 'nothing'
end
local left = 0
for _, id in ipairs(ids) do
  redis.call('PERSIST', jkey(id))
  local state = again[id]
  if state then
    left = left + 1
    local key = jkey(id)
    local f = redis.call('HMGET', key, 'spec', 'attempts', 'pids', 'sk')
    local tenant, _, q = spec(f[1])
    redis.call('ZREM', qkey(q, state), id)
    local pending = 0
    for parent in string.gmatch(f[3] or '', '[^,]+') do
      if again[parent] then
        pending = pending + 1
      end
    end
    redis.call('HDEL', key, 'result', 'error', 'progress', 'started_at', 'finished_at', 'pfail',
      'skip', 'sk')
    redis.call('HSET', key, 'base', f[2] or '0', 'pending', pending, 'state', 'waiting')
    if f[4] then
      -- It joins its lane again when released.
      redis.call('HSET', key, 'wsk', f[4])
    end
    if pending == 0 then
      wf_ready(q, id, tenant)
    else
      redis.call('ZADD', qkey(q, 'waiting'), num(now_ms()), id)
    end
  end
end
redis.call('PERSIST', wk)
redis.call('HDEL', wk, 'finished_at', 'cancel')
redis.call('HSET', wk, 'state', 'running', 'left', left)
return 'ok'
