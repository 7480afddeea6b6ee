-- The settings that shaped a job's bytes, written with its claim (no write of its own): language, line width and a
-- short hash of the rest (store name, footer, templates, printer options), e.g. "de 42 3fa9c1d2". `edge preview`
-- renders a printed job again with today's settings; when they differ from these, it says the paper may differ (the
-- receipt80 probe, R6). About 15 bytes a job, not its bytes (issue 17 counts the card's bytes per order). NULL: not
-- claimed since this column came.

-- migrate:up
ALTER TABLE print_jobs ADD COLUMN rendered_with TEXT;

-- migrate:down
ALTER TABLE print_jobs DROP COLUMN rendered_with;
