-- Leases the jobs in ?4 (a JSON array of ids that flow control admitted).
UPDATE jobs
SET state = 'running', attempts = attempts + 1, started_at = ?1,
    lease_owner = ?2, lease_expires_at = ?3
WHERE state = 'queued' AND serial_wait = 0 AND id IN (SELECT value FROM json_each(?4))
RETURNING id, tenant, task, queue, priority, payload, attempts, attempt_base,
          max_retries, timeout_ms, seq, started_at - MAX(run_at, created_at) AS waited_ms
