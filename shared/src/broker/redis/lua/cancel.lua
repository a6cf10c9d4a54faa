-- ARGV: P, queue, id, tenant ('' = any), retention_ms.
-- Returns 'ok', 'missing', or the terminal state that forbids cancelling.
local q, id = ARGV[2], ARGV[3]
local key = jkey(q, id)
local f = redis.call('HMGET', key, 'state', 'tenant')
if not f[1] or (ARGV[4] ~= '' and f[2] ~= ARGV[4]) then
  return 'missing'
end
local state = f[1]
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  return state
end
-- A running job loses its lease here; its worker learns at the next renewal.
redis.call('ZREM', qkey(q, state == 'queued' and 'ready' or state), id)
finish(q, id, 'cancelled', now_ms(), tonumber(ARGV[5]))
return 'ok'
