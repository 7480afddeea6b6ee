-- An alert mail's tries that met the relay (it answered for this mail): the day's limit on a mail the relay keeps
-- deferring counts these. `attempts` counts every try, also those a relay that was down never answered: counting
-- those, a mail waiting out a long outage was given up before the relay ever saw it.

-- migrate:up
ALTER TABLE alert_mails ADD COLUMN relay_tries INTEGER NOT NULL DEFAULT 0;

-- migrate:down
ALTER TABLE alert_mails DROP COLUMN relay_tries;
