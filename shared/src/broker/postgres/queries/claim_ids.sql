-- Leases the jobs in $1 (ids that flow control admitted and this
-- transaction has locked). $2: worker, $3: lease (ms).
UPDATE jobs
SET state = 'running', attempts = attempts + 1, started_at = clock_ms(),
    lease_owner = $2, lease_expires_at = clock_ms() + $3
WHERE state = 'queued' AND NOT serial_wait AND id = ANY ($1::uuid[])
RETURNING jobs.id, jobs.tenant, jobs.task, jobs.queue, jobs.priority,
          jobs.payload::text AS payload, jobs.attempts, jobs.attempt_base,
          jobs.max_retries, jobs.timeout_ms, jobs.seq,
          jobs.started_at - greatest(jobs.run_at, jobs.created_at) AS waited_ms
