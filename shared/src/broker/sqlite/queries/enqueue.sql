-- Inserts a whole batch in one statement: ?2 is a JSON array of jobs. A job
-- whose unique key an unfinished job already holds conflicts on jobs_unique
-- and is skipped; RETURNING tells the caller which ones went in.
-- (`WHERE true` resolves SQLite's parsing ambiguity of INSERT ... SELECT ... ON CONFLICT.)
INSERT INTO jobs (id, tenant, task, queue, state, priority, payload, max_retries,
                  timeout_ms, unique_key, created_at, run_at, seq, serial_key, serial_wait,
                  serial_seq, workflow_id, step, step_no, needs, pending, on_parent_failure)
SELECT value ->> 'id', value ->> 'tenant', value ->> 'task', value ->> 'queue',
       value ->> 'state', value ->> 'priority', value ->> 'payload',
       value ->> 'max_retries', value ->> 'timeout_ms', value ->> 'unique_key',
       ?1, value ->> 'run_at', value ->> 'seq', value ->> 'serial_key',
       value ->> 'serial_key' IS NOT NULL,
       -- A waiting step joins its serial lane when it leaves `waiting`:
       -- until then it sorts after every member.
       CASE WHEN value ->> 'state' = 'waiting' THEN 9223372036854775807 ELSE 0 END,
       value ->> 'workflow_id', value ->> 'step', value ->> 'step_no', value ->> 'needs',
       coalesce(value ->> 'pending', 0), value ->> 'on_parent_failure'
FROM json_each(?2) WHERE true
ON CONFLICT DO NOTHING
RETURNING id, tenant, serial_key, state
