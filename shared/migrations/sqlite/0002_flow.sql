-- Flow control: fair share across tenants, task rates.

-- A queued job's fair-share sequence in its tenant: the claim order is
-- priority, then seq (round robin across tenants), then age.
ALTER TABLE jobs ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, seq, id) WHERE state = 'queued';

-- Permits in use: running jobs per task and tenant.
CREATE INDEX jobs_running ON jobs (task, tenant) WHERE state = 'running';

-- The last seq each tenant got in each queue.
CREATE TABLE fair (
    queue  TEXT    NOT NULL,
    tenant TEXT    NOT NULL,
    last   INTEGER NOT NULL,
    PRIMARY KEY (queue, tenant)
) WITHOUT ROWID;

-- The seq of the latest job claimed from each queue: where a tenant that
-- arrives now starts.
CREATE TABLE clocks (
    queue TEXT    NOT NULL PRIMARY KEY,
    clock INTEGER NOT NULL
) WITHOUT ROWID;

-- GCRA state of each rate-limited task (theoretical arrival time, us).
CREATE TABLE rates (
    task TEXT    NOT NULL PRIMARY KEY,
    tat  INTEGER NOT NULL
) WITHOUT ROWID;
