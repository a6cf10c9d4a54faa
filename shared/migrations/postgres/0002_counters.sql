-- Keyed counters (Coordination::count): provider keys' requests, 429s and
-- tokens per minute. A row is forgotten at `expires_at` (ms), deleted by
-- maintenance.
CREATE TABLE coord_counters (
    key        text   PRIMARY KEY,
    value      bigint NOT NULL,
    expires_at bigint NOT NULL
);
