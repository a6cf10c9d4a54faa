-- ARGV: P, queue. Deletes the queue's waiting jobs (scheduled, queued,
-- retrying) and frees their unique keys. Returns how many.
local q = ARGV[2]
local n = 0
local sets = {'ready', 'scheduled', 'retrying'}
for _, suffix in ipairs(redis.call('SMEMBERS', qkey(q, 'holds'))) do
  table.insert(sets, suffix)
end
redis.call('DEL', qkey(q, 'holds'))
for _, set in ipairs(sets) do
  for _, id in ipairs(redis.call('ZRANGE', qkey(q, set), 0, -1)) do
    release_unique(q, id)
    redis.call('DEL', jkey(id))
    n = n + 1
  end
  redis.call('DEL', qkey(q, set))
end
return n
