-- An alert mail's tries whose whole message went to the relay without its final answer (the line lost after the
-- body, or no answer within smtp.data_timeout_s): each may have delivered it (RFC 1047). The outbox sends such a mail
-- once more, and after the second such try takes it as delivered; counted here so that a restart in between does
-- not start again.

-- migrate:up
ALTER TABLE alert_mails ADD COLUMN unanswered INTEGER NOT NULL DEFAULT 0;

-- migrate:down
ALTER TABLE alert_mails DROP COLUMN unanswered;
