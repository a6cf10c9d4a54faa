-- Snoozes attempts (Outcome::Snoozed; $1 ids, $2 attempts, $3 reasons, $4
-- delays in ms): the job waits as `retrying` with the reason as its error,
-- and raising attempt_base gives the attempt back to the budget. Its serial
-- lane keeps its place, as for a retry.
UPDATE jobs
SET state = 'retrying', attempt_base = attempt_base + 1, run_at = now_ms() + c.delay,
    history = (CASE WHEN jsonb_array_length(coalesce(history, '[]')) >= 10
                    THEN history - 0 ELSE coalesce(history, '[]') END)
              || jsonb_build_array(jsonb_build_object(
                     'a', attempts, 'w', coalesce(lease_owner, ''), 's', started_at,
                     'f', now_ms(), 'o', 'snoozed', 'e', c.reason)),
    error = c.reason, lease_owner = NULL, lease_expires_at = NULL
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::bigint[]) AS c(id, attempt, reason, delay)
WHERE jobs.id = c.id AND jobs.attempts = c.attempt AND jobs.state = 'running'
RETURNING jobs.id
