-- Returns up to $1 jobs whose lease expired (their worker died or stalled)
-- to their queue, in their old place, or to the dead letters when that
-- attempt was their last. Rows another node is reaping are skipped, so
-- every node can run this at once. The state change fences off the lost
-- worker: its late ack no longer matches.
WITH expired AS MATERIALIZED (
    SELECT id FROM jobs
    WHERE state = 'running' AND lease_expires_at < now_ms()
    ORDER BY lease_expires_at LIMIT $1
    FOR UPDATE SKIP LOCKED)
UPDATE jobs
SET state = CASE WHEN attempts - attempt_base > max_retries THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN attempts - attempt_base > max_retries THEN now_ms() END,
    error = format('lease expired during attempt %s (worker lost or stalled)', attempts),
    history = (CASE WHEN jsonb_array_length(coalesce(history, '[]')) >= 10
                    THEN history - 0 ELSE coalesce(history, '[]') END)
              || jsonb_build_array(jsonb_build_object(
                     'a', attempts, 'w', coalesce(lease_owner, ''), 's', started_at,
                     'f', now_ms(), 'o', 'lease_expired',
                     'e', format('lease expired during attempt %s (worker lost or stalled)', attempts))),
    lease_owner = NULL, lease_expires_at = NULL
FROM expired WHERE jobs.id = expired.id
RETURNING jobs.id, jobs.state, jobs.tenant, jobs.serial_key, jobs.workflow_id
