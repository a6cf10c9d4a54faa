-- Does any queue in ?1 (a JSON array) hold a finished job older than ?2
-- (the shortest retention)? A read, one seek per queue and outcome on
-- jobs_finished, so maintenance takes the write lock only when there is
-- something to delete.
SELECT EXISTS (
  SELECT 1 FROM json_each(?1) AS q
  WHERE EXISTS (SELECT 1 FROM jobs
                WHERE queue = q.value AND state IN ('succeeded', 'failed', 'cancelled')
                  AND finished_at < ?2)
)
