-- The Postgres broker's tables, in the schema WEIR_POSTGRES_SCHEMA (the
-- connection's search_path). Times are milliseconds since the Unix epoch on
-- the database server's clock (now_ms()), the one clock every node shares
-- for leases, due times and rates.

CREATE FUNCTION now_ms() RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$;

-- The time now, not at the transaction's start: a claim may have waited
-- for a task's advisory lock, and its jobs start when it leases them.
CREATE FUNCTION clock_ms() RETURNS bigint LANGUAGE sql VOLATILE PARALLEL SAFE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE TABLE jobs (
    id               uuid     PRIMARY KEY,        -- UUIDv7 made by the client: the key is also the FIFO order
    tenant           text     NOT NULL,
    task             text     NOT NULL,
    queue            text     NOT NULL,
    state            text     NOT NULL,
    priority         smallint NOT NULL,
    seq              bigint   NOT NULL DEFAULT 0,  -- fair-share place within (queue, tenant)
    payload          json     NOT NULL,            -- json, not jsonb: never queried, kept as sent
    attempts         integer  NOT NULL DEFAULT 0,  -- counted at claim; the lease's fencing token
    attempt_base     integer  NOT NULL DEFAULT 0,  -- attempts that do not count against max_retries
    max_retries      integer  NOT NULL,
    timeout_ms       bigint,
    unique_key       text,
    result           json,
    error            text,
    progress         json,
    history          jsonb,                        -- ended attempts, oldest first (the last 10)
    created_at       bigint   NOT NULL,
    run_at           bigint   NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    lease_owner      text,
    lease_expires_at bigint,
    serial_key       text,                         -- a lane: (tenant, serial_key) run one at a time
    serial_seq       bigint   NOT NULL DEFAULT 0,  -- place in the lane
    serial_wait      boolean  NOT NULL DEFAULT false, -- a lane member behind its head: out of the claim
    CONSTRAINT jobs_state_known CHECK (state IN ('waiting', 'scheduled', 'queued', 'running',
                                                 'retrying', 'succeeded', 'failed', 'cancelled'))
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_insert_scale_factor = 0.05,
        autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);

-- Every index but jobs_tenant is partial: it holds only the rows one query
-- needs, and stays small however many finished jobs the table keeps.
CREATE INDEX jobs_claim    ON jobs (queue, priority DESC, seq, id) WHERE state = 'queued' AND NOT serial_wait;
CREATE INDEX jobs_due      ON jobs (run_at) WHERE state IN ('scheduled', 'retrying');
CREATE INDEX jobs_leases   ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_running  ON jobs (task, tenant) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (queue, state, finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX jobs_tenant   ON jobs (tenant, id);
CREATE INDEX jobs_serial   ON jobs (tenant, serial_key, serial_seq)
    WHERE serial_key IS NOT NULL AND state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying');
CREATE UNIQUE INDEX jobs_unique ON jobs (tenant, task, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying');

CREATE TABLE queues (
    name       text    PRIMARY KEY,
    paused     boolean NOT NULL DEFAULT false,
    updated_at bigint  NOT NULL
);

-- The next place in each serial lane.
CREATE TABLE serial_lanes (
    tenant text   NOT NULL,
    key    text   NOT NULL,
    next   bigint NOT NULL,
    PRIMARY KEY (tenant, key)
);

-- The last seq each tenant got in each queue.
CREATE TABLE fair (
    queue  text   NOT NULL,
    tenant text   NOT NULL,
    last   bigint NOT NULL,
    PRIMARY KEY (queue, tenant)
);

-- The seq of the latest job claimed from each queue: where a tenant that
-- arrives now starts. Written asynchronously, never in the claim.
CREATE TABLE clocks (
    queue text   PRIMARY KEY,
    clock bigint NOT NULL
);

-- GCRA state of each rate-limited task (theoretical arrival time, us),
-- written only under the task's advisory lock.
CREATE TABLE rates (
    task text   PRIMARY KEY,
    tat  bigint NOT NULL
);

CREATE TABLE workers (
    id         text   PRIMARY KEY,
    info       text   NOT NULL,                    -- JSON WorkerInfo
    expires_at bigint NOT NULL
);

-- Schedules: each tick fires once, recorded in the same transaction as its job.
CREATE TABLE cron_fires (
    schedule  text   NOT NULL,
    fire_time bigint NOT NULL,
    job_id    uuid   NOT NULL,
    PRIMARY KEY (schedule, fire_time)
);

CREATE TABLE schedules (
    name      text    PRIMARY KEY,
    last_fire bigint,
    last_job  uuid,
    paused    boolean NOT NULL DEFAULT false
);

-- Coordination that is not jobs: keyed GCRA limiters (tat, us) and cooldowns.
CREATE TABLE coord_limits (
    key text   PRIMARY KEY,
    tat bigint NOT NULL
);

CREATE TABLE coord_cooldowns (
    key      text   PRIMARY KEY,
    until_ms bigint NOT NULL
);
