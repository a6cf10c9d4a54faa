-- Records failed attempts ($1 ids, $2 attempts, $3 errors, $4 retry_in ms
-- or NULL), fenced on (id, attempt). A retryable failure with attempts left
-- waits `retry_in` ms as `retrying`; anything else is a dead letter
-- (`failed`). attempts - attempt_base is what this run of the job has used;
-- it may start max_retries + 1 attempts. Each ended attempt is appended to
-- `history` (the last 10 kept).
UPDATE jobs
SET state = CASE WHEN c.retry_in IS NOT NULL AND attempts - attempt_base <= max_retries
                 THEN 'retrying' ELSE 'failed' END,
    run_at = CASE WHEN c.retry_in IS NOT NULL AND attempts - attempt_base <= max_retries
                  THEN now_ms() + c.retry_in ELSE run_at END,
    finished_at = CASE WHEN c.retry_in IS NOT NULL AND attempts - attempt_base <= max_retries
                       THEN NULL ELSE now_ms() END,
    history = (CASE WHEN jsonb_array_length(coalesce(history, '[]')) >= 10
                    THEN history - 0 ELSE coalesce(history, '[]') END)
              || jsonb_build_array(jsonb_build_object(
                     'a', attempts, 'w', coalesce(lease_owner, ''), 's', started_at,
                     'f', now_ms(),
                     'o', CASE WHEN c.retry_in IS NOT NULL AND attempts - attempt_base <= max_retries
                               THEN 'retried' ELSE 'failed' END,
                     'e', c.error)),
    error = c.error, lease_owner = NULL, lease_expires_at = NULL
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::bigint[]) AS c(id, attempt, error, retry_in)
WHERE jobs.id = c.id AND jobs.attempts = c.attempt AND jobs.state = 'running'
RETURNING jobs.id, jobs.tenant, jobs.serial_key, jobs.state, jobs.workflow_id
