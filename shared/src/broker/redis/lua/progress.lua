-- ARGV: P, id, attempt, progress JSON. Fenced; returns 1 if stored.
if holds(ARGV[2], ARGV[3]) then
  redis.call('HSET', jkey(ARGV[2]), 'progress', ARGV[4])
  return 1
end
return 0
