-- ARGV: P, retention_ms of succeeded jobs, of failed and cancelled ones,
-- limit, sweep, keep (0: no count cap), audit (1: look for waiting
-- workflow steps whose parents all ended: a missed release, repaired). For every queue: returns jobs whose
-- lease expired to their queue (or to the dead letters when that attempt
-- was their last), promotes due jobs, gives held jobs another look, and
-- forgets finished jobs past their age or past `keep` per outcome (up to
-- `limit` each); then drops up to `sweep` expired jobs from the listing
-- indexes.
-- Idempotent: every node may run it.
-- Returns {requeued, dead, promoted, repaired}.
local retention_ok = tonumber(ARGV[2])
local retention_failed = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local keep = tonumber(ARGV[6])
local audit = ARGV[7] == '1'
local repaired = 0
local now = now_ms()
local requeued, dead, promoted = 0, 0, 0
for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local expired = redis.call('ZRANGEBYSCORE', qkey(q, 'running'), '-inf', now - 1, 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do
    local key = jkey(id)
    redis.call('ZREM', qkey(q, 'running'), id)
    local f = redis.call('HMGET', key, 'attempts', 'base', 'permit', 'spec')
    local tenant, task, _, _, max_retries = spec(f[4])
    if f[1] and tenant then
      if f[3] == '1' or f[3] == '2' then
        release_permit(id, task, tenant, f[3])
      end
      local why = 'lease expired during attempt ' .. f[1] .. ' (worker lost or stalled)'
      record_attempt(key, now, 'lease_expired', why)
      redis.call('HSET', key, 'error', why)
      if tonumber(f[1]) - tonumber(f[2] or '0') > tonumber(max_retries) then
        finish(q, id, 'failed', now, retention_failed)
        dead = dead + 1
      else
        make_ready(q, id, false)
        requeued = requeued + 1
      end
    end
  end
  if audit then
    -- Up to 100 waiting steps of the queue: one whose parents all ended
    -- should have been released by the last one's end; apply its policy.
    for _, id in ipairs(redis.call('ZRANGE', qkey(q, 'waiting'), 0, 99)) do
      local f = redis.call('HMGET', jkey(id), 'pids', 'opf', 'spec', 'state')
      local open, failed = false, nil
      if f[4] == 'waiting' then
        for parent in string.gmatch(f[1] or '', '[^,]+') do
          local p = redis.call('HMGET', jkey(parent), 'state', 'skip', 'step')
          if p[1] ~= 'succeeded' and p[1] ~= 'failed' and p[1] ~= 'cancelled' then
            open = true
          elseif p[1] ~= 'succeeded' and p[2] ~= '1' and (not failed or p[3] < failed) then
            failed = p[3]
          end
        end
      else
        open = true
      end
      if not open then
        repaired = repaired + 1
        redis.call('HSET', jkey(id), 'pending', 0)
        local tenant = spec(f[3])
        if failed and f[2] ~= 'skip' and f[2] ~= 'run' then
          redis.call('HSET', jkey(id), 'pfail', failed)
          wf_end_waiting(q, id, now, 'parent step `' .. failed .. '` failed or was cancelled', false)
        elseif failed and f[2] == 'skip' then
          redis.call('HSET', jkey(id), 'pfail', failed)
          wf_end_waiting(q, id, now, 'skipped', true)
        else
          wf_ready(q, id, tenant)
        end
      end
    end
  end
  -- Steps that ended here release or cancel their children now.
  wf_release(now, retention_ok, retention_failed)
  promoted = promoted + promote(q, now, limit)
  -- Held jobs are looked at again now and then, one per held set, in case
  -- a cap was raised or a permit lapsed without a release.
  -- (Jobs waiting for a handler wait for a claimer that has it.)
  for _, suffix in ipairs(redis.call('SMEMBERS', qkey(q, 'holds'))) do
    if is_idle(suffix) then
      if redis.call('EXISTS', qkey(q, suffix)) == 0 then
        redis.call('SREM', qkey(q, 'holds'), suffix)
      end
    elseif unhold(q, suffix, 1) == 0 then
      redis.call('SREM', qkey(q, 'holds'), suffix)
    end
  end
  -- Terminal sets forget what the retention has expired (the hashes
  -- expire by themselves), and beyond `keep` the oldest go, hash and all.
  for _, set in ipairs({'succeeded', 'failed', 'cancelled'}) do
    local key = qkey(q, set)
    local age = set == 'succeeded' and retention_ok or retention_failed
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - age)
    if keep > 0 then
      local excess = math.min(redis.call('ZCARD', key) - keep, limit)
      if excess > 0 then
        local oldest = redis.call('ZRANGE', key, 0, excess - 1)
        for _, id in ipairs(oldest) do
          -- A step goes with its workflow (its hash expires then).
          if redis.call('HEXISTS', jkey(id), 'wf') == 0 then
            redis.call('DEL', jkey(id))
          end
        end
        flush('ZREM', key, oldest, 1)
      end
    end
  end
