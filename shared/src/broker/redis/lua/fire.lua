-- Prefixed to enqueue.lua: one schedule tick, enqueued at most once.
-- KEYS[1]: the tick's key (schedule and fire time); KEYS[2]: the
-- schedule's hash. ARGV: P, the job as enqueue.lua reads it (one group of
-- one job), then the job's id, the fire time (ms) and how long the tick's
-- key is kept (ms). Returns {} when the tick had fired, else what
-- enqueue.lua returns.
ARGV_END = #ARGV - 3
local id, fire_time, keep = ARGV[#ARGV - 2], ARGV[#ARGV - 1], ARGV[#ARGV]
if not redis.call('SET', KEYS[1], id, 'NX', 'PX', keep) then
  return {}
end
local last = tonumber(redis.call('HGET', KEYS[2], 'last_fire') or '0')
if tonumber(fire_time) > last then
  redis.call('HSET', KEYS[2], 'last_fire', fire_time, 'last_job', id)
end
