-- Extends every lease in ($1[i], $2[i]) that is still held: the job is
-- running at that very attempt. Leases not returned are lost. $3: lease (ms).
UPDATE jobs SET lease_expires_at = now_ms() + $3
FROM unnest($1::uuid[], $2::int[]) AS l(id, attempt)
WHERE jobs.id = l.id AND jobs.attempts = l.attempt AND jobs.state = 'running'
RETURNING jobs.id
