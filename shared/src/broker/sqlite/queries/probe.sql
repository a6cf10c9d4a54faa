-- Which of the queues in ?1 (a JSON array) have queued jobs, and is
-- anything due to promote (the row with a NULL queue)? A read, so an idle
-- worker never takes the write lock, and a claim only visits queues that
-- have work: one index seek per queue (jobs of tasks outside ?3, the
-- claimer's handlers, do not count; NULL for any).
SELECT q.value AS queue FROM json_each(?1) AS q
WHERE EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND serial_wait = 0 AND queue = q.value
              AND (?3 IS NULL OR task IN (SELECT value FROM json_each(?3))))
UNION ALL
SELECT NULL WHERE EXISTS (SELECT 1 FROM jobs
                          WHERE state IN ('scheduled', 'retrying') AND run_at <= ?2)
