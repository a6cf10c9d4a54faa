-- Queues a dead or cancelled job ($1, within tenant $2; NULL: any) again.
-- attempts stays (it is the fencing token); attempt_base moves up to it,
-- which gives a fresh retry budget.
UPDATE jobs
SET state = 'queued', run_at = now_ms(), attempt_base = attempts, result = NULL,
    progress = NULL, started_at = NULL, finished_at = NULL
WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) AND state IN ('failed', 'cancelled')
  AND workflow_id IS NULL
RETURNING id, tenant, task, queue, state, priority, payload::text AS payload, attempts,
          max_retries, timeout_ms, unique_key, result::text AS result, error,
          progress::text AS progress, created_at, run_at, started_at, finished_at,
          lease_owner, history::text AS history, serial_key,
          workflow_id, step, needs::text AS needs
