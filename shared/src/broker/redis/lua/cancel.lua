-- ARGV: P, id, tenant ('' = any), retention_ms.
-- Returns 'ok', 'missing', or the terminal state that forbids cancelling.
local id = ARGV[2]
local key = jkey(id)
local f = redis.call('HMGET', key, 'state', 'spec', 'held', 'permit')
local tenant, task, q = spec(f[2])
if not f[1] or (ARGV[3] ~= '' and tenant ~= ARGV[3]) then
  return 'missing'
end
local state = f[1]
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  return state
end
-- A running job loses its lease here; its worker learns at the next renewal.
if state == 'queued' and f[3] then
  redis.call('ZREM', qkey(q, f[3]), id)
  redis.call('HDEL', key, 'held')
else
  -- (A waiting step is in `waiting`, named by its state like the rest.)
  redis.call('ZREM', qkey(q, state == 'queued' and 'ready' or state), id)
end
if state == 'running' and (f[4] == '1' or f[4] == '2') then
  release_permit(id, task, tenant, f[4])
end
local now = now_ms()
if state == 'running' then
  record_attempt(key, now, 'cancelled', nil)
end
if redis.call('HEXISTS', key, 'wf') == 1 then
  -- A step cancelled by hand: a failed parent for its children.
  redis.call('HSET', key, 'error', 'cancelled by hand')
end
finish(q, id, 'cancelled', now, tonumber(ARGV[4]))
wf_release(now, ARGV[4], ARGV[4])
return 'ok'
