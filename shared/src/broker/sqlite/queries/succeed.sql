-- Records results for a batch of finished attempts, fenced on (id, attempt):
-- a stale worker whose lease was reaped or cancelled changes nothing.
UPDATE jobs
SET state = 'succeeded', result = c.result, finished_at = ?1,
    lease_owner = NULL, lease_expires_at = NULL
FROM (SELECT value ->> 'id' AS id, value ->> 'attempt' AS attempt,
             value ->> 'result' AS result FROM json_each(?2)) AS c
WHERE jobs.id = c.id AND jobs.attempts = c.attempt AND jobs.state = 'running'
RETURNING jobs.id
