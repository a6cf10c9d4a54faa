-- Up to ?2 queued jobs from the queues in ?1 (JSON array, in the order to
-- serve them), ranked as claim.sql ranks them, leaving out the tasks in ?3
-- (a cap or rate refuses them now) and the [task, tenant] pairs in ?4 (the
-- tenant is at its cap for the task), and tasks not in ?5 (the claimer's
-- handlers, a JSON array; NULL for any). The caller admits them one by one.
-- Limits are written `?N + 0`: SQLite re-prepares a statement whose LIMIT
-- is a bare parameter every time that parameter is bound.
SELECT j.id, j.task, j.tenant
FROM json_each(?1) AS q
JOIN jobs AS j ON j.id IN (SELECT id FROM jobs
                           WHERE state = 'queued' AND serial_wait = 0 AND queue = q.value
                             AND task NOT IN (SELECT value FROM json_each(?3))
                             AND (?5 IS NULL OR task IN (SELECT value FROM json_each(?5)))
                             AND NOT EXISTS (SELECT 1 FROM json_each(?4) AS b
                                             WHERE b.value ->> 0 = jobs.task
                                               AND b.value ->> 1 = jobs.tenant)
                           ORDER BY priority DESC, seq, id LIMIT ?2 + 0)
WHERE NOT EXISTS (SELECT 1 FROM queues WHERE name = q.value AND paused = 1)
ORDER BY q.key, j.priority DESC, j.seq, j.id
LIMIT ?2 + 0
