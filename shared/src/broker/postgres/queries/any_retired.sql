-- Does any queue in $1 hold a finished job older than $2 ms (the shortest
-- retention)? One seek per queue on jobs_finished, as a LATERAL ... LIMIT 1
-- (an EXISTS may be planned as a hash semi-join that reads every finished
-- job).
SELECT EXISTS (
  SELECT 1 FROM unnest($1::text[]) AS q(name)
  CROSS JOIN LATERAL (SELECT 1 FROM jobs
                      WHERE queue = q.name AND state IN ('succeeded', 'failed', 'cancelled')
                        AND finished_at < now_ms() - $2
                      LIMIT 1) AS old)
