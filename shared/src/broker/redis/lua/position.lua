-- ARGV: P, id. Where a queued job waits: {held suffix or '', jobs ahead of
-- it in that set, jobs ahead of it in `ready` at a higher priority}.
local key = jkey(ARGV[2])
local f = redis.call('HMGET', key, 'spec', 'held')
local _, _, q, priority = spec(f[1])
if not q then
  return {'', 0, 0}
end
local set = f[2] or 'ready'
local rank = redis.call('ZRANK', qkey(q, set), ARGV[2]) or 0
local higher = redis.call('ZCOUNT', qkey(q, 'ready'), '-inf', '(' .. num((9 - tonumber(priority)) * SEQ))
return {f[2] or '', rank, higher}
