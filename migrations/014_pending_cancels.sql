-- A cancel for an order not here yet (the order still queued at the broker, or retried by its sender, the cancel sent
-- on another path): kept until the order comes, which is then stored cancelled and prints nothing, or until
-- retention.seen_days (like seen_orders) if it never does.

-- migrate:up
CREATE TABLE pending_cancels (
    order_id     TEXT PRIMARY KEY,
    revision     INTEGER NOT NULL,  -- the revision the cancel is: the order below it comes cancelled at it
    reason       TEXT,
    received_at  REAL NOT NULL,     -- our wall clock, unix seconds
    source       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX pending_cancels_at ON pending_cancels(received_at);

-- migrate:down
DROP TABLE pending_cancels;
