-- Cancels an unfinished job. A running job loses its lease here; its worker
-- learns at the next renewal and stops the handler.
UPDATE jobs
SET state = 'cancelled', finished_at = ?1,
    error = CASE WHEN workflow_id IS NULL THEN error ELSE 'cancelled by hand' END,
    history = CASE WHEN state = 'running' THEN json_insert(
        CASE WHEN json_array_length(COALESCE(history, '[]')) >= 10
             THEN json_remove(history, '$[0]') ELSE COALESCE(history, '[]') END,
        '$[#]', json_object('a', attempts, 'w', COALESCE(lease_owner, ''), 's', started_at,
                            'f', ?1, 'o', 'cancelled', 'e', NULL))
                   ELSE history END,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?2 AND (?3 IS NULL OR tenant = ?3)
  AND state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying')
RETURNING id, tenant, task, queue, state, priority, payload, attempts, max_retries, timeout_ms,
          unique_key, result, error, progress, created_at, run_at, started_at, finished_at,
          lease_owner, history, serial_key, workflow_id, step, needs
