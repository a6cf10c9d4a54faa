-- Queues a dead or cancelled job again. attempts stays (it is the fencing
-- token); attempt_base moves up to it, which gives a fresh retry budget.
UPDATE jobs
SET state = 'queued', run_at = ?1, attempt_base = attempts, result = NULL,
    progress = NULL, started_at = NULL, finished_at = NULL
WHERE id = ?2 AND (?3 IS NULL OR tenant = ?3) AND state IN ('failed', 'cancelled')
  AND workflow_id IS NULL
RETURNING id, tenant, task, queue, state, priority, payload, attempts, max_retries, timeout_ms,
          unique_key, result, error, progress, created_at, run_at, started_at, finished_at,
          lease_owner, history, serial_key, workflow_id, step, needs
