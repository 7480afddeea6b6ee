-- Order revisions: a higher revision of an order changes it (or cancels it) and reaches the kitchen as a change or
-- void ticket. Every revision's JSON is kept once an order has more than one, so a job prints the revision it was
-- made for (a ticket on paper is diffed against what it showed). Jobs say which revision they show and, for change
-- and void tickets, which revision on paper they differ from. The seen-order record keeps the revision, so an old
-- revision re-sent after retention purged the order is stale, not new.

-- migrate:up
ALTER TABLE orders ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE orders ADD COLUMN status TEXT NOT NULL DEFAULT 'open';  -- open | cancelled
ALTER TABLE seen_orders ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE print_jobs ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;  -- the order's revision this job shows
ALTER TABLE print_jobs ADD COLUMN variant TEXT;  -- NULL: a whole ticket or receipt; change | cancel | added
ALTER TABLE print_jobs ADD COLUMN change_from INTEGER;  -- change and cancel: the revision on paper it differs from
CREATE TABLE order_revisions (
    order_id      TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    revision      INTEGER NOT NULL,
    status        TEXT NOT NULL,            -- open | cancelled
    content_hash  TEXT NOT NULL,
    payload       TEXT NOT NULL,            -- the canonical JSON of this revision
    received_at   REAL NOT NULL,            -- our wall clock, unix seconds
    source        TEXT NOT NULL,
    PRIMARY KEY (order_id, revision)
) WITHOUT ROWID;
-- Up again after a rollback: orders (and their jobs, seen records) take the revision and status their JSON says,
-- or a sender's retry of a change or cancel already stored would be new again.
UPDATE orders SET
    revision = COALESCE(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.revision') END, 1),
    status = CASE WHEN json_valid(payload) AND json_extract(payload, '$.status') = 'cancelled'
                  THEN 'cancelled' ELSE 'open' END;
UPDATE print_jobs SET revision = (SELECT o.revision FROM orders o WHERE o.id = print_jobs.order_id);
UPDATE seen_orders SET revision = COALESCE((SELECT o.revision FROM orders o WHERE o.id = seen_orders.id), 1);

-- migrate:down
-- Orders keep their current revision's JSON; jobs of older revisions then print that. A change or STORNO ticket
-- still to print would print as the whole order there (a cancelled order made again): it waits as dead, saying why.
UPDATE print_jobs SET
    state = 'dead',
    last_error = 'a ' || CASE variant WHEN 'cancel' THEN 'STORNO (cancel)' ELSE variant END
        || ' ticket of a newer version, which this one would print as the whole order: tell the kitchen, then discard it'
WHERE variant IS NOT NULL AND state NOT IN ('printed', 'dead', 'discarded');
DROP TABLE order_revisions;
ALTER TABLE print_jobs DROP COLUMN change_from;
ALTER TABLE print_jobs DROP COLUMN variant;
ALTER TABLE print_jobs DROP COLUMN revision;
ALTER TABLE seen_orders DROP COLUMN revision;
ALTER TABLE orders DROP COLUMN status;
ALTER TABLE orders DROP COLUMN revision;
