-- Manager alerts: throttle state per group, the mail outbox, silences and a log of what was sent or held.

-- migrate:up
CREATE TABLE alert_groups (
    key               TEXT PRIMARY KEY,            -- type:subject, e.g. printer_offline:kitchen
    type              TEXT NOT NULL,
    subject           TEXT NOT NULL,
    severity          TEXT NOT NULL,               -- critical | warning
    state             TEXT NOT NULL,               -- firing | resolved: the condition now
    notified          TEXT NOT NULL DEFAULT 'resolved', -- firing | resolved: what the manager was last told
    first_at          REAL NOT NULL,               -- start of the current episode
    changed_at        REAL NOT NULL,               -- last firing/resolved transition
    last_sent_at      REAL,                        -- last mail of this group (for group_interval / repeat_interval)
    fires_since_mail  INTEGER NOT NULL DEFAULT 0,  -- occurrences not yet reported in a mail
    fires_total       INTEGER NOT NULL DEFAULT 0,
    new_items         INTEGER NOT NULL DEFAULT 0,  -- siblings that joined since the last mail
    details           TEXT NOT NULL DEFAULT '{}',  -- JSON: what the mail says about it
    held_reason       TEXT                         -- why a due mail waits (silenced, outside_hours, cap, ...)
);

CREATE TABLE alert_mails (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    group_key        TEXT,                         -- NULL for test and digest mails
    kind             TEXT NOT NULL,                -- firing | resolved | reminder | digest | test
    recipients       TEXT NOT NULL,                -- JSON list
    subject          TEXT NOT NULL,
    text_body        TEXT NOT NULL,
    html_body        TEXT NOT NULL,
    created_at       REAL NOT NULL,
    next_attempt_at  REAL NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    sent_at          REAL
);
CREATE INDEX alert_mails_pending ON alert_mails(sent_at, next_attempt_at);
CREATE INDEX alert_mails_created ON alert_mails(created_at);

CREATE TABLE alert_silences (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    matcher     TEXT NOT NULL,                     -- type or type:subject, shell wildcards allowed
    starts_at   REAL NOT NULL,
    ends_at     REAL NOT NULL,
    comment     TEXT NOT NULL DEFAULT ''
);

CREATE TABLE alert_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         REAL NOT NULL,
    group_key  TEXT NOT NULL,
    action     TEXT NOT NULL,                      -- mailed | suppressed | digest
    detail     TEXT NOT NULL DEFAULT '',           -- mail kind, or why it was suppressed
    count      INTEGER NOT NULL DEFAULT 1          -- occurrences it stands for
);
CREATE INDEX alert_log_at ON alert_log(at);

-- migrate:down
DROP TABLE alert_log;
DROP TABLE alert_silences;
DROP TABLE alert_mails;
DROP TABLE alert_groups;
