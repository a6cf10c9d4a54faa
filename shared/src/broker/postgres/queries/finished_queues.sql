-- The queues that hold finished jobs: one index seek per queue (a skip
-- scan over jobs_finished, written out), however many jobs there are.
WITH RECURSIVE q(name) AS (
  SELECT min(queue) FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled')
  UNION ALL
  SELECT (SELECT min(queue) FROM jobs
          WHERE state IN ('succeeded', 'failed', 'cancelled') AND queue > q.name)
  FROM q WHERE q.name IS NOT NULL
)
SELECT name FROM q WHERE name IS NOT NULL
