-- ARGV: P, lease_ms, leases (JSON array of [id, attempt]).
-- Extends each lease still held; returns the ids of those that are not.
local lease = tonumber(ARGV[2])
local now = now_ms()
local until_s = num(now + lease)
local lost = {}
for _, l in ipairs(cjson.decode(ARGV[3])) do
  local id, a = l[1], l[2]
  local q, task, tenant, kind = holds(id, a)
  if q then
    redis.call('ZADD', qkey(q, 'running'), 'XX', until_s, id)
    if task then
      redis.call('ZADD', semkey(task), 'XX', until_s, id)
      if kind == '2' then
        redis.call('ZADD', semkey(task, tenant), 'XX', until_s, id)
      end
    end
  else
    table.insert(lost, id)
  end
end
return lost
