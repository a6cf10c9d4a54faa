-- Finished jobs per queue, outcome and age: retention deletes the oldest
-- past their age or past the count a queue keeps, a batch at a time.
CREATE INDEX jobs_finished ON jobs (queue, state, finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
