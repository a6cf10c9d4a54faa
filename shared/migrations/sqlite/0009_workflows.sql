-- Workflows: DAGs of jobs. A step is an ordinary job with a few more
-- columns; `waiting` is a step with `pending` unfinished parents. A
-- parent's terminal transition releases its children in the same
-- transaction (broker/sqlite/workflow.rs).
ALTER TABLE jobs ADD COLUMN workflow_id TEXT;
ALTER TABLE jobs ADD COLUMN step TEXT;
ALTER TABLE jobs ADD COLUMN step_no INTEGER;                  -- its place in the submitted list
ALTER TABLE jobs ADD COLUMN needs TEXT;                       -- JSON array of parent step ids
ALTER TABLE jobs ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN on_parent_failure TEXT;
ALTER TABLE jobs ADD COLUMN failed_parent TEXT;               -- the first parent that failed or was cancelled
ALTER TABLE jobs ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;

-- A workflow's steps by state: whether any is unfinished, failed or
-- cancelled is a few index seeks.
CREATE INDEX jobs_workflow ON jobs (workflow_id, state) WHERE workflow_id IS NOT NULL;

-- parent -> child, written at submit.
CREATE TABLE job_edges (
    parent TEXT NOT NULL,
    child  TEXT NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE INDEX job_edges_child ON job_edges (child);

CREATE TABLE workflows (
    id               TEXT    NOT NULL PRIMARY KEY,
    tenant           TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    state            TEXT    NOT NULL,              -- running until every step ended, then derived
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER
) WITHOUT ROWID;
CREATE INDEX workflows_tenant ON workflows (tenant, id);
CREATE INDEX workflows_finished ON workflows (finished_at) WHERE finished_at IS NOT NULL;
