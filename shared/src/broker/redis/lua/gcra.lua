-- A keyed GCRA limiter (Coordination::admit), one atomic step shared by
-- every caller of this Redis. ARGV: P, key, interval_us, burst, cost.
-- Stores one theoretical arrival time (us, Redis time) under P:lim:KEY
-- that expires once the bucket is full again, so idle keys cost no memory.
-- Returns {allowed, remaining, retry_after_us}.
local k = P .. ':lim:' .. ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stored = tonumber(redis.call('GET', k) or '0')
local ok, tat, remaining, wait = gcra(stored, now, tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
if ok == 1 then
  -- string.format keeps every digit: a Lua number passed as is would be
  -- written with 14 significant digits and lose microseconds.
  redis.call('SET', k, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return {ok, remaining, wait}
