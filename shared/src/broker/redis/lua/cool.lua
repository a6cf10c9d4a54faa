-- Marks a key as cooling (Coordination::cool). ARGV: P, key, period_ms.
-- The key expires when the cooldown ends; a longer cooldown already in
-- place is kept, so two callers reporting one 429 never shorten it.
local k = P .. ':cool:' .. ARGV[2]
local period = tonumber(ARGV[3])
if redis.call('PTTL', k) < period then
  redis.call('SET', k, '1', 'PX', ARGV[3])
end
return 1
