-- Orders, their print jobs and the status outbox: the durable queue of the core.

-- migrate:up
CREATE TABLE orders (
    id            TEXT PRIMARY KEY,
    number        TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    payload       TEXT NOT NULL,               -- the JSON as received, canonical form
    channel       TEXT NOT NULL,
    priority      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,               -- the backend's time, ISO 8601
    due_at        TEXT,
    received_at   REAL NOT NULL,               -- our clock, unix seconds
    source        TEXT NOT NULL DEFAULT 'push' -- push | recovery
);
CREATE INDEX orders_received ON orders(received_at);

CREATE TABLE print_jobs (
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
CREATE INDEX print_jobs_spool ON print_jobs(printer, state, priority DESC, id);
CREATE INDEX print_jobs_order ON print_jobs(order_id);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id         TEXT NOT NULL,
    event            TEXT NOT NULL,               -- received | printed | failed | ready | fulfilled
    idempotency_key  TEXT NOT NULL UNIQUE,
    payload          TEXT NOT NULL,
    created_at       REAL NOT NULL,
    delivered_at     REAL,
    attempts         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox(delivered_at, id);

CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- migrate:down
DROP TABLE meta;
DROP TABLE outbox;
DROP TABLE print_jobs;
DROP TABLE orders;
