-- Each job's ended attempts, oldest first, as a JSON array of
-- {"a": attempt, "w": worker, "s": started, "f": finished, "o": outcome, "e": error}
-- (the last 10 kept).
ALTER TABLE jobs ADD COLUMN history TEXT;
