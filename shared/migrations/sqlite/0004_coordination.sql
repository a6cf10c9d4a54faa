-- Coordination that is not jobs (Coordination in broker/mod.rs).
-- Keyed GCRA limiters: the theoretical arrival time (us) per key. A row
-- whose tat has passed carries no state and is deleted by maintenance.
CREATE TABLE coord_limits (
    key TEXT PRIMARY KEY,
    tat INTEGER NOT NULL
) WITHOUT ROWID;

-- Keyed cooldowns: the key is skipped by every caller until `until_ms`.
CREATE TABLE coord_cooldowns (
    key TEXT PRIMARY KEY,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;
