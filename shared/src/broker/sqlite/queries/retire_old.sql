-- Workflow steps go with their workflow (workflow.rs), never alone.
-- Deletes up to ?4 jobs of queue ?1 that ended in state ?2 before ?3.
-- (The IN term lets SQLite use the partial index jobs_finished.)
DELETE FROM jobs WHERE id IN (
  SELECT id FROM jobs
  WHERE queue = ?1 AND state = ?2 AND state IN ('succeeded', 'failed', 'cancelled')
    AND workflow_id IS NULL
    AND finished_at < ?3
  LIMIT ?4
)
