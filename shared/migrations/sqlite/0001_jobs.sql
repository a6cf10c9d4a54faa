-- The embedded broker's tables. Times are milliseconds since the Unix epoch.

CREATE TABLE jobs (
    id               TEXT    NOT NULL PRIMARY KEY,  -- UUIDv7: time-ordered, so the key is also the FIFO order
    tenant           TEXT    NOT NULL,
    task             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    payload          TEXT    NOT NULL,              -- JSON
    attempts         INTEGER NOT NULL DEFAULT 0,    -- counted at claim; also the lease's fencing token
    attempt_base     INTEGER NOT NULL DEFAULT 0,    -- attempts that do not count against max_retries
    max_retries      INTEGER NOT NULL,
    timeout_ms       INTEGER,
    unique_key       TEXT,
    result           TEXT,                          -- JSON
    error            TEXT,
    progress         TEXT,                          -- JSON
    created_at       INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER
) WITHOUT ROWID;

-- The claim query reads exactly this: queued jobs of one queue, highest
-- priority first, then oldest. Partial, so it holds only what is claimable.
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, id) WHERE state = 'queued';

-- Promotion of due delayed and retrying jobs.
CREATE INDEX jobs_due ON jobs (run_at) WHERE state IN ('scheduled', 'retrying');

-- The reaper's scan for expired leases.
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';

-- Listing newest first, per tenant.
CREATE INDEX jobs_tenant ON jobs (tenant, id);

-- Counts per queue and state, answered from the index alone.
CREATE INDEX jobs_queue_state ON jobs (queue, state);

-- A unique key is held only while its job is unfinished.
CREATE UNIQUE INDEX jobs_unique ON jobs (tenant, task, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'retrying');

CREATE TABLE queues (
    name       TEXT    NOT NULL PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);

CREATE TABLE workers (
    id         TEXT    NOT NULL PRIMARY KEY,
    info       TEXT    NOT NULL,                    -- JSON WorkerInfo
    expires_at INTEGER NOT NULL
);
