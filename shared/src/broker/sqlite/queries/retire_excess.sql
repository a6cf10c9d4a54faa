-- Workflow steps go with their workflow (workflow.rs), never alone.
-- Deletes up to ?4 of the jobs of queue ?1 in state ?2 beyond the newest ?3.
DELETE FROM jobs WHERE id IN (
  SELECT id FROM jobs
  WHERE queue = ?1 AND state = ?2 AND state IN ('succeeded', 'failed', 'cancelled')
    AND workflow_id IS NULL
  ORDER BY finished_at DESC
  LIMIT ?4 OFFSET ?3
)
