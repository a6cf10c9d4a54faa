-- GCRA rate limit, one atomic step shared by every API replica.
-- KEYS[1] = the limiter key; ARGV: count, period_ms.
-- Stores one "theoretical arrival time" (microseconds, Redis time) that
-- expires once the bucket is full again, so idle keys cost no memory.
-- Returns {allowed, remaining, retry_after_ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local count = tonumber(ARGV[1])
local interval = math.floor(tonumber(ARGV[2]) * 1000 / count)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - count * interval
if allow_at > now then
  return {0, 0, math.ceil((allow_at - now) / 1000)}
end
-- string.format keeps every digit: a Lua number passed as is would be
-- written with 14 significant digits and lose microseconds.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval), 0}
