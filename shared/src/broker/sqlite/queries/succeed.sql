-- Records results for a batch of finished attempts, fenced on (id, attempt):
-- a stale worker whose lease was reaped or cancelled changes nothing.
-- Each ended attempt is appended to `history` (the last 10 kept: MAX_HISTORY).
UPDATE jobs
SET state = 'succeeded', result = c.result, finished_at = ?1, error = NULL,
    history = json_insert(
        CASE WHEN json_array_length(COALESCE(history, '[]')) >= 10
             THEN json_remove(history, '$[0]') ELSE COALESCE(history, '[]') END,
        '$[#]', json_object('a', attempts, 'w', COALESCE(lease_owner, ''), 's', started_at,
                            'f', ?1, 'o', 'succeeded', 'e', NULL)),
    lease_owner = NULL, lease_expires_at = NULL
FROM (SELECT value ->> 'id' AS id, value ->> 'attempt' AS attempt,
             value ->> 'result' AS result FROM json_each(?2)) AS c
WHERE jobs.id = c.id AND jobs.attempts = c.attempt AND jobs.state = 'running'
RETURNING jobs.id, jobs.tenant, jobs.serial_key, jobs.state, jobs.workflow_id
