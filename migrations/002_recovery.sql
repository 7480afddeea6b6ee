-- Recovery runs against the central API: one row per run with its phases, and what validation saw.

-- migrate:up
CREATE TABLE recovery_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger       TEXT NOT NULL,                -- link_back | schedule | manual | startup
    state         TEXT NOT NULL DEFAULT 'waiting'
                  CHECK (state IN ('waiting', 'validation', 'processing', 'completion', 'completed', 'failed', 'cancelled')),
    since_cursor  TEXT NOT NULL DEFAULT '',     -- the confirmed cursor the run started from
    next_cursor   TEXT,                         -- where validation ended; stored as confirmed only on completion
    created_at    REAL NOT NULL,
    started_at    REAL,                         -- after the start delay
    finished_at   REAL,
    phases        TEXT NOT NULL DEFAULT '[]',   -- JSON [{"phase", "started_at", "finished_at"}]
    counts        TEXT NOT NULL DEFAULT '{}',   -- JSON {"missing": n, "present": n, "conflict": n, "invalid": n, "stored": n}
    errors        TEXT NOT NULL DEFAULT '[]'    -- JSON list of strings
);
CREATE INDEX recovery_runs_state ON recovery_runs(state);

CREATE TABLE recovery_items (
    run_id      INTEGER NOT NULL REFERENCES recovery_runs(id) ON DELETE CASCADE,
    order_id    TEXT NOT NULL,
    class       TEXT NOT NULL CHECK (class IN ('missing', 'present', 'conflict', 'invalid')),
    payload     TEXT,                           -- missing orders: the JSON to store in processing
    priority    INTEGER NOT NULL DEFAULT 0,
    due_ts      REAL,                           -- unix seconds, for the processing order
    created_ts  REAL,
    detail      TEXT,                           -- why an order is invalid
    PRIMARY KEY (run_id, order_id)
);
CREATE INDEX recovery_items_order ON recovery_items(run_id, class, priority DESC, due_ts, created_ts);

-- migrate:down
DROP TABLE recovery_items;
DROP TABLE recovery_runs;
