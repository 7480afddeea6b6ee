-- A seen-order record is either an order stored here once (purged since when no order row is left: a revision of it
-- sent again is stale) or an order recovery classed as history on a new box or after a restore (never stored: recorded
-- only so a sender's retry of that revision is a duplicate). A higher revision of a history order is a change made
-- since, stored as the new order it is; only the flag tells the two apart.

-- migrate:up
ALTER TABLE seen_orders ADD COLUMN history INTEGER NOT NULL DEFAULT 0;

-- migrate:down
ALTER TABLE seen_orders DROP COLUMN history;
