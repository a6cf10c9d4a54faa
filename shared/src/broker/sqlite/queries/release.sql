-- Hands unfinished attempts back (graceful shutdown): queued again at once.
-- The attempt counter is the fencing token and never goes back; raising
-- attempt_base instead gives the interrupted attempt back to the budget.
UPDATE jobs
SET state = 'queued', attempt_base = attempt_base + 1,
    lease_owner = NULL, lease_expires_at = NULL
FROM (SELECT value ->> 'id' AS id, value ->> 'attempt' AS attempt FROM json_each(?1)) AS c
WHERE jobs.id = c.id AND jobs.attempts = c.attempt AND jobs.state = 'running'
RETURNING jobs.id