end

-- Listing indexes forget jobs whose hash has expired. Only ids older than
-- the retention can have: a job expires no sooner than `retention` after
-- it was created, and ids are UUIDv7, whose text starts with the creation
-- time in ms (12 hex digits, a dash after the 8th), so the older ids sort
-- below `cutoff`. Each pass goes on through the tenants (P:list:scan, an
-- SSCAN cursor) and through each tenant's old ids (P:list:at:TENANT) from
-- where the last pass stopped, looking at no more than `sweep` ids in all:
-- memory stays bounded by the live jobs whether or not anyone lists them,
-- and a pass costs nothing while no job is that old.
local budget = tonumber(ARGV[5])
-- Drops from a listing index those of `ids` whose record (key_of(id))
-- has expired.
local function forget_expired(index, ids, key_of)
  local gone = {}
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', key_of(id)) == 0 then
      gone[#gone + 1] = id
    end
  end
  flush('ZREM', index, gone, 1)
end
local old = math.max(now - math.min(retention_ok, retention_failed), 0)
local cutoff = '(' .. string.format('%08x-%04x', math.floor(old / 65536), old % 65536)
local scan = redis.call('GET', P .. ':list:scan') or '0'
repeat
  local page = redis.call('SSCAN', P .. ':tenants', scan, 'COUNT', 20)
  scan = page[1]
  for _, tenant in ipairs(page[2]) do
    if budget <= 0 then break end
    local index, at = P .. ':list:t:' .. tenant, P .. ':list:at:' .. tenant
    local ids = redis.call('ZRANGEBYLEX', index, redis.call('GET', at) or '-', cutoff, 'LIMIT', 0, budget)
    budget = budget - #ids
    forget_expired(index, ids, jkey)
    -- The tenant's workflows whose record expired go the same way.
    local wfs, wat = P .. ':wfs:t:' .. tenant, P .. ':wfs:at:' .. tenant
    local wids = redis.call('ZRANGEBYLEX', wfs, redis.call('GET', wat) or '-', cutoff, 'LIMIT', 0, math.max(budget, 1))
    budget = budget - #wids
    forget_expired(wfs, wids, wf_key)
    if #wids == 0 then
      redis.call('DEL', wat)
    else
      redis.call('SET', wat, '(' .. wids[#wids])
    end
    if budget > 0 then
      -- The end of this index's old ids: start over next time. (The
      -- tenant stays registered: enqueue registers it only once.)
      redis.call('DEL', at)
    else
      redis.call('SET', at, '(' .. ids[#ids])
    end
    -- Ids that do not start with their creation time (a Celery task id
    -- taken as the job id) mostly sort above every id made so far, where
    -- the range above never looks: the ids above the current time are
    -- swept too, from their own cursor (P:list:above:TENANT).
    if budget > 0 then
      local above = P .. ':list:above:' .. tenant
      local from = redis.call('GET', above)
        or '(' .. string.format('%08x-%04x', math.floor(now / 65536), now % 65536)
      local odd = redis.call('ZRANGEBYLEX', index, from, '+', 'LIMIT', 0, budget)
      forget_expired(index, odd, jkey)
      if #odd < budget then
        redis.call('DEL', above)
      else
        redis.call('SET', above, '(' .. odd[#odd])
      end
      budget = budget - #odd
    end
  end
until scan == '0' or budget <= 0
redis.call('SET', P .. ':list:scan', scan)
return {requeued, dead, promoted, repaired}
