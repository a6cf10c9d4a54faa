-- Due scheduled and retrying jobs, oldest due first, in a bounded batch so
-- one call never holds the write lock for long. The caller gives each its
-- fair-share sequence and queues it.
SELECT id, queue, tenant FROM jobs
WHERE state IN ('scheduled', 'retrying') AND run_at <= ?1
ORDER BY run_at LIMIT ?2
