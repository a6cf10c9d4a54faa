-- Due scheduled and retrying jobs become queued, oldest due first, in a
-- bounded batch so one call never holds the write lock for long.
UPDATE jobs SET state = 'queued'
WHERE id IN (SELECT id FROM jobs
             WHERE state IN ('scheduled', 'retrying') AND run_at <= ?1
             ORDER BY run_at LIMIT ?2)
