-- Jobs by state: what the status page, the watchdog's status line and the alert checks read every few seconds
-- (jobs waiting, held, dead) is a handful of rows, found without reading every printed job retention keeps (tens of
-- thousands after a busy month). The spool's own index leads with the printer, so it could not serve these.

-- migrate:up
CREATE INDEX print_jobs_state ON print_jobs(state);

-- migrate:down
DROP INDEX print_jobs_state;
