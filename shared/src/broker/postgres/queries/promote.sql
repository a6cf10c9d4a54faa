-- Due scheduled and retrying jobs, oldest due first, in a bounded batch,
-- locked and skipping those another node is promoting. The caller gives
-- each its fair-share place and queues it in the same transaction.
SELECT id, queue, tenant FROM jobs
WHERE state IN ('scheduled', 'retrying') AND run_at <= now_ms()
ORDER BY run_at LIMIT $1
FOR UPDATE SKIP LOCKED
