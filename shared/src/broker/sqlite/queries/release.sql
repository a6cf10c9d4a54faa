-- Hands unfinished attempts back (graceful shutdown): queued again at once.
-- ?1: now; ?2: the attempts, a JSON array of {id, attempt}.
-- The attempt counter is the fencing token and never goes back; raising
-- attempt_base instead gives the interrupted attempt back to the budget.
-- Each ended attempt is appended to `history` (the last 10 kept: MAX_HISTORY).
UPDATE jobs
SET state = 'queued', attempt_base = attempt_base + 1,
    history = json_insert(
        CASE WHEN json_array_length(COALESCE(history, '[]')) >= 10
             THEN json_remove(history, '$[0]') ELSE COALESCE(history, '[]') END,
        '$[#]', json_object('a', attempts, 'w', COALESCE(lease_owner, ''), 's', started_at,
                            'f', ?1, 'o', 'released', 'e', NULL)),
    lease_owner = NULL, lease_expires_at = NULL
FROM (SELECT value ->> 'id' AS id, value ->> 'attempt' AS attempt FROM json_each(?2)) AS c
WHERE jobs.id = c.id AND jobs.attempts = c.attempt AND jobs.state = 'running'
RETURNING jobs.id, jobs.tenant, jobs.serial_key
