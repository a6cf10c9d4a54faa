-- Cancels an unfinished job ($1), within tenant $2 (NULL: any). A running
-- job loses its lease here; its worker learns at the next renewal and stops
-- the handler.
UPDATE jobs
SET state = 'cancelled', finished_at = now_ms(),
    error = CASE WHEN workflow_id IS NULL THEN error ELSE 'cancelled by hand' END,
    history = CASE WHEN state = 'running' THEN
                  (CASE WHEN jsonb_array_length(coalesce(history, '[]')) >= 10
                        THEN history - 0 ELSE coalesce(history, '[]') END)
                  || jsonb_build_array(jsonb_build_object(
                         'a', attempts, 'w', coalesce(lease_owner, ''), 's', started_at,
                         'f', now_ms(), 'o', 'cancelled', 'e', NULL))
              ELSE history END,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
  AND state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying')
RETURNING id, tenant, task, queue, state, priority, payload::text AS payload, attempts,
          max_retries, timeout_ms, unique_key, result::text AS result, error,
          progress::text AS progress, created_at, run_at, started_at, finished_at,
          lease_owner, history::text AS history, serial_key,
          workflow_id, step, needs::text AS needs
