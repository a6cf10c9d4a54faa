-- Due scheduled and retrying jobs, oldest due first, in a bounded batch so
-- one call never holds the write lock for long. The caller gives each its
-- fair-share sequence and queues it.
-- Limits are written `?N + 0`: SQLite re-prepares a statement whose LIMIT
-- is a bare parameter every time that parameter is bound.
SELECT id, queue, tenant FROM jobs
WHERE state IN ('scheduled', 'retrying') AND run_at <= ?1
ORDER BY run_at LIMIT ?2 + 0
