-- The store this database belongs to: recorded by the agent at its first start (agent.store_id), checked by
-- `edge restore` and at every start, so one store's database (and its recovery cursor) never serves another.

-- migrate:up
CREATE TABLE store_identity (
    singleton    INTEGER PRIMARY KEY CHECK (singleton = 1),  -- one row at most
    store_id     TEXT NOT NULL,
    recorded_at  REAL NOT NULL                                -- unix seconds
);

-- migrate:down
DROP TABLE store_identity;
