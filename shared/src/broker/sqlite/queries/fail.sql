-- Records failed attempts, fenced on (id, attempt). A retryable failure with
-- attempts left waits `retry_in` ms as `retrying`; anything else is a dead
-- letter (`failed`). attempts - attempt_base is what this run of the job has
-- used; it may start max_retries + 1 attempts.
-- Each ended attempt is appended to `history` (the last 10 kept: MAX_HISTORY).
UPDATE jobs
SET state = CASE WHEN c.retry_in IS NOT NULL AND jobs.attempts - jobs.attempt_base <= jobs.max_retries
                 THEN 'retrying' ELSE 'failed' END,
    run_at = CASE WHEN c.retry_in IS NOT NULL AND jobs.attempts - jobs.attempt_base <= jobs.max_retries
                  THEN ?1 + c.retry_in ELSE jobs.run_at END,
    finished_at = CASE WHEN c.retry_in IS NOT NULL AND jobs.attempts - jobs.attempt_base <= jobs.max_retries
                       THEN NULL ELSE ?1 END,
    history = json_insert(
        CASE WHEN json_array_length(COALESCE(history, '[]')) >= 10
             THEN json_remove(history, '$[0]') ELSE COALESCE(history, '[]') END,
        '$[#]', json_object('a', attempts, 'w', COALESCE(lease_owner, ''), 's', started_at,
                            'f', ?1, 'o', CASE WHEN c.retry_in IS NOT NULL AND jobs.attempts - jobs.attempt_base <= jobs.max_retries
                                 THEN 'retried' ELSE 'failed' END, 'e', c.error)),
    error = c.error, lease_owner = NULL, lease_expires_at = NULL
FROM (SELECT value ->> 'id' AS id, value ->> 'attempt' AS attempt,
             value ->> 'error' AS error, value ->> 'retry_in' AS retry_in
      FROM json_each(?2)) AS c
WHERE jobs.id = c.id AND jobs.attempts = c.attempt AND jobs.state = 'running'
RETURNING jobs.id, jobs.tenant, jobs.serial_key, jobs.state, jobs.workflow_id
