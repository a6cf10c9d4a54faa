-- Cancels an unfinished job. A running job loses its lease here; its worker
-- learns at the next renewal and stops the handler.
UPDATE jobs
SET state = 'cancelled', finished_at = ?1, lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?2 AND (?3 IS NULL OR tenant = ?3)
  AND state IN ('scheduled', 'queued', 'running', 'retrying')
RETURNING id, tenant, task, queue, state, priority, payload, attempts, max_retries, timeout_ms,
          unique_key, result, error, progress, created_at, run_at, started_at, finished_at
