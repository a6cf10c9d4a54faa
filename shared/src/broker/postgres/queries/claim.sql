-- Leases up to $2 queued jobs from the queues in $1 (in the order to serve
-- them), skipping paused queues. The attempt is counted here, at claim, so a
-- job that kills its worker still uses up its retries.
-- MATERIALIZED pins the locked set (an inlined `IN (... LIMIT n FOR UPDATE
-- SKIP LOCKED)` can update more than n rows). The outer LIMIT has no ORDER
-- BY on purpose: rows are locked only as they are pulled, queue by queue in
-- order, so a claim never locks rows of a later queue it will not take.
-- $3: worker, $4: lease (ms), $5: the tasks the claimer handles (NULL: any).
WITH q AS MATERIALIZED (
    SELECT u.name, u.ord FROM unnest($1::text[]) WITH ORDINALITY AS u(name, ord)
    WHERE NOT EXISTS (SELECT 1 FROM queues p WHERE p.name = u.name AND p.paused)
    ORDER BY u.ord),
picked AS MATERIALIZED (
    SELECT j.id
    FROM q CROSS JOIN LATERAL (
        SELECT id FROM jobs
        WHERE state = 'queued' AND NOT serial_wait AND queue = q.name
          AND ($5::text[] IS NULL OR task = ANY ($5::text[]))
        ORDER BY priority DESC, seq, id
        LIMIT $2
        FOR UPDATE SKIP LOCKED) AS j
    LIMIT $2)
UPDATE jobs
SET state = 'running', attempts = attempts + 1, started_at = clock_ms(),
    lease_owner = $3, lease_expires_at = clock_ms() + $4
FROM picked WHERE jobs.id = picked.id
RETURNING jobs.id, jobs.tenant, jobs.task, jobs.queue, jobs.priority,
          jobs.payload::text AS payload, jobs.attempts, jobs.attempt_base,
          jobs.max_retries, jobs.timeout_ms, jobs.seq,
          jobs.started_at - greatest(jobs.run_at, jobs.created_at) AS waited_ms
