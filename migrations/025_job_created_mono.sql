-- When each print job was stored on the box's monotonic clock (seconds since boot, as the agent's clock reads it): a
-- start after a kill in the same boot reads the waits of the jobs stored since that boot began off it, not off a wall
-- clock NTP or a person may have stepped meanwhile (the prom82 probe, F2: fresh tickets held as 2 h stale). Which
-- rows are of this boot: meta 'jobs_boot' (edge/store/orders.py note_boot). NULL for rows from before; 9 bytes a job row.

-- migrate:up
ALTER TABLE print_jobs ADD COLUMN created_mono REAL;

-- migrate:down
DELETE FROM meta WHERE key = 'jobs_boot';
ALTER TABLE print_jobs DROP COLUMN created_mono;
