-- Which of the queues in $1 have queued jobs (of the tasks in $2, the
-- claimer's handlers; NULL for any), and is anything due to promote (the
-- row with a NULL queue)? One index seek per queue, no lock: an idle
-- worker's poll costs one cheap read. The seek is a LATERAL ... LIMIT 1,
-- not an EXISTS: with statistics taken while the table was small, the
-- planner turned EXISTS into a hash semi-join that read every queued job
-- (4 ms at 8,000 queued, growing with the backlog).
SELECT q.name AS queue FROM unnest($1::text[]) AS q(name)
CROSS JOIN LATERAL (SELECT 1 FROM jobs
                    WHERE state = 'queued' AND NOT serial_wait AND queue = q.name
                      AND ($2::text[] IS NULL OR task = ANY ($2::text[]))
                    LIMIT 1) AS head
UNION ALL
SELECT NULL WHERE EXISTS (SELECT 1 FROM jobs
                          WHERE state IN ('scheduled', 'retrying') AND run_at <= now_ms())
