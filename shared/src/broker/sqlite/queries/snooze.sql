-- Snoozes attempts (Outcome::Snoozed): the job waits `delay` ms as
-- `retrying` with the reason as its error, and raising attempt_base gives
-- the attempt back to the budget. Its serial lane keeps its place, as for
-- a retry. ?1: now; ?2: a JSON array of {id, attempt, reason, delay}.
UPDATE jobs
SET state = 'retrying', attempt_base = attempt_base + 1, run_at = ?1 + c.delay,
    history = json_insert(
        CASE WHEN json_array_length(COALESCE(history, '[]')) >= 10
             THEN json_remove(history, '$[0]') ELSE COALESCE(history, '[]') END,
        '$[#]', json_object('a', attempts, 'w', COALESCE(lease_owner, ''), 's', started_at,
                            'f', ?1, 'o', 'snoozed', 'e', c.reason)),
    error = c.reason, lease_owner = NULL, lease_expires_at = NULL
FROM (SELECT value ->> 'id' AS id, value ->> 'attempt' AS attempt,
             value ->> 'reason' AS reason, value ->> 'delay' AS delay
      FROM json_each(?2)) AS c
WHERE jobs.id = c.id AND jobs.attempts = c.attempt AND jobs.state = 'running'
RETURNING jobs.id
