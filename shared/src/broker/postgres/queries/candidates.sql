-- Up to $2 queued jobs from the queues in $1 (in the order to serve them),
-- ranked as claim.sql ranks them and locked (SKIP LOCKED: rows another
-- claimer holds are passed over), leaving out the tasks in $3 (a cap or
-- rate refuses them now), the (task $4[i], tenant $5[i]) pairs (the tenant
-- is at its cap for the task) and tasks not in $6 (the claimer's handlers;
-- NULL for any). The caller admits them one by one.
WITH q AS MATERIALIZED (
    SELECT u.name, u.ord FROM unnest($1::text[]) WITH ORDINALITY AS u(name, ord)
    WHERE NOT EXISTS (SELECT 1 FROM queues p WHERE p.name = u.name AND p.paused)
    ORDER BY u.ord)
SELECT j.id, j.task, j.tenant
FROM q CROSS JOIN LATERAL (
    SELECT id, task, tenant FROM jobs
    WHERE state = 'queued' AND NOT serial_wait AND queue = q.name
      AND task <> ALL ($3::text[])
      AND ($6::text[] IS NULL OR task = ANY ($6::text[]))
      AND NOT EXISTS (SELECT 1 FROM unnest($4::text[], $5::text[]) AS b(task, tenant)
                      WHERE b.task = jobs.task AND b.tenant = jobs.tenant)
    ORDER BY priority DESC, seq, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED) AS j
LIMIT $2
