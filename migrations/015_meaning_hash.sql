-- The content of an order (same id and revision: a duplicate, or a conflict) is the order it means, not its JSON
-- bytes: meaning_hash (see edge/orders/model.py meaning_hash) is compared where a row has one. content_hash keeps
-- the hash of the bytes, which a row written before has alone (an order's seen-order record outlives it by
-- retention.seen_days) and which an older version, after a rollback, still compares.

-- migrate:up
ALTER TABLE orders ADD COLUMN meaning_hash TEXT;
ALTER TABLE seen_orders ADD COLUMN meaning_hash TEXT;

-- migrate:down
ALTER TABLE seen_orders DROP COLUMN meaning_hash;
ALTER TABLE orders DROP COLUMN meaning_hash;
