-- ARGV: P, id, tenant ('' = any). Queues a failed or cancelled job
-- again with a fresh retry budget (base = attempts; attempts keeps counting,
-- it is the fencing token). Returns 'ok', 'missing', 'unique' or the state.
local id = ARGV[2]
local key = jkey(id)
local f = redis.call('HMGET', key, 'state', 'spec', 'attempts')
local tenant, task, q, _, _, _, _, unique = spec(f[2])
if not f[1] or (ARGV[3] ~= '' and tenant ~= ARGV[3]) then
  return 'missing'
end
if f[1] ~= 'failed' and f[1] ~= 'cancelled' then
  return f[1]
end
if redis.call('HEXISTS', key, 'wf') == 1 then
  -- A workflow step is retried with its workflow.
  return 'step'
end
if unique and unique ~= '' then
  local uk = ukey(tenant, task, unique)
  if redis.call('EXISTS', uk) == 1 then
    return 'unique'
  end
  redis.call('SET', uk, id)
end
redis.call('ZREM', qkey(q, f[1]), id)
redis.call('PERSIST', key)
redis.call('HSET', key, 'base', f[3] or '0', 'run_at', num(now_ms()))
redis.call('HDEL', key, 'result', 'progress', 'started_at', 'finished_at')
local serial = redis.call('HGET', key, 'sk')
if serial and not lane_join(q, id, tenant, serial) then
  -- The lane moved on: a retried member joins at its tail, parked.
  redis.call('HSET', key, 'state', 'queued')
  return 'ok'
end
make_ready(q, id, true)
redis.call('PUBLISH', P .. ':wake', q)
return 'ok'
