-- Is there anything to claim in the queues of ?1 (a JSON array), or anything
-- due to promote? A read, so an idle worker never takes the write lock.
SELECT EXISTS (SELECT 1 FROM jobs
               WHERE state = 'queued' AND queue IN (SELECT value FROM json_each(?1)))
    OR EXISTS (SELECT 1 FROM jobs
               WHERE state IN ('scheduled', 'retrying') AND run_at <= ?2)
