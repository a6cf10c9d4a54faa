-- Hands unfinished attempts back (graceful shutdown): queued again at once,
-- in their old place. The attempt counter is the fencing token and never
-- goes back; raising attempt_base gives the interrupted attempt back to the
-- budget. Each ended attempt is appended to `history` (the last 10 kept).
UPDATE jobs
SET state = 'queued', attempt_base = attempt_base + 1,
    history = (CASE WHEN jsonb_array_length(coalesce(history, '[]')) >= 10
                    THEN history - 0 ELSE coalesce(history, '[]') END)
              || jsonb_build_array(jsonb_build_object(
                     'a', attempts, 'w', coalesce(lease_owner, ''), 's', started_at,
                     'f', now_ms(), 'o', 'released', 'e', NULL)),
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest($1::uuid[], $2::int[]) AS c(id, attempt)
WHERE jobs.id = c.id AND jobs.attempts = c.attempt AND jobs.state = 'running'
RETURNING jobs.id
