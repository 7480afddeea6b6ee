-- Alert mails get a state (a mail refused for good is dead-lettered, a person retries or discards it), the recipient
-- list is read at each attempt (audience) with each recipient's answer kept, and a stable Message-ID. Groups remember
-- the severity and the kind of the last news (a rise to critical is news; the storm guard) and when a critical mail
-- last went out. The digest remembers the last log line it covered instead of a time a clock step can move.

-- migrate:up
ALTER TABLE alert_mails ADD COLUMN state TEXT NOT NULL DEFAULT 'pending'; -- pending | sent | dead | discarded
ALTER TABLE alert_mails ADD COLUMN audience TEXT NOT NULL DEFAULT 'to';   -- to | critical: alerts.to (+ critical_to)
ALTER TABLE alert_mails ADD COLUMN delivered TEXT NOT NULL DEFAULT '[]';  -- JSON: recipients that accepted it
ALTER TABLE alert_mails ADD COLUMN refused TEXT NOT NULL DEFAULT '{}';    -- JSON: recipient -> refusal for good (5xx)
ALTER TABLE alert_mails ADD COLUMN message_id TEXT;                       -- the same on every attempt
UPDATE alert_mails SET state = 'sent' WHERE sent_at IS NOT NULL;
UPDATE alert_mails SET audience = 'critical'
    WHERE group_key IN (SELECT key FROM alert_groups WHERE severity = 'critical');
UPDATE alert_mails SET audience = 'critical' WHERE kind = 'test';
UPDATE alert_mails SET message_id = '<alert-' || id || '.' || CAST(created_at AS INTEGER) || '@edge-agent>';
CREATE INDEX alert_mails_state ON alert_mails(state, next_attempt_at);

ALTER TABLE alert_groups ADD COLUMN notified_severity TEXT;   -- severity of the last news told: a rise is news again
ALTER TABLE alert_groups ADD COLUMN mailed TEXT;              -- firing | resolved: what the last mail (not digest) said
ALTER TABLE alert_groups ADD COLUMN critical_mail_at REAL;    -- last critical firing mail: the storm guard's window
UPDATE alert_groups SET notified_severity = severity WHERE notified = 'firing';
UPDATE alert_groups SET mailed = notified WHERE last_sent_at IS NOT NULL;

UPDATE meta SET value = json_object(
        'at', CAST(value AS REAL),
        'log_id', (SELECT COALESCE(MAX(id), 0) FROM alert_log WHERE at <= CAST(meta.value AS REAL)))
    WHERE key = 'alerts_last_digest';

-- migrate:down
-- The old schema only knows sent or waiting: mails a person gave up on count as sent, so they are not sent again.
UPDATE alert_mails SET sent_at = created_at WHERE state IN ('dead', 'discarded') AND sent_at IS NULL;
DROP INDEX alert_mails_state;
ALTER TABLE alert_mails DROP COLUMN message_id;
ALTER TABLE alert_mails DROP COLUMN refused;
ALTER TABLE alert_mails DROP COLUMN delivered;
ALTER TABLE alert_mails DROP COLUMN audience;
ALTER TABLE alert_mails DROP COLUMN state;
ALTER TABLE alert_groups DROP COLUMN critical_mail_at;
ALTER TABLE alert_groups DROP COLUMN mailed;
ALTER TABLE alert_groups DROP COLUMN notified_severity;
UPDATE meta SET value = CAST(json_extract(value, '$.at') AS TEXT) WHERE key = 'alerts_last_digest';
