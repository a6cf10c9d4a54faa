-- ARGV: P, workflow id, tenant, name, n, then 13 values per step, parents
-- before children: job id, step id, its place in the submitted list
-- (1-based), queue, task, priority, max_retries, timeout_ms ('' for none),
-- serial_key ('' for none), payload (JSON), needs (JSON), on_parent_failure,
-- then its parents' job ids (comma-separated, '' for a root). One script:
-- the record, every step and every edge, or nothing. Roots are queued (or
-- parked in their serial lane), the rest wait. Returns the creation time.
local wf, tenant, name, n = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = now_ms()
local now_s = num(now)
local order, kids, parents_of = {}, {}, {}
for i = 0, n - 1 do
  local b = 6 + i * 13
  local id = ARGV[b]
  order[tonumber(ARGV[b + 2])] = id
  parents_of[id] = ARGV[b + 12]
  for parent in string.gmatch(ARGV[b + 12], '[^,]+') do
    local list = kids[parent]
    if not list then
      list = {}
      kids[parent] = list
    end
    list[#list + 1] = id
  end
end
local queues = {}
for i = 0, n - 1 do
  local b = 6 + i * 13
  local id, step, q, task, priority = ARGV[b], ARGV[b + 1], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local serial, needs, opf, pids = ARGV[b + 8], ARGV[b + 10], ARGV[b + 11], ARGV[b + 12]
  local key = jkey(id)
  local job_spec = table.concat({tenant, task, q, priority, ARGV[b + 6], ARGV[b + 7], now_s, ''}, '\n')
  local pending = 0
  for _ in string.gmatch(pids, '[^,]+') do
    pending = pending + 1
  end
  redis.call('HSET', key, 'spec', job_spec, 'payload', ARGV[b + 9], 'wf', wf, 'step', step,
    'needs', needs, 'opf', opf, 'pids', pids, 'kids', table.concat(kids[id] or {}, ','),
    'pending', pending)
  queues[q] = true
  if pending > 0 then
    redis.call('HSET', key, 'state', 'waiting')
    if serial ~= '' then
      redis.call('HSET', key, 'wsk', serial)
    end
    redis.call('ZADD', qkey(q, 'waiting'), now_s, id)
  else
    redis.call('HSET', key, 'state', 'queued')
    if serial == '' or lane_join(q, id, tenant, serial) then
      make_ready(q, id, true)
    end
  end
  redis.call('ZADD', P .. ':list:t:' .. tenant, 0, id)
end
redis.call('HSET', wf_key(wf), 'tenant', tenant, 'name', name, 'state', 'running',
  'created_at', now_s, 'left', n, 'steps', table.concat(order, ','))
redis.call('ZADD', P .. ':wfs:t:' .. tenant, 0, wf)
redis.call('SADD', P .. ':tenants', tenant)
for q in pairs(queues) do
  redis.call('SADD', P .. ':queues', q)
  redis.call('PUBLISH', P .. ':wake', q)
end
return now
