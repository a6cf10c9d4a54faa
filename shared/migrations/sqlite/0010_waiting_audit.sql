-- The waiting steps, for maintenance's audit (a step whose parents all
-- ended should never still wait): small, since only waiting rows are in it.
CREATE INDEX jobs_waiting ON jobs (id) WHERE state = 'waiting';
