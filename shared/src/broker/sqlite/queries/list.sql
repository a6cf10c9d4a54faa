-- A page of jobs, newest first, within the window list_window.sql found
-- (ids from ?6 up to, not including, the cursor ?5). Optional filters are
-- NULL when unused.
SELECT id, tenant, task, queue, state, priority, payload, attempts, max_retries, timeout_ms,
       unique_key, result, error, progress, created_at, run_at, started_at, finished_at,
       lease_owner, history, serial_key, workflow_id, step, needs
FROM jobs
WHERE id < ?5 AND id >= ?6
  AND (?1 IS NULL OR tenant = ?1)
  AND (?2 IS NULL OR queue = ?2)
  AND (?3 IS NULL OR state = ?3)
  AND (?4 IS NULL OR task = ?4)
ORDER BY id DESC
LIMIT ?7
