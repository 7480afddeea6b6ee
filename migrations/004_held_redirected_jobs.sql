-- Print jobs can be held (stale ticket waits for a person) or discarded, and remember where a failover moved them from.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt (the 12-step pattern), keeping ids.

-- migrate:up
CREATE TABLE print_jobs_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id         TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL CHECK (kind IN ('ticket', 'receipt')),
    station          TEXT,
    printer          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'printing', 'printed', 'failed', 'dead', 'held', 'discarded')),
    priority         INTEGER NOT NULL DEFAULT 0,
    copy             INTEGER NOT NULL DEFAULT 0,  -- 1: print with the KOPIE / COPY mark
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  REAL NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    printed_at       REAL,
    idempotency_key  TEXT NOT NULL UNIQUE,        -- order:kind:station:sequence
    redirected_from  TEXT,                        -- the printer a failover moved this job away from
    held_at          REAL,                        -- when it was found stale and held for a person
    released_at      REAL                         -- when a person released it: it prints even though it is old
);
INSERT INTO print_jobs_new(id, order_id, kind, station, printer, state, priority, copy, attempts, last_error,
                           next_attempt_at, created_at, printed_at, idempotency_key)
    SELECT id, order_id, kind, station, printer, state, priority, copy, attempts, last_error,
           next_attempt_at, created_at, printed_at, idempotency_key FROM print_jobs;
-- Ids of deleted jobs are never handed out again: the AUTOINCREMENT counter moves to the new table.
DELETE FROM sqlite_sequence WHERE name = 'print_jobs_new';
UPDATE sqlite_sequence SET name = 'print_jobs_new' WHERE name = 'print_jobs';
DROP TABLE print_jobs;
ALTER TABLE print_jobs_new RENAME TO print_jobs;
CREATE INDEX print_jobs_spool ON print_jobs(printer, state, priority DESC, id);
CREATE INDEX print_jobs_order ON print_jobs(order_id);

-- migrate:down
-- Held jobs go back in line and discarded ones are dropped: the old schema knows neither state.
CREATE TABLE print_jobs_old (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id         TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL CHECK (kind IN ('ticket', 'receipt')),
    station          TEXT,
    printer          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'printing', 'printed', 'failed', 'dead')),
    priority         INTEGER NOT NULL DEFAULT 0,
    copy             INTEGER NOT NULL DEFAULT 0,  -- 1: print with the KOPIE / COPY mark
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  REAL NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    printed_at       REAL,
    idempotency_key  TEXT NOT NULL UNIQUE         -- order:kind:station:sequence
);
INSERT INTO print_jobs_old(id, order_id, kind, station, printer, state, priority, copy, attempts, last_error,
                           next_attempt_at, created_at, printed_at, idempotency_key)
    SELECT id, order_id, kind, station, printer, CASE state WHEN 'held' THEN 'queued' ELSE state END, priority, copy,
           attempts, last_error, next_attempt_at, created_at, printed_at, idempotency_key
    FROM print_jobs WHERE state != 'discarded';
DELETE FROM sqlite_sequence WHERE name = 'print_jobs_old';
UPDATE sqlite_sequence SET name = 'print_jobs_old' WHERE name = 'print_jobs';
DROP TABLE print_jobs;
ALTER TABLE print_jobs_old RENAME TO print_jobs;
CREATE INDEX print_jobs_spool ON print_jobs(printer, state, priority DESC, id);
CREATE INDEX print_jobs_order ON print_jobs(order_id);
