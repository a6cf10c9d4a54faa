-- Serial keys: the jobs of one tenant with one serial key (a lane) run one
-- at a time, in enqueue order. serial_seq is a job's place in its lane;
-- serial_wait marks a member that is not the lane's head: queued (or
-- scheduled) but out of the claim until every member before it has ended.
ALTER TABLE jobs ADD COLUMN serial_key TEXT;
ALTER TABLE jobs ADD COLUMN serial_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN serial_wait INTEGER NOT NULL DEFAULT 0;

DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, seq, id)
    WHERE state = 'queued' AND serial_wait = 0;

-- A lane's unfinished members in order: its head is the first.
CREATE INDEX jobs_serial ON jobs (tenant, serial_key, serial_seq)
    WHERE serial_key IS NOT NULL AND state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying');

-- The next place in each lane.
CREATE TABLE serial_lanes (
    tenant TEXT    NOT NULL,
    key    TEXT    NOT NULL,
    next   INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
