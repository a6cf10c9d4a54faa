-- Schedules: each tick fires once, recorded in the same transaction as its job.

CREATE TABLE cron_fires (
    schedule  TEXT    NOT NULL,
    fire_time INTEGER NOT NULL,
    job_id    TEXT    NOT NULL,
    PRIMARY KEY (schedule, fire_time)
) WITHOUT ROWID;

CREATE TABLE schedules (
    name      TEXT    NOT NULL PRIMARY KEY,
    last_fire INTEGER,
    last_job  TEXT,
    paused    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
