-- ARGV: P, workflow id, tenant ('' = any), retention_ms. Cancels every
-- unfinished step at once (a running one loses its lease and its permit,
-- as cancel.lua does for one job); the workflow ends `cancelled`.
-- Returns 'ok', 'missing', or the state of a workflow that had ended.
local wk = wf_key(ARGV[2])
local w = redis.call('HMGET', wk, 'tenant', 'state', 'steps')
if not w[1] or (ARGV[3] ~= '' and w[1] ~= ARGV[3]) then
  return 'missing'
end
if w[2] ~= 'running' then
  return w[2]
end
redis.call('HSET', wk, 'cancel', '1')
local now = now_ms()
local retention = tonumber(ARGV[4])
for id in string.gmatch(w[3] or '', '[^,]+') do
  local key = jkey(id)
  local f = redis.call('HMGET', key, 'state', 'spec', 'held', 'permit')
  local state = f[1]
  if state == 'waiting' or state == 'scheduled' or state == 'queued' or state == 'running'
    or state == 'retrying' then
    local tenant, task, q = spec(f[2])
    if state == 'queued' and f[3] then
      redis.call('ZREM', qkey(q, f[3]), id)
      redis.call('HDEL', key, 'held')
    else
      redis.call('ZREM', qkey(q, state == 'queued' and 'ready' or state), id)
    end
    if state == 'running' then
      if f[4] == '1' or f[4] == '2' then
        release_permit(id, task, tenant, f[4])
      end
      record_attempt(key, now, 'cancelled', nil)
    end
    redis.call('HSET', key, 'error', 'workflow cancelled')
    finish(q, id, 'cancelled', now, retention)
  end
end
wf_release(now, ARGV[4], ARGV[4])
return 'ok'
