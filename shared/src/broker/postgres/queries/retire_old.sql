-- Workflow steps go with their workflow (workflow.rs), never alone.
-- Deletes up to $4 jobs of queue $1 that ended in state $2 before $3 ms ago
-- (jobs_finished order, skipping rows another node is deleting).
DELETE FROM jobs WHERE id IN (
  SELECT id FROM jobs
  WHERE queue = $1 AND state = $2 AND state IN ('succeeded', 'failed', 'cancelled')
    AND workflow_id IS NULL
    AND finished_at < now_ms() - $3
  ORDER BY finished_at
  LIMIT $4
  FOR UPDATE SKIP LOCKED)
