-- A cancel for an order not here yet (the order still queued at the broker, or retried by its sender, the cancel sent
-- on another path): kept until the order comes, which is then stored cancelled and prints nothing, or until
-- retention.seen_days (like seen_orders) if it never does.

-- Below this schema a kept cancel is a seen-order record at its revision, its hash this mark: a release before kept
-- cancels takes the order coming below it as stale (2xx, nothing printed), not as an order to cook whole, and the way
-- up makes it a kept cancel again (the upgrade79 probe, M2: upgrade.sh's rollback dropped it, the order printed whole).

-- migrate:up
CREATE TABLE pending_cancels (
    order_id     TEXT PRIMARY KEY,
    revision     INTEGER NOT NULL,  -- the revision the cancel is: the order below it comes cancelled at it
    reason       TEXT,
    received_at  REAL NOT NULL,     -- our wall clock, unix seconds
    source       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX pending_cancels_at ON pending_cancels(received_at);
INSERT INTO pending_cancels(order_id, revision, reason, received_at, source)
    SELECT id, revision, NULL, seen_at, 'push' FROM seen_orders
    WHERE content_hash = 'cancel kept before its order' AND id NOT IN (SELECT id FROM orders);
DELETE FROM seen_orders WHERE content_hash = 'cancel kept before its order';

-- migrate:down
INSERT OR IGNORE INTO seen_orders(id, content_hash, seen_at, revision)
    SELECT order_id, 'cancel kept before its order', received_at, revision FROM pending_cancels
    WHERE order_id NOT IN (SELECT id FROM orders);
DROP TABLE pending_cancels;
