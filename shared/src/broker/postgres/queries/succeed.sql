-- Records results for a batch of finished attempts ($1 ids, $2 attempts,
-- $3 results as JSON text), fenced on (id, attempt): a stale worker whose
-- lease was reaped or cancelled changes nothing. Each ended attempt is
-- appended to `history` (the last 10 kept: MAX_HISTORY).
UPDATE jobs
SET state = 'succeeded', result = c.result::json, finished_at = now_ms(), error = NULL,
    history = (CASE WHEN jsonb_array_length(coalesce(history, '[]')) >= 10
                    THEN history - 0 ELSE coalesce(history, '[]') END)
              || jsonb_build_array(jsonb_build_object(
                     'a', attempts, 'w', coalesce(lease_owner, ''), 's', started_at,
                     'f', now_ms(), 'o', 'succeeded', 'e', NULL)),
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest($1::uuid[], $2::int[], $3::text[]) AS c(id, attempt, result)
WHERE jobs.id = c.id AND jobs.attempts = c.attempt AND jobs.state = 'running'
RETURNING jobs.id, jobs.tenant, jobs.serial_key, jobs.state, jobs.workflow_id
