-- ARGV: P, queue, id, attempt, progress JSON. Fenced; returns 1 if stored.
if holds(ARGV[2], ARGV[3], ARGV[4]) then
  redis.call('HSET', jkey(ARGV[2], ARGV[3]), 'progress', ARGV[5])
  return 1
end
return 0
