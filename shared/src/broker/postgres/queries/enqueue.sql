-- Inserts a whole batch in one statement, one array per column, and gives
-- each due job its fair-share place in the same step: the due jobs are
-- numbered per (queue, tenant), each pair's `fair` row moves past its
-- numbers once (ON CONFLICT reads the committed `last` under the row's
-- lock, so concurrent enqueuers never share a number; rows go in sorted
-- order, so they never deadlock), and the jobs go in. A job whose unique
-- key an unfinished job already holds conflicts on jobs_unique and is
-- skipped (also against a job earlier in the same batch); RETURNING tells
-- the caller which went in. A due job's run_at is the server's now.
WITH input AS MATERIALIZED (
    SELECT u.*
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::smallint[],
                $7::text[], $8::int[], $9::bigint[], $10::text[], $11::bigint[], $12::text[])
         WITH ORDINALITY
         AS u(id, tenant, task, queue, state, priority, payload, max_retries, timeout_ms,
              unique_key, run_at, serial_key, ord)),
numbered AS (
    SELECT i.id, i.queue, i.tenant,
           row_number() OVER (PARTITION BY i.queue, i.tenant ORDER BY i.ord) AS rn,
           count(*) OVER (PARTITION BY i.queue, i.tenant) AS n
    FROM input AS i WHERE i.state = 'queued'),
bumped AS (
    INSERT INTO fair AS f (queue, tenant, last)
    SELECT DISTINCT nb.queue, nb.tenant, coalesce(c.clock, 0) + nb.n
    FROM numbered AS nb LEFT JOIN clocks AS c ON c.queue = nb.queue
    ORDER BY nb.queue, nb.tenant
    ON CONFLICT (queue, tenant) DO UPDATE
    SET last = greatest(f.last, coalesce((SELECT clock FROM clocks WHERE queue = EXCLUDED.queue), 0))
             + (EXCLUDED.last - coalesce((SELECT clock FROM clocks WHERE queue = EXCLUDED.queue), 0))
    RETURNING f.queue, f.tenant, f.last)
INSERT INTO jobs (id, tenant, task, queue, state, priority, seq, payload, max_retries,
                  timeout_ms, unique_key, created_at, run_at, serial_key, serial_wait)
SELECT i.id, i.tenant, i.task, i.queue, i.state, i.priority,
       coalesce(b.last - nb.n + nb.rn, 0), i.payload::json, i.max_retries, i.timeout_ms,
       i.unique_key, now_ms(), CASE WHEN i.state = 'queued' THEN now_ms() ELSE i.run_at END,
       i.serial_key, i.serial_key IS NOT NULL
FROM input AS i
LEFT JOIN numbered AS nb ON nb.id = i.id
LEFT JOIN bumped AS b ON b.queue = i.queue AND b.tenant = i.tenant
ORDER BY i.ord
ON CONFLICT DO NOTHING
RETURNING id, created_at, run_at, tenant, serial_key
