-- MQTT intake: messages on the orders topic that were not a valid order (acknowledged so the broker does not send
-- them forever, kept here for a person, reported on the events topic), and nothing else: the outbox's MQTT
-- position is a cursor in meta, so the outbox costs no extra write per event while MQTT is off.

-- migrate:up
CREATE TABLE mqtt_rejects (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at   REAL NOT NULL,               -- our clock, unix seconds
    topic         TEXT NOT NULL,
    order_id      TEXT,                        -- when the payload named one
    payload       BLOB NOT NULL,               -- as received (it may not even be UTF-8)
    error         TEXT NOT NULL,               -- the body the HTTP API would answer, JSON
    published_at  REAL                         -- reported on <prefix>/events (PUBACK received)
);
CREATE INDEX mqtt_rejects_unpublished ON mqtt_rejects(published_at, id);

-- migrate:down
DROP TABLE mqtt_rejects;
