-- Answers to signed requests that changed something (a reprint, a release…), by webhook-id: a sender's retry of the
-- same request, even after a restart, gets the first answer again instead of doing it a second time.

-- migrate:up
CREATE TABLE webhook_answers (
    webhook_id    TEXT PRIMARY KEY,
    fingerprint   TEXT NOT NULL,   -- sha256 over method, path and body: what a retry repeats
    status        INTEGER NOT NULL,
    content_type  TEXT NOT NULL,
    body          BLOB NOT NULL,
    expires_at    REAL NOT NULL    -- unix seconds (wall clock): forgotten after this
);
CREATE INDEX webhook_answers_expiry ON webhook_answers(expires_at);

-- migrate:down
DROP INDEX webhook_answers_expiry;
DROP TABLE webhook_answers;
