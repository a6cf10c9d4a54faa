-- Extends every lease in ?2 (a JSON array of {id, attempt}) that is still
-- held: the job is running at that very attempt. Leases not returned are lost.
UPDATE jobs SET lease_expires_at = ?1
FROM (SELECT value ->> 'id' AS id, value ->> 'attempt' AS attempt FROM json_each(?2)) AS l
WHERE jobs.id = l.id AND jobs.attempts = l.attempt AND jobs.state = 'running'
RETURNING jobs.id
