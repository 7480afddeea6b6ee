-- Whether some of a job's bytes may have reached a printer: set when an attempt ended without it surely printed but
-- after bytes went out (cut short, failed part-way, caught 'printing' by a crash), and for a job a restored database
-- has that the replaced one printed. A STORNO strikes what a discarded job may have put on paper only if it went out:
-- a person's reprint COPY is marked COPY from the start, so the mark cannot tell one that never went out.

-- migrate:up
ALTER TABLE print_jobs ADD COLUMN went_out INTEGER NOT NULL DEFAULT 0;
UPDATE print_jobs SET went_out = copy WHERE state != 'printed';  -- before the column, a COPY mark was the only sign

-- migrate:down
ALTER TABLE print_jobs DROP COLUMN went_out;
