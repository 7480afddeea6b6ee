-- Every order id ever stored with its content hash, kept far longer than the orders (retention.seen_days): an old
-- order sent again after retention purged it (a backend restored from a backup, a re-sent push) is then a duplicate
-- or a conflict, never a new print.

-- migrate:up
CREATE TABLE seen_orders (
    id            TEXT PRIMARY KEY,
    content_hash  TEXT NOT NULL,
    seen_at       REAL NOT NULL   -- unix seconds: when stored, or the order's own created_at if later (a box clock in 1970)
) WITHOUT ROWID;
CREATE INDEX seen_orders_at ON seen_orders(seen_at);
INSERT OR IGNORE INTO seen_orders(id, content_hash, seen_at)
    SELECT id, content_hash, MAX(received_at, COALESCE((julianday(created_at) - 2440587.5) * 86400.0, 0)) FROM orders;

-- migrate:down
DROP TABLE seen_orders;
