-- Why a job is held: 'stale' (waited too long; a person releases or discards it) or 'no_printer' (its printer left
-- the config and nothing serves its station now; it moves on by itself once a route is back).

-- migrate:up
ALTER TABLE print_jobs ADD COLUMN held_reason TEXT;
UPDATE print_jobs SET held_reason = 'stale' WHERE state = 'held';

-- migrate:down
ALTER TABLE print_jobs DROP COLUMN held_reason;
