-- Leases up to ?5 queued jobs of queue ?4, highest priority first, then
-- oldest (ids are time-ordered). The attempt is counted here, at claim, so a
-- job that kills its worker still uses up its retries.
UPDATE jobs
SET state = 'running', attempts = attempts + 1, started_at = ?1,
    lease_owner = ?2, lease_expires_at = ?3
WHERE id IN (SELECT id FROM jobs
             WHERE state = 'queued' AND queue = ?4
             ORDER BY priority DESC, id LIMIT ?5)
RETURNING id, tenant, task, queue, priority, payload, attempts, attempt_base,
          max_retries, timeout_ms
