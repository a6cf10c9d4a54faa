-- Inserts a whole batch in one statement, one array per column. A job whose
-- unique key an unfinished job already holds conflicts on jobs_unique and is
-- skipped (also against a job earlier in the same batch); RETURNING tells
-- the caller which went in. A due job's run_at is the server's now.
INSERT INTO jobs (id, tenant, task, queue, state, priority, seq, payload, max_retries,
                  timeout_ms, unique_key, created_at, run_at)
SELECT u.id, u.tenant, u.task, u.queue, u.state, u.priority, u.seq, u.payload::json,
       u.max_retries, u.timeout_ms, u.unique_key, now_ms(),
       CASE WHEN u.state = 'queued' THEN now_ms() ELSE u.run_at END
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::smallint[],
            $7::bigint[], $8::text[], $9::int[], $10::bigint[], $11::text[], $12::bigint[])
     AS u(id, tenant, task, queue, state, priority, seq, payload, max_retries, timeout_ms,
          unique_key, run_at)
ON CONFLICT DO NOTHING
RETURNING id, created_at, run_at
