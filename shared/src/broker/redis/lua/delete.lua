-- ARGV: P, tenant ('' = any), id_1 .. id_n. Deletes the finished
-- (succeeded, failed, cancelled) jobs among the ids that the tenant may
-- see; unfinished ones are left alone. The listing indexes drop the ids
-- lazily (a listing skips and removes ids whose hash is gone). Returns how
-- many were deleted.
local deleted = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = jkey(id)
  local f = redis.call('HMGET', key, 'state', 'spec')
  -- (A workflow step goes with its workflow, never alone.)
  if (f[1] == 'succeeded' or f[1] == 'failed' or f[1] == 'cancelled')
    and redis.call('HEXISTS', key, 'wf') == 0 then
    local tenant, _, q = spec(f[2])
    if ARGV[2] == '' or tenant == ARGV[2] then
      redis.call('ZREM', qkey(q, f[1]), id)
      redis.call('DEL', key)
      deleted = deleted + 1
    end
  end
end
return deleted
