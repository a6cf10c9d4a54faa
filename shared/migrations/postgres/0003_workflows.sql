-- Workflows: DAGs of jobs. A step is an ordinary job with a few more
-- columns; `waiting` is a step with `pending` unfinished parents. A
-- parent's terminal transition releases its children in the same
-- transaction (broker/postgres/workflow.rs).
ALTER TABLE jobs
    ADD COLUMN workflow_id       uuid,
    ADD COLUMN step              text,
    ADD COLUMN step_no           integer,                        -- its place in the submitted list
    ADD COLUMN needs             jsonb,                          -- parent step ids
    ADD COLUMN pending           integer NOT NULL DEFAULT 0,
    ADD COLUMN on_parent_failure text,
    ADD COLUMN failed_parent     text,                           -- the first parent that failed or was cancelled
    ADD COLUMN skipped           boolean NOT NULL DEFAULT false;

-- A workflow's steps by state: whether any is unfinished, failed or
-- cancelled is a few index seeks.
CREATE INDEX jobs_workflow ON jobs (workflow_id, state) WHERE workflow_id IS NOT NULL;

-- parent -> child, written at submit.
CREATE TABLE job_edges (
    parent uuid NOT NULL,
    child  uuid NOT NULL,
    PRIMARY KEY (parent, child)
);
CREATE INDEX job_edges_child ON job_edges (child);

CREATE TABLE workflows (
    id               uuid    PRIMARY KEY,
    tenant           text    NOT NULL,
    name             text    NOT NULL,
    state            text    NOT NULL,                -- running until every step ended, then derived
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       bigint  NOT NULL,
    finished_at      bigint
);
CREATE INDEX workflows_tenant ON workflows (tenant, id);
CREATE INDEX workflows_finished ON workflows (finished_at) WHERE finished_at IS NOT NULL;
