-- Does any queue in $1 hold a finished job older than $2 ms (the shortest
-- retention)? One seek per queue and outcome on jobs_finished.
SELECT EXISTS (
  SELECT 1 FROM unnest($1::text[]) AS q(name)
  WHERE EXISTS (SELECT 1 FROM jobs
                WHERE queue = q.name AND state IN ('succeeded', 'failed', 'cancelled')
                  AND finished_at < now_ms() - $2))
