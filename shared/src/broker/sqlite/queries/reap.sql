-- Returns jobs whose lease expired (their worker died or stalled) to their
-- queue, or to the dead letters when that attempt was their last. The state
-- change fences off the lost worker: its late ack no longer matches.
-- Each ended attempt is appended to `history` (the last 10 kept: MAX_HISTORY).
-- Limits are written `?N + 0`: SQLite re-prepares a statement whose LIMIT
-- is a bare parameter every time that parameter is bound.
UPDATE jobs
SET state = CASE WHEN attempts - attempt_base > max_retries THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN attempts - attempt_base > max_retries THEN ?1 ELSE NULL END,
    error = 'lease expired during attempt ' || attempts || ' (worker lost or stalled)',
    history = json_insert(
        CASE WHEN json_array_length(COALESCE(history, '[]')) >= 10
             THEN json_remove(history, '$[0]') ELSE COALESCE(history, '[]') END,
        '$[#]', json_object('a', attempts, 'w', COALESCE(lease_owner, ''), 's', started_at,
                            'f', ?1, 'o', 'lease_expired', 'e', 'lease expired during attempt ' || attempts || ' (worker lost or stalled)')),
    lease_owner = NULL, lease_expires_at = NULL
WHERE id IN (SELECT id FROM jobs
             WHERE state = 'running' AND lease_expires_at < ?1
             ORDER BY lease_expires_at LIMIT ?2 + 0)
RETURNING id, state, tenant, serial_key, workflow_id
