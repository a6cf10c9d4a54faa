-- Leases up to ?5 queued jobs from the queues in ?4 (a JSON array, in the
-- order to serve them), skipping paused queues: each queue's best ?5
-- candidates come from one seek on jobs_claim, then the queue's position,
-- priority, fair-share sequence and age rank them. The attempt is counted
-- here, at claim, so a job that kills its worker still uses up its retries.
-- ?6: the tasks the claimer has handlers for (a JSON array), NULL for any.
-- Limits are written `?N + 0`: SQLite re-prepares a statement whose LIMIT
-- is a bare parameter every time that parameter is bound.
UPDATE jobs
SET state = 'running', attempts = attempts + 1, started_at = ?1,
    lease_owner = ?2, lease_expires_at = ?3
WHERE id IN (
    SELECT j.id
    FROM json_each(?4) AS q
    JOIN jobs AS j ON j.id IN (SELECT id FROM jobs
                               WHERE state = 'queued' AND serial_wait = 0 AND queue = q.value
                                 AND (?6 IS NULL OR task IN (SELECT value FROM json_each(?6)))
                               ORDER BY priority DESC, seq, id LIMIT ?5 + 0)
    WHERE NOT EXISTS (SELECT 1 FROM queues WHERE name = q.value AND paused = 1)
    ORDER BY q.key, j.priority DESC, j.seq, j.id
    LIMIT ?5 + 0)
RETURNING id, tenant, task, queue, priority, payload, attempts, attempt_base,
          max_retries, timeout_ms, seq, started_at - MAX(run_at, created_at) AS waited_ms
