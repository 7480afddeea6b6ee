-- A recovery item may be history: an order created well before the database may have printed anything it does not
-- know (a new box's first start, a restore), recorded as seen and never printed. SQLite changes a CHECK only by
-- building the table again.

-- migrate:up
CREATE TABLE recovery_items_new (
    run_id      INTEGER NOT NULL REFERENCES recovery_runs(id) ON DELETE CASCADE,
    order_id    TEXT NOT NULL,
    class       TEXT NOT NULL CHECK (class IN ('missing', 'present', 'conflict', 'invalid', 'history')),
    payload     TEXT,                           -- missing orders: the JSON to store in processing
    priority    INTEGER NOT NULL DEFAULT 0,
    due_ts      REAL,                           -- unix seconds, for the processing order
    created_ts  REAL,
    detail      TEXT,                           -- why an order is invalid
    PRIMARY KEY (run_id, order_id)
);
INSERT INTO recovery_items_new SELECT run_id, order_id, class, payload, priority, due_ts, created_ts, detail
    FROM recovery_items;
DROP TABLE recovery_items;
ALTER TABLE recovery_items_new RENAME TO recovery_items;
CREATE INDEX recovery_items_order ON recovery_items(run_id, class, priority DESC, due_ts, created_ts);

-- migrate:down
CREATE TABLE recovery_items_old (
    run_id      INTEGER NOT NULL REFERENCES recovery_runs(id) ON DELETE CASCADE,
    order_id    TEXT NOT NULL,
    class       TEXT NOT NULL CHECK (class IN ('missing', 'present', 'conflict', 'invalid')),
    payload     TEXT,
    priority    INTEGER NOT NULL DEFAULT 0,
    due_ts      REAL,
    created_ts  REAL,
    detail      TEXT,
    PRIMARY KEY (run_id, order_id)
);
-- History was nothing to do, as present is.
INSERT INTO recovery_items_old SELECT run_id, order_id, CASE class WHEN 'history' THEN 'present' ELSE class END,
    payload, priority, due_ts, created_ts, detail FROM recovery_items;
DROP TABLE recovery_items;
ALTER TABLE recovery_items_old RENAME TO recovery_items;
CREATE INDEX recovery_items_order ON recovery_items(run_id, class, priority DESC, due_ts, created_ts);
