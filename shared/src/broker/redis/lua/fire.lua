-- Prefixed to enqueue.lua: one schedule tick, enqueued at most once.
-- KEYS[1]: the tick's key (schedule and fire time); KEYS[2]: the
-- schedule's hash. ARGV: P, the job's 10 values as enqueue.lua reads them,
-- then the fire time (ms) and how long the tick's key is kept (ms).
-- Returns {0} when the tick had fired, else what enqueue.lua returns.
ARGV_END = #ARGV - 2
local fire_time, keep = ARGV[#ARGV - 1], ARGV[#ARGV]
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', keep) then
  return {0}
end
local last = tonumber(redis.call('HGET', KEYS[2], 'last_fire') or '0')
if tonumber(fire_time) > last then
  redis.call('HSET', KEYS[2], 'last_fire', fire_time, 'last_job', ARGV[2])
end
